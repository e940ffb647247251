/* Block Kit for the raybot sandbox: Slack's JSON in, DOM nodes out.
 *
 * Pure functions over the document: no network, no innerHTML. Every string from a message or view becomes a
 * text node, so nothing raybot (or a cluster name, or a person) sends can inject markup: "<!channel>" written as
 * "&lt;!channel&gt;" shows as the text "<!channel>", and "<script>" in plain_text is just text.
 *
 * BlockKit.renderBlocks(blocks, ctx)  -> element     messages and view bodies
 * BlockKit.renderView(view, ctx)      -> element     a modal: title, blocks, close/submit
 * BlockKit.mrkdwn(text, ctx)          -> element     Slack's mrkdwn: *b* _i_ ~s~ `code` ```pre``` <@U> <#C> ...
 * BlockKit.readState(root)            -> view.state.values, shaped as Slack sends them
 * BlockKit.validate(root)             -> {block_id: message}: what Slack itself checks before a submit
 * BlockKit.showErrors(root, errors)   -> inline errors under inputs (response_action "errors")
 *
 * Interactive elements report a person's use through ctx.onAction(action) with the `actions[0]` Slack would send
 * (type, action_id, block_id and value or selected_option): buttons, overflows and selects outside input blocks on
 * every use; inside an input block only with `dispatch_action` — a select on change, a plain_text_input or
 * number_input on Enter (the default) and/or once typing pauses (`dispatch_action_config.trigger_actions_on`).
 *
 * ctx: {users: {U…: {name, real_name}}, channels: {C…: {name}}, usergroups: {S…: {handle}},
 *       onAction(action, node), confirm(confirmObject) -> Promise<boolean>, previous: state values to keep,
 *       onSubmit(), onClose(clear)}
 */
(function (root) {
  "use strict";

  const EMOJI = {
    warning: "⚠️", white_check_mark: "✅", heavy_check_mark: "✔️", x: "❌", hourglass: "⌛",
    hourglass_flowing_sand: "⏳", no_entry: "⛔", no_entry_sign: "🚫", raised_hand: "✋", rocket: "🚀",
    information_source: "ℹ️", lock: "🔒", timer_clock: "⏲️", clipboard: "📋", eyes: "👀", tada: "🎉", fire: "🔥",
    heavy_minus_sign: "➖", heavy_plus_sign: "➕", arrow_right: "➡️", wave: "👋", thumbsup: "👍", "+1": "👍",
  };
  const META = new WeakMap(); // stateful element node -> {blockId, actionId, type, element, options}

  function h(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /* Slack encodes exactly these three in message text; one pass, so "&amp;lt;" stays the text "&lt;". */
  function decodeEntities(text) {
    return String(text).replace(/&(amp|lt|gt);/g, (_, name) => ({ amp: "&", lt: "<", gt: ">" })[name]);
  }

  function emojify(text) {
    return String(text).replace(/:([a-z0-9_+-]+):/g, (whole, name) => EMOJI[name] || whole);
  }

  function appendText(parent, raw) {
    if (raw) parent.appendChild(document.createTextNode(emojify(decodeEntities(raw))));
  }

  // --- mrkdwn ---------------------------------------------------------------------------------------------------

  const BEFORE = "(?<=^|[\\s(\\[{\"'.,;:!?/\\-])";
  const AFTER = "(?=$|[\\s)\\]}\"'.,;:!?/\\-])";
  const STYLES = [
    { re: new RegExp(BEFORE + "\\*(?=\\S)([^*\\n]*?\\S)\\*" + AFTER), tag: "b", cls: "bk-bold" },
    { re: new RegExp(BEFORE + "_(?=\\S)([^_\\n]*?\\S)_" + AFTER), tag: "i", cls: "bk-italic" },
    { re: new RegExp(BEFORE + "~(?=\\S)([^~\\n]*?\\S)~" + AFTER), tag: "s", cls: "bk-strike" },
  ];
  const CONTROL = /<([^<>\n]+)>/;
  const CODE = /`([^`\n]+)`/;

  const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December"];
  const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

  function ordinal(n) {
    const s = n % 100 >= 11 && n % 100 <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" })[n % 10] || "th";
    return n + s;
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  /* <!date^epoch^format|fallback> in the reader's time zone, as Slack shows it. */
  function formatDate(epochText, format, fallback, now) {
    const epoch = Number(epochText);
    if (!Number.isFinite(epoch) || !format) return fallback || "";
    const d = new Date(epoch * 1000);
    const today = new Date(now === undefined ? Date.now() : now);
    const dayDiff = Math.round(
      (new Date(d.getFullYear(), d.getMonth(), d.getDate()) - new Date(today.getFullYear(), today.getMonth(),
        today.getDate())) / 86400000);
    const forms = {
      date_num: `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`,
      date: `${MONTHS[d.getMonth()]} ${ordinal(d.getDate())}, ${d.getFullYear()}`,
      date_short: `${MONTHS[d.getMonth()].slice(0, 3)} ${d.getDate()}, ${d.getFullYear()}`,
      date_long: `${DAYS[d.getDay()]}, ${MONTHS[d.getMonth()]} ${ordinal(d.getDate())}, ${d.getFullYear()}`,
      time: `${pad(d.getHours())}:${pad(d.getMinutes())}`,
      time_secs: `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`,
    };
    const pretty = { 0: "today", "-1": "yesterday", 1: "tomorrow" }[dayDiff];
    for (const base of ["date", "date_short", "date_long"]) {
      forms[base + "_pretty"] = pretty ? pretty[0].toUpperCase() + pretty.slice(1) : forms[base];
    }
    const minutes = Math.round((today.getTime() - d.getTime()) / 60000);
    forms.ago = minutes >= 0 ? (minutes < 1 ? "just now" : `${minutes} minutes ago`) : `in ${-minutes} minutes`;
    return format.replace(/\{(\w+)\}/g, (whole, token) => (token in forms ? forms[token] : whole));
  }

  function nameOf(map, id, key) {
    const entry = map && map[id];
    return (entry && (entry[key] || entry.name)) || id;
  }

  /* One <...> control sequence: mention, channel, user group, broadcast, date or link. */
  function control(body, ctx) {
    const bar = body.indexOf("|");
    const target = bar >= 0 ? body.slice(0, bar) : body;
    const label = bar >= 0 ? decodeEntities(body.slice(bar + 1)) : "";
    let node;
    if (target.startsWith("@")) {
      const id = target.slice(1);
      node = h("span", "bk-mention", "@" + (label || nameOf(ctx.users, id, "name")));
      node.dataset.user = id;
    } else if (target.startsWith("#")) {
      const id = target.slice(1);
      node = h("span", "bk-channel", "#" + (label || nameOf(ctx.channels, id, "name")));
      node.dataset.channel = id;
    } else if (target.startsWith("!subteam^")) {
      const id = target.slice("!subteam^".length);
      const handle = label ? label.replace(/^@/, "") : nameOf(ctx.usergroups, id, "handle");
      node = h("span", "bk-mention bk-usergroup", "@" + handle);
      node.dataset.usergroup = id;
    } else if (target.startsWith("!date^")) {
      const parts = target.split("^");
      node = h("span", "bk-date", formatDate(parts[1], parts[2], label, ctx.now));
      node.title = label;
    } else if (["!here", "!channel", "!everyone"].includes(target)) {
      node = h("span", "bk-mention bk-broadcast", "@" + target.slice(1));
    } else if (target.startsWith("!")) {
      node = h("span", "bk-special", label || target.slice(1));
    } else {
      const url = decodeEntities(target);
      if (/^(https?:|mailto:)/i.test(url)) {
        node = h("a", "bk-link", label || url);
        node.href = url;
        node.target = "_blank";
        node.rel = "noopener noreferrer";
      } else {
        node = h("span", "bk-text", label || url);
      }
    }
    return node;
  }

  function inline(text, ctx, parent) {
    let rest = text;
    while (rest.length) {
      let best = null;
      const candidates = [["code", CODE.exec(rest)], ["control", CONTROL.exec(rest)]];
      for (const style of STYLES) candidates.push([style, style.re.exec(rest)]);
      for (const [kind, match] of candidates) {
        if (match && (!best || match.index < best.match.index)) best = { kind, match };
      }
      if (!best) {
        appendText(parent, rest);
        return;
      }
      appendText(parent, rest.slice(0, best.match.index));
      if (best.kind === "code") {
        parent.appendChild(h("code", "bk-code", decodeEntities(best.match[1])));
      } else if (best.kind === "control") {
        parent.appendChild(control(best.match[1], ctx));
      } else {
        const styled = h(best.kind.tag, best.kind.cls);
        inline(best.match[1], ctx, styled);
        parent.appendChild(styled);
      }
      rest = rest.slice(best.match.index + best.match[0].length);
    }
  }

  function mrkdwn(text, ctx) {
    ctx = ctx || {};
    const out = h("span", "bk-mrkdwn");
    const parts = String(text === undefined || text === null ? "" : text).split("```");
    for (let i = 0; i < parts.length; i++) {
      const fenced = i % 2 === 1 && i < parts.length - 1; // an unclosed fence is text
      if (fenced) {
        out.appendChild(h("pre", "bk-pre", decodeEntities(parts[i].replace(/^\n/, "").replace(/\n$/, ""))));
        continue;
      }
      let segment = i % 2 === 1 ? "```" + parts[i] : parts[i];
      if (i > 0 && i % 2 === 0) segment = segment.replace(/^\n/, "");
      if (i + 1 < parts.length - 1 && i % 2 === 0) segment = segment.replace(/\n$/, "");
      inline(segment, ctx, out);
    }
    return out;
  }

  function plain(obj) {
    const text = obj && typeof obj.text === "string" ? obj.text : "";
    return h("span", "bk-plain", obj && obj.emoji === false ? text : emojify(text));
  }

  function textObject(obj, ctx) {
    if (!obj) return h("span", "bk-plain");
    return obj.type === "mrkdwn" ? mrkdwn(obj.text, ctx) : plain(obj);
  }

  // --- elements -------------------------------------------------------------------------------------------------

  function fire(ctx, element, action, node, onDenied) {
    const go = () => ctx.onAction && ctx.onAction(action, node);
    if (!element.confirm) return go();
    const ask = ctx.confirm || confirmDialog;
    Promise.resolve(ask(element.confirm, ctx)).then((ok) => (ok ? go() : onDenied && onDenied()));
  }

  function previousEntry(ctx, blockId, actionId, type) {
    const entry = ctx.previous && ctx.previous[blockId] && ctx.previous[blockId][actionId];
    return entry && entry.type === type ? entry : null;
  }

  function sameOption(a, b) {
    return !!a && !!b && a.value === b.value;
  }

  function register(node, meta) {
    node.classList.add("bk-stateful");
    node.dataset.blockId = meta.blockId;
    node.dataset.actionId = meta.actionId;
    node.dataset.elementType = meta.type;
    META.set(node, meta);
  }

  function button(element, blockId, ctx) {
    const node = h("button", "bk-button" + (element.style ? " bk-" + element.style : ""));
    node.type = "button";
    node.appendChild(plain(element.text));
    node.dataset.actionId = element.action_id || "";
    node.addEventListener("click", () => {
      const action = { type: "button", action_id: element.action_id, block_id: blockId, text: element.text };
      if (element.value !== undefined) action.value = element.value;
      if (element.style) action.style = element.style;
      if (element.url) action.url = element.url;
      fire(ctx, element, action, node);
    });
    return node;
  }

  function selectOptions(element) {
    if (Array.isArray(element.option_groups)) {
      return element.option_groups.flatMap((group, g) =>
        (group.options || []).map((option, o) => ({ key: `g${g}.${o}`, option, group: group.label })));
    }
    return (element.options || []).map((option, o) => ({ key: `o${o}`, option }));
  }

  function staticSelect(element, blockId, ctx, dispatch) {
    const node = h("select", "bk-select");
    const entries = selectOptions(element);
    const placeholder = h("option", "bk-placeholder", element.placeholder ? element.placeholder.text : "Select an item");
    placeholder.value = "";
    node.appendChild(placeholder);
    let groupNode = null;
    let lastGroup = null;
    for (const entry of entries) {
      const option = h("option", null, entry.option.text ? entry.option.text.text : entry.option.value);
      option.value = entry.key;
      if (entry.group) {
        if (entry.group !== lastGroup) {
          groupNode = h("optgroup");
          groupNode.label = entry.group.text;
          node.appendChild(groupNode);
          lastGroup = entry.group;
        }
        groupNode.appendChild(option);
      } else {
        node.appendChild(option);
      }
    }
    const previous = previousEntry(ctx, blockId, element.action_id, "static_select");
    const chosen = previous ? previous.selected_option : element.initial_option;
    const initial = entries.find((e) => sameOption(e.option, chosen));
    node.value = initial ? initial.key : "";
    const meta = { blockId, actionId: element.action_id, type: "static_select", element, entries };
    register(node, meta);
    let current = node.value;
    node.addEventListener("change", () => {
      const entry = entries.find((e) => e.key === node.value);
      if (!dispatch || !entry) {
        current = node.value;
        return;
      }
      const action = { type: "static_select", action_id: element.action_id, block_id: blockId,
        selected_option: entry.option };
      if (element.placeholder) action.placeholder = element.placeholder;
      const before = current;
      current = node.value;
      fire(ctx, element, action, node, () => {
        node.value = before; // "deny" in the confirm dialog: nothing was chosen
        current = before;
      });
    });
    return node;
  }

  function overflow(element, blockId, ctx) {
    const wrap = h("span", "bk-overflow");
    const toggle = h("button", "bk-button bk-overflow-toggle", "⋯");
    toggle.type = "button";
    toggle.setAttribute("aria-label", "More actions");
    const menu = h("div", "bk-overflow-menu");
    menu.hidden = true;
    (element.options || []).forEach((option) => {
      const item = h("button", "bk-overflow-item");
      item.type = "button";
      item.appendChild(plain(option.text));
      item.addEventListener("click", () => {
        menu.hidden = true;
        fire(ctx, element, { type: "overflow", action_id: element.action_id, block_id: blockId,
          selected_option: option }, item);
      });
      menu.appendChild(item);
    });
    toggle.addEventListener("click", () => { menu.hidden = !menu.hidden; });
    wrap.append(toggle, menu);
    return wrap;
  }

  /* How long typing pauses before an input with on_character_entered dispatches: Slack sends one block_actions per
   * pause in typing, not one per key, and so does this page. */
  const CHARACTER_DEBOUNCE_MS = 300;

  function triggers(element) {
    const config = element.dispatch_action_config;
    const wanted = config && Array.isArray(config.trigger_actions_on) ? config.trigger_actions_on : [];
    return wanted.length ? wanted : ["on_enter_pressed"]; // Slack's default when the input block dispatches
  }

  /* An input in a block with dispatch_action: block_actions on Enter (the default) and/or as characters are entered
   * or removed (debounced), as `dispatch_action_config.trigger_actions_on` asks. The action carries the value as
   * typed (null when empty, as in the view's state). A change already sent is not sent again. */
  function dispatchTyping(node, element, blockId, ctx, type) {
    const on = triggers(element);
    let timer = null;
    let sent = node.value;
    const send = () => {
      clearTimeout(timer);
      timer = null;
      sent = node.value;
      // Sent even if the view was redrawn meanwhile (a views.update): the page decides whether it still applies.
      const action = { type, action_id: element.action_id, block_id: blockId, value: sent === "" ? null : sent };
      if (ctx.onAction) ctx.onAction(action, node);
    };
    if (on.includes("on_character_entered")) {
      node.addEventListener("input", () => {
        clearTimeout(timer);
        timer = node.value === sent ? null : setTimeout(send, CHARACTER_DEBOUNCE_MS);
      });
      node.addEventListener("blur", () => { if (timer) send(); }); // what was typed is never left unsent
    }
    if (on.includes("on_enter_pressed")) {
      node.addEventListener("keydown", (event) => {
        // In a multiline input Enter is a new line; Ctrl/⌘+Enter sends.
        if (event.key !== "Enter" || event.isComposing || (element.multiline && !(event.ctrlKey || event.metaKey))) {
          return;
        }
        event.preventDefault();
        send();
      });
    }
    node.dataset.dispatch = on.join(" ");
  }

  function textInput(element, blockId, ctx, dispatch) {
    const node = element.multiline ? h("textarea", "bk-textarea") : h("input", "bk-text-input");
    if (!element.multiline) node.type = "text";
    if (element.placeholder) node.placeholder = element.placeholder.text;
    if (element.max_length) node.maxLength = element.max_length;
    const previous = previousEntry(ctx, blockId, element.action_id, "plain_text_input");
    node.value = previous ? previous.value || "" : element.initial_value || "";
    register(node, { blockId, actionId: element.action_id, type: "plain_text_input", element });
    if (dispatch) dispatchTyping(node, element, blockId, ctx, "plain_text_input");
    return node;
  }

  function numberInput(element, blockId, ctx, dispatch) {
    const node = h("input", "bk-number-input");
    node.type = "text";
    node.inputMode = element.is_decimal_allowed ? "decimal" : "numeric";
    if (element.placeholder) node.placeholder = element.placeholder.text;
    const previous = previousEntry(ctx, blockId, element.action_id, "number_input");
    node.value = previous ? previous.value || "" : element.initial_value || "";
    register(node, { blockId, actionId: element.action_id, type: "number_input", element });
    if (dispatch) dispatchTyping(node, element, blockId, ctx, "number_input");
    return node;
  }

  let choiceGroups = 0;

  function choices(element, blockId, ctx, kind, dispatch) {
    const node = h("div", kind === "checkboxes" ? "bk-checkboxes" : "bk-radios");
    const name = "bk-choice-" + ++choiceGroups;
    const previous = previousEntry(ctx, blockId, element.action_id, kind);
    const selected = previous
      ? (kind === "checkboxes" ? previous.selected_options || [] : [previous.selected_option].filter(Boolean))
      : (kind === "checkboxes" ? element.initial_options || [] : [element.initial_option].filter(Boolean));
    const inputs = [];
    (element.options || []).forEach((option, index) => {
      const label = h("label", "bk-choice");
      const input = h("input");
      input.type = kind === "checkboxes" ? "checkbox" : "radio";
      input.name = name;
      input.value = String(index);
      input.checked = selected.some((s) => sameOption(s, option));
      const text = h("span", "bk-choice-text");
      text.appendChild(textObject(option.text, ctx));
      if (option.description) {
        const description = h("span", "bk-choice-description");
        description.appendChild(textObject(option.description, ctx));
        text.appendChild(description);
      }
      label.append(input, text);
      node.appendChild(label);
      inputs.push(input);
    });
    const meta = { blockId, actionId: element.action_id, type: kind, element, inputs };
    register(node, meta);
    if (dispatch) {
      node.addEventListener("change", () => {
        const picked = inputs.filter((i) => i.checked).map((i) => element.options[Number(i.value)]);
        const action = { type: kind, action_id: element.action_id, block_id: blockId };
        if (kind === "checkboxes") action.selected_options = picked;
        else action.selected_option = picked[0] || null;
        fire(ctx, element, action, node);
      });
    }
    return node;
  }

  function imageAlt(element) {
    // Nothing is fetched from outside: an image shows as its alt text.
    return h("span", "bk-image-alt", "[image: " + (element.alt_text || "") + "]");
  }

  /* where: "actions" and "accessory" dispatch every use; "input" only with dispatch_action. */
  function renderElement(element, blockId, ctx, where, dispatchAction) {
    const dispatch = where !== "input" || !!dispatchAction;
    switch (element && element.type) {
      case "button":
        return button(element, blockId, ctx);
      case "static_select":
        return staticSelect(element, blockId, ctx, dispatch);
      case "overflow":
        return overflow(element, blockId, ctx);
      case "plain_text_input":
        return textInput(element, blockId, ctx, dispatch);
      case "number_input":
        return numberInput(element, blockId, ctx, dispatch);
      case "checkboxes":
      case "radio_buttons":
        return choices(element, blockId, ctx, element.type, dispatch);
      case "image":
        return imageAlt(element);
      default:
        return h("span", "bk-unsupported", "[" + ((element && element.type) || "element") + " is not shown here]");
    }
  }

  // --- blocks ---------------------------------------------------------------------------------------------------

  function section(block, blockId, ctx) {
    const node = h("div", "bk-section");
    const main = h("div", "bk-section-main");
    if (block.text) {
      const text = h("div", "bk-section-text");
      text.appendChild(textObject(block.text, ctx));
      main.appendChild(text);
    }
    if (Array.isArray(block.fields)) {
      const fields = h("div", "bk-fields");
      for (const field of block.fields) {
        const cell = h("div", "bk-field");
        cell.appendChild(textObject(field, ctx));
        fields.appendChild(cell);
      }
      main.appendChild(fields);
    }
    node.appendChild(main);
    if (block.accessory) {
      const accessory = h("div", "bk-accessory");
      accessory.appendChild(renderElement(block.accessory, blockId, ctx, "accessory"));
      node.appendChild(accessory);
    }
    return node;
  }

  function inputBlock(block, blockId, ctx) {
    const node = h("div", "bk-input");
    const label = h("label", "bk-label");
    label.appendChild(plain(block.label));
    if (block.optional) label.appendChild(h("span", "bk-optional", " (optional)"));
    node.appendChild(label);
    node.appendChild(renderElement(block.element, blockId, ctx, "input", block.dispatch_action));
    if (block.hint) {
      const hint = h("div", "bk-hint");
      hint.appendChild(plain(block.hint));
      node.appendChild(hint);
    }
    const error = h("div", "bk-error");
    error.hidden = true;
    node.appendChild(error);
    return node;
  }

  function richTextOf(element) {
    if (!element) return "";
    if (typeof element.text === "string") return element.text;
    if (element.type === "user") return "@" + element.user_id;
    if (element.type === "channel") return "#" + element.channel_id;
    if (element.type === "link") return element.text || element.url || "";
    if (element.type === "emoji") return EMOJI[element.name] || ":" + element.name + ":";
    return (element.elements || []).map(richTextOf).join("");
  }

  function renderBlock(block, index, ctx) {
    const type = block && block.type;
    const blockId = (block && block.block_id) || "b" + index;
    let node;
    switch (type) {
      case "section":
        node = section(block, blockId, ctx);
        break;
      case "header":
        node = h("div", "bk-header");
        node.appendChild(plain(block.text));
        break;
      case "divider":
        node = h("hr", "bk-divider");
        break;
      case "context":
        node = h("div", "bk-context");
        for (const element of block.elements || []) {
          const cell = h("span", "bk-context-element");
          cell.appendChild(element.type === "image" ? imageAlt(element) : textObject(element, ctx));
          node.appendChild(cell);
        }
        break;
      case "actions":
        node = h("div", "bk-actions");
        for (const element of block.elements || []) node.appendChild(renderElement(element, blockId, ctx, "actions"));
        break;
      case "input":
        node = inputBlock(block, blockId, ctx);
        break;
      case "image":
        node = h("div", "bk-image");
        if (block.title) node.appendChild(plain(block.title));
        node.appendChild(imageAlt(block));
        break;
      case "rich_text":
        node = h("div", "bk-rich-text", (block.elements || []).map(richTextOf).join("\n"));
        break;
      case "markdown":
        node = h("div", "bk-markdown", block.text || "");
        break;
      default:
        node = h("div", "bk-unsupported", "[" + (type || "block") + " block is not shown here]");
    }
    node.classList.add("bk-block");
    node.dataset.blockId = blockId;
    node.dataset.blockType = type || "";
    return node;
  }

  function renderBlocks(blocks, ctx) {
    ctx = ctx || {};
    const node = h("div", "bk-blocks");
    (Array.isArray(blocks) ? blocks : []).forEach((block, index) => node.appendChild(renderBlock(block, index, ctx)));
    return node;
  }

  function renderView(view, ctx) {
    ctx = ctx || {};
    const node = h("div", "bk-modal");
    node.dataset.viewId = view.id || "";
    node.dataset.callbackId = view.callback_id || "";
    node.dataset.hash = view.hash || "";
    node.setAttribute("role", "dialog");
    const header = h("div", "bk-modal-header");
    const title = h("div", "bk-modal-title");
    title.appendChild(plain(view.title));
    const x = h("button", "bk-modal-x", "✕");
    x.type = "button";
    x.setAttribute("aria-label", "Close");
    x.addEventListener("click", () => ctx.onClose && ctx.onClose(true));
    header.append(title, x);
    const body = h("div", "bk-modal-body");
    const general = h("div", "bk-error bk-error-general");
    general.hidden = true;
    body.append(general, renderBlocks(view.blocks, ctx));
    const footer = h("div", "bk-modal-footer");
    const close = h("button", "bk-button bk-modal-close");
    close.type = "button";
    close.appendChild(plain(view.close || { type: "plain_text", text: "Cancel" }));
    close.addEventListener("click", () => ctx.onClose && ctx.onClose(false));
    footer.appendChild(close);
    if (view.submit) {
      const submit = h("button", "bk-button bk-primary bk-modal-submit");
      submit.type = "button";
      submit.appendChild(plain(view.submit));
      submit.addEventListener("click", () => ctx.onSubmit && ctx.onSubmit());
      footer.appendChild(submit);
    }
    node.append(header, body, footer);
    return node;
  }

  // --- state, checks and errors ---------------------------------------------------------------------------------

  function stateEntry(node, meta) {
    switch (meta.type) {
      case "plain_text_input":
      case "number_input":
        return { type: meta.type, value: node.value === "" ? null : node.value };
      case "static_select": {
        const entry = meta.entries.find((e) => e.key === node.value);
        return { type: meta.type, selected_option: entry ? entry.option : null };
      }
      case "checkboxes":
        return { type: meta.type,
          selected_options: meta.inputs.filter((i) => i.checked).map((i) => meta.element.options[Number(i.value)]) };
      case "radio_buttons": {
        const picked = meta.inputs.find((i) => i.checked);
        return { type: meta.type, selected_option: picked ? meta.element.options[Number(picked.value)] : null };
      }
      default:
        return null;
    }
  }

  function readState(rootNode) {
    const values = {};
    for (const node of rootNode.querySelectorAll(".bk-stateful")) {
      const meta = META.get(node);
      const entry = meta && stateEntry(node, meta);
      if (!entry || !meta.actionId) continue;
      (values[meta.blockId] = values[meta.blockId] || {})[meta.actionId] = entry;
    }
    return values;
  }

  /* What Slack checks in the client before it sends a view_submission. */
  function validate(rootNode) {
    const errors = {};
    for (const block of rootNode.querySelectorAll(".bk-input")) {
      const node = block.querySelector(".bk-stateful");
      const meta = node && META.get(node);
      if (!meta) continue;
      const entry = stateEntry(node, meta);
      const optional = block.querySelector(".bk-optional") !== null;
      const empty = !entry || entry.value === null || entry.selected_option === null ||
        (Array.isArray(entry.selected_options) && entry.selected_options.length === 0);
      const element = meta.element;
      if (empty) {
        if (!optional) errors[meta.blockId] = "Please complete this required field.";
        continue;
      }
      if (meta.type === "number_input") {
        const text = entry.value.trim();
        const number = Number(text);
        if (text === "" || !Number.isFinite(number)) errors[meta.blockId] = "Please enter a number.";
        else if (!element.is_decimal_allowed && !Number.isInteger(number)) {
          errors[meta.blockId] = "Please enter a whole number.";
        } else if (element.min_value !== undefined && number < Number(element.min_value)) {
          errors[meta.blockId] = `Please enter a number at least ${element.min_value}.`;
        } else if (element.max_value !== undefined && number > Number(element.max_value)) {
          errors[meta.blockId] = `Please enter a number at most ${element.max_value}.`;
        }
      } else if (meta.type === "plain_text_input" && element.min_length && entry.value.length < element.min_length) {
        errors[meta.blockId] = `Please enter at least ${element.min_length} characters.`;
      }
    }
    return errors;
  }

  function showErrors(rootNode, errors) {
    for (const node of rootNode.querySelectorAll(".bk-error")) {
      node.hidden = true;
      node.textContent = "";
    }
    for (const node of rootNode.querySelectorAll(".bk-has-error")) node.classList.remove("bk-has-error");
    const unplaced = [];
    for (const [blockId, message] of Object.entries(errors || {})) {
      const block = Array.from(rootNode.querySelectorAll(".bk-input")).find((b) => b.dataset.blockId === blockId);
      const target = block && block.querySelector(".bk-error");
      if (!target) {
        unplaced.push(message);
        continue;
      }
      target.textContent = message; // errors are plain text in Slack: shown as written
      target.hidden = false;
      block.classList.add("bk-has-error");
    }
    const general = rootNode.querySelector(".bk-error-general");
    if (general && unplaced.length) {
      general.textContent = unplaced.join(" · ");
      general.hidden = false;
    }
  }

  /* Slack's confirmation dialog (a button's or select's `confirm`); resolves to true when confirmed. */
  function confirmDialog(confirm, ctx) {
    return new Promise((resolve) => {
      const overlay = h("div", "bk-confirm-overlay");
      const dialog = h("div", "bk-confirm");
      dialog.setAttribute("role", "alertdialog");
      const title = h("div", "bk-confirm-title");
      title.appendChild(plain(confirm.title));
      const text = h("div", "bk-confirm-text");
      text.appendChild(textObject(confirm.text, ctx || {}));
      const buttons = h("div", "bk-confirm-buttons");
      const deny = h("button", "bk-button bk-confirm-deny");
      deny.type = "button";
      deny.appendChild(plain(confirm.deny || { type: "plain_text", text: "Cancel" }));
      const ok = h("button", "bk-button bk-confirm-ok " + (confirm.style === "danger" ? "bk-danger" : "bk-primary"));
      ok.type = "button";
      ok.appendChild(plain(confirm.confirm || { type: "plain_text", text: "Yes" }));
      const done = (answer) => {
        overlay.remove();
        resolve(answer);
      };
      deny.addEventListener("click", () => done(false));
      ok.addEventListener("click", () => done(true));
      buttons.append(deny, ok);
      dialog.append(title, text, buttons);
      overlay.appendChild(dialog);
      document.body.appendChild(overlay);
    });
  }

  root.BlockKit = {
    renderBlocks, renderBlock, renderView, mrkdwn, textObject, readState, validate, showErrors, confirmDialog,
    formatDate, decodeEntities,
  };
})(window);

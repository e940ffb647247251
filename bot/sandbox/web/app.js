/* The raybot sandbox page: a Slack channel for one person at a time, and the cloud API beside it.
 *
 * Everything it shows comes from the sandbox server (/api/state), refreshed when the event stream (/api/events)
 * says the Slack or EMR emulator recorded something. Everything it does goes to the server (/api/send, /api/action,
 * /api/submit, /api/close, /api/shortcut, /api/alert), which turns it into the payload Slack would send raybot.
 * Rendering of Block Kit is blockkit.js; nothing here sets innerHTML.
 */
(function () {
  "use strict";

  const S = {
    world: null,
    user: null,
    channel: null,
    thread: null, // ts of the thread open on the right
    state: null,
    dismissed: new Set(), // local notices dismissed; raybot's ephemerals are dismissed on the server (kept on reload)
    local: [], // notices from "Slackbot" (a command that failed to reach raybot)
    clockOffset: 0, // the server's clock minus this page's, in seconds: how long a cloud call has waited
    ticker: null,
    views: new Map(), // view id -> {hash, node}: open views keep what was typed, as in Slack
    submitting: new Set(), // view ids whose submission is on its way: what is typed in them is no longer sent
    shownView: "",
    keys: { channel: "", thread: "", cloud: "" },
    request: 0,
    timer: null,
  };
  const $ = (id) => document.getElementById(id);

  function h(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  async function api(path, body, method) {
    const options = body === undefined && !method ? {} : {
      method: method || "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    };
    const response = await fetch(path, options);
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = { ok: false, error: `HTTP ${response.status}` };
    }
    return data;
  }

  function lookup() {
    const users = {};
    for (const person of S.world.identities) users[person.user_id] = { name: person.real_name };
    users[S.world.bot.id] = { name: S.world.bot.name };
    const channels = {};
    for (const channel of S.world.channels) channels[channel.channel_id] = { name: channel.name };
    return { users, channels, usergroups: S.world.usergroups };
  }

  function ctx(extra) {
    return Object.assign(lookup(), { confirm: BlockKit.confirmDialog }, extra || {});
  }

  function person(userId) {
    if (userId === S.world.bot.id) return { name: "raybot", bot: true };
    const found = S.world.identities.find((p) => p.user_id === userId);
    return found ? { name: found.real_name } : { name: userId || "someone" };
  }

  function channelName(channelId) {
    const found = S.world.channels.find((c) => c.channel_id === channelId);
    return found ? found.name : channelId;
  }

  function clock(ts) {
    const date = new Date(Number(ts) * 1000);
    return `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}`;
  }

  // --- the refresh loop -----------------------------------------------------------------------------------------

  function schedule() {
    if (S.timer) return;
    S.timer = setTimeout(() => {
      S.timer = null;
      refresh();
    }, 30);
  }

  async function refresh() {
    const request = ++S.request;
    const query = new URLSearchParams({ user: S.user, channel: S.channel });
    const state = await api("/api/state?" + query.toString());
    if (request !== S.request) return; // a newer answer is on its way
    if (typeof state.now === "number") S.clockOffset = state.now - Date.now() / 1000;
    S.state = state;
    render();
  }

  function render() {
    renderChannel();
    renderThread();
    renderModal();
    renderCloud();
  }

  function connect() {
    const stream = new EventSource("/api/events");
    stream.onmessage = () => {
      $("connection").textContent = "live";
      $("connection").className = "connection live";
      schedule();
    };
    stream.onerror = () => {
      $("connection").textContent = "reconnecting…";
      $("connection").className = "connection down";
    };
  }

  // --- messages -------------------------------------------------------------------------------------------------

  function isTopLevel(message) {
    return !message.thread_ts || message.thread_ts === message.ts || message.subtype === "thread_broadcast";
  }

  function visibleEphemerals(threadTs) {
    const server = (S.state.ephemerals || []).filter((e) => !S.dismissed.has(e.id));
    const local = S.local.filter((e) => e.channel === S.channel && e.user === S.user && !S.dismissed.has(e.id));
    return server.concat(local).filter((e) => (threadTs ? e.thread_ts === threadTs : !e.thread_ts));
  }

  function byTs(a, b) {
    return Number(a.ts) - Number(b.ts);
  }

  function messageNode(message, options) {
    const ephemeral = !!options.ephemeral;
    const author = ephemeral && options.slackbot ? { name: "Slackbot", bot: true }
      : !ephemeral && message.bot_id && message.user !== S.world.bot.id ? { name: message.username || "an app", bot: true }
        : person(ephemeral ? S.world.bot.id : message.user);
    const node = h("div", "message" + (author.bot ? " from-bot" : "") + (ephemeral ? " ephemeral" : ""));
    node.dataset.ts = message.ts || "";
    const avatar = h("div", "avatar", author.name.slice(0, 1).toUpperCase());
    avatar.dataset.who = author.bot ? "bot" : message.user || "";
    const content = h("div", "message-content");
    const meta = h("div", "message-meta");
    meta.appendChild(h("span", "author", author.name));
    if (author.bot) meta.appendChild(h("span", "app-badge", "APP"));
    meta.appendChild(h("span", "time", clock(message.ts)));
    if (message.edited) meta.appendChild(h("span", "edited", "(edited)"));
    content.appendChild(meta);
    if (ephemeral) {
      const note = h("div", "ephemeral-note");
      note.appendChild(h("span", null, "👁 Only visible to you"));
      const dismiss = h("button", "link dismiss", "Dismiss");
      dismiss.type = "button";
      dismiss.addEventListener("click", async () => {
        S.dismissed.add(message.id); // gone at once; the server remembers raybot's ephemerals across reloads
        S.keys.channel = S.keys.thread = "";
        render();
        if (!message.slackbot) {
          const answer = await api("/api/dismiss", { user: S.user, id: message.id });
          if (!answer.ok) notice(answer.error);
        }
      });
      note.appendChild(dismiss);
      content.appendChild(note);
    }
    const body = h("div", "message-body");
    const actionCtx = ctx({
      onAction: (action) => clicked(message, action, body, ephemeral),
    });
    if (Array.isArray(message.blocks) && message.blocks.length) {
      body.appendChild(BlockKit.renderBlocks(message.blocks, actionCtx));
    } else {
      body.appendChild(BlockKit.mrkdwn(message.text || "", actionCtx));
    }
    content.appendChild(body);
    const hidden = options.replies && !ephemeral ? visibleEphemerals(message.ts).length : 0;
    if (options.replies && (message.reply_count || hidden)) {
      const count = message.reply_count || 0;
      let label = count ? `${count} ${count === 1 ? "reply" : "replies"}` : "";
      if (hidden) label += (label ? " · " : "") + `${hidden} only visible to you`;
      const link = h("button", "link replies-link", label);
      link.type = "button";
      link.addEventListener("click", () => openThread(message.ts));
      content.appendChild(link);
    }
    node.append(avatar, content);
    if (!ephemeral) node.appendChild(hoverActions(message, options));
    return node;
  }

  function hoverActions(message, options) {
    const bar = h("div", "message-actions");
    if (options.replies) {
      const reply = h("button", "icon-button reply-button", "💬");
      reply.type = "button";
      reply.title = "Reply in thread";
      reply.addEventListener("click", () => openThread(message.thread_ts || message.ts));
      bar.appendChild(reply);
    }
    const more = h("button", "icon-button more-button", "⋯");
    more.type = "button";
    more.title = "More actions";
    const menu = h("div", "menu");
    menu.hidden = true;
    const shortcut = h("button", "menu-item shortcut-item", S.world.shortcut);
    shortcut.type = "button";
    shortcut.appendChild(h("span", "menu-hint", "raybot"));
    shortcut.addEventListener("click", async () => {
      menu.hidden = true;
      const answer = await api("/api/shortcut", { user: S.user, channel: S.channel, message_ts: message.ts });
      if (!answer.ok) notice(answer.error);
    });
    menu.appendChild(shortcut);
    more.addEventListener("click", () => { menu.hidden = !menu.hidden; });
    bar.append(more, menu);
    return bar;
  }

  async function clicked(message, action, body, ephemeral) {
    const answer = await api("/api/action", {
      user: S.user,
      channel: S.channel,
      message_ts: message.message_ts || message.ts,
      is_ephemeral: ephemeral,
      action,
      state_values: BlockKit.readState(body),
    });
    if (!answer.ok) notice(answer.error);
  }

  function notice(text) {
    const ts = (Date.now() / 1000).toFixed(6);
    S.local.push({ id: "local" + ts, ts, channel: S.channel, user: S.user, thread_ts: null, slackbot: true,
      text: text || "something went wrong" });
    S.keys.channel = "";
    render();
  }

  function keepScroll(container, fill) {
    const atBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 40;
    fill();
    if (atBottom) container.scrollTop = container.scrollHeight;
  }

  function renderChannel() {
    const messages = S.state.messages || [];
    const items = messages.filter(isTopLevel).map((m) => ({ m, ephemeral: false }))
      .concat(visibleEphemerals(null).map((e) => ({ m: e, ephemeral: true })))
      .sort((a, b) => byTs(a.m, b.m));
    const threaded = (S.state.ephemerals || []).map((e) => e.id).concat(Array.from(S.dismissed));
    const key = JSON.stringify([S.user, S.channel, items, threaded]);
    if (key === S.keys.channel) return;
    S.keys.channel = key;
    const list = $("messages");
    keepScroll(list, () => {
      list.replaceChildren();
      if (!items.length) {
        list.appendChild(h("div", "empty",
          `This is the very beginning of #${channelName(S.channel)}. Type /ray help below to start.`));
      }
      for (const item of items) {
        list.appendChild(messageNode(item.m, { ephemeral: item.ephemeral, replies: true, slackbot: item.m.slackbot }));
      }
    });
  }

  function openThread(ts) {
    S.thread = ts;
    S.keys.thread = "";
    renderThread();
    $("thread-composer").focus();
  }

  function renderThread() {
    const pane = $("thread");
    if (!S.thread) {
      pane.hidden = true;
      S.keys.thread = "";
      return;
    }
    const messages = S.state.messages || [];
    const parent = messages.find((m) => m.ts === S.thread);
    const replies = messages.filter((m) => m.thread_ts === S.thread && m.ts !== S.thread)
      .map((m) => ({ m, ephemeral: false }))
      .concat(visibleEphemerals(S.thread).map((e) => ({ m: e, ephemeral: true })))
      .sort((a, b) => byTs(a.m, b.m));
    const key = JSON.stringify([S.user, parent, replies]);
    if (key === S.keys.thread) return;
    S.keys.thread = key;
    pane.hidden = false;
    $("thread-channel").textContent = "#" + channelName(S.channel);
    const list = $("thread-messages");
    keepScroll(list, () => {
      list.replaceChildren();
      if (parent) list.appendChild(messageNode(parent, { replies: false }));
      const count = replies.filter((r) => !r.ephemeral).length;
      list.appendChild(h("div", "thread-divider", `${count} ${count === 1 ? "reply" : "replies"}`));
      for (const item of replies) list.appendChild(messageNode(item.m, { ephemeral: item.ephemeral, replies: false }));
    });
  }

  // --- modals ---------------------------------------------------------------------------------------------------

  function renderModal() {
    const layer = $("modal-layer");
    const modal = S.state.modal;
    if (!modal || !modal.stack || !modal.stack.length) {
      layer.hidden = true;
      layer.replaceChildren();
      S.views.clear();
      S.shownView = "";
      return;
    }
    const view = modal.stack[modal.stack.length - 1];
    const key = `${view.id}:${view.hash}:${modal.stack.length}`;
    if (key === S.shownView) return;
    S.shownView = key;
    for (const id of Array.from(S.views.keys())) {
      if (!modal.stack.some((v) => v.id === id)) S.views.delete(id);
    }
    const cached = S.views.get(view.id);
    const focus = cached ? focusIn(cached.node) : null;
    let node;
    if (cached && cached.hash === view.hash) {
      node = cached.node;
    } else {
      // views.update keeps what the person typed in inputs whose block_id and action_id are unchanged.
      const previous = cached ? BlockKit.readState(cached.node) : null;
      node = BlockKit.renderView(view, ctx({
        previous,
        onSubmit: () => submit(view, node),
        onClose: (clear) => closeView(view, clear),
        onAction: (action) => viewAction(view, action, node),
      }));
      S.views.set(view.id, { hash: view.hash, node });
    }
    node.dataset.depth = String(modal.stack.length);
    const overlay = h("div", "modal-overlay");
    overlay.appendChild(node);
    layer.replaceChildren(overlay);
    layer.hidden = false;
    if (focus) refocus(node, focus);
  }

  function statefulIn(rootNode, blockId, actionId) {
    return Array.from(rootNode.querySelectorAll(".bk-stateful"))
      .find((n) => n.dataset.blockId === blockId && n.dataset.actionId === actionId) || null;
  }

  /* Where the person is typing in a view, so that a views.update does not take the input from under their fingers
   * (Slack keeps the focus and the caret in an input whose block_id and action_id stay). */
  function focusIn(rootNode) {
    const active = document.activeElement;
    if (!active || !rootNode.contains(active) || !active.classList.contains("bk-stateful")) return null;
    const caret = typeof active.selectionStart === "number"
      ? { start: active.selectionStart, end: active.selectionEnd } : null;
    return { blockId: active.dataset.blockId, actionId: active.dataset.actionId, caret };
  }

  function refocus(rootNode, focus) {
    const again = statefulIn(rootNode, focus.blockId, focus.actionId);
    if (!again || document.activeElement === again) return;
    again.focus();
    if (focus.caret && typeof again.setSelectionRange === "function") {
      again.setSelectionRange(focus.caret.start, focus.caret.end);
    }
  }

  async function submit(view, node) {
    const errors = BlockKit.validate(node);
    BlockKit.showErrors(node, errors);
    if (Object.keys(errors).length) return;
    const button = node.querySelector(".bk-modal-submit");
    if (button) button.disabled = true;
    node.classList.add("busy");
    S.submitting.add(view.id);
    try {
      const answer = await api("/api/submit", { user: S.user, view_id: view.id, values: BlockKit.readState(node) });
      if (!answer.ok) {
        BlockKit.showErrors(node, { "": answer.error || "raybot did not answer" });
        return;
      }
      if (answer.response_action === "errors") {
        BlockKit.showErrors(node, answer.errors);
        return;
      }
      S.request++; // a refresh already on its way may predate this answer
      S.state.modal = answer.modal;
      renderModal();
      schedule();
    } finally {
      S.submitting.delete(view.id);
      if (button) button.disabled = false;
      node.classList.remove("busy");
    }
  }

  async function closeView(view, clear) {
    // clear_on_close: the close button closes the whole stack, as the ✕ does.
    const answer = await api("/api/close", { user: S.user, view_id: view.id, clear: clear || !!view.clear_on_close });
    S.request++;
    S.state.modal = answer.modal;
    renderModal();
    schedule();
  }

  const TYPED = ["plain_text_input", "number_input"];

  async function viewAction(view, action, node) {
    if (TYPED.includes(action.type)) {
      // What is typed is sent after a pause, by when raybot may have redrawn the view (views.update: the input is a
      // new node), or it may be submitted or gone. It goes with the view as shown now, or not at all once the view
      // no longer has that input (a late keystroke never turns a submitted modal back into the form).
      const live = S.views.get(view.id);
      const input = live && !S.submitting.has(view.id) ? statefulIn(live.node, action.block_id, action.action_id) : null;
      if (!input) return;
      node = live.node;
      action = Object.assign({}, action, { value: input.value === "" ? null : input.value });
    }
    const answer = await api("/api/action", {
      user: S.user, view_id: view.id, action, state_values: BlockKit.readState(node),
    });
    if (!answer.ok) BlockKit.showErrors(node, { "": answer.error });
  }

  // --- the cloud panel ------------------------------------------------------------------------------------------

  const WAITING_AFTER_SECONDS = 1; // a call unanswered for longer than this says "waiting…" and for how long

  function waited(receivedAt) {
    return Math.max(0, Date.now() / 1000 + S.clockOffset - receivedAt);
  }

  function showWait(node) {
    const seconds = waited(Number(node.dataset.receivedAt));
    if (seconds < WAITING_AFTER_SECONDS) {
      node.textContent = "…";
      node.className = "emr-status pending";
    } else {
      node.textContent = `waiting… ${Math.floor(seconds)} s`;
      node.className = "emr-status waiting";
    }
  }

  function tick() {
    const pending = document.querySelectorAll("#emr-calls .emr-status[data-received-at]");
    for (const node of pending) showWait(node);
    if (!pending.length && S.ticker) {
      clearInterval(S.ticker);
      S.ticker = null;
    }
  }

  function renderCloud() {
    const emr = S.state.emr || { calls: [], faults: [] };
    const key = JSON.stringify(emr);
    if (key === S.keys.cloud) return;
    S.keys.cloud = key;
    const settle = emr.settleSeconds || 0;
    $("settle-note").textContent = settle > 0
      ? `A cluster takes ${settle} s to reach a new shape (start, stop, resize); raybot follows it until it settles.`
      : "Clusters change at once.";
    $("skip").textContent = `Skip ahead ${emr.skipSeconds || 60} s`;
    $("skip").disabled = !(settle > 0);
    const faults = $("faults");
    faults.replaceChildren();
    if (!emr.faults.length) faults.appendChild(h("li", "muted", "No fault: the cloud answers normally."));
    for (const fault of emr.faults) {
      faults.appendChild(h("li", "fault", `${fault.kind} · ${fault.action || "every action"}`));
    }
    const list = $("emr-calls");
    list.replaceChildren();
    if (!emr.calls.length) list.appendChild(h("li", "muted", "Nothing has reached the cloud API yet."));
    for (const call of emr.calls.slice().reverse()) {
      const item = h("li", "emr-call");
      item.dataset.action = call.action;
      item.dataset.status = String(call.status);
      const line = h("div", "emr-line");
      line.appendChild(h("span", "emr-action", call.action || "?"));
      const ok = call.status >= 200 && call.status < 300;
      const status = h("span", "emr-status " + (ok ? "ok" : "failed"), String(call.status));
      if (call.status === 0) {
        status.dataset.receivedAt = String(call.receivedAt);
        showWait(status);
      }
      line.appendChild(status);
      if (call.code) line.appendChild(h("span", "emr-code", call.code));
      if (call.status === 0 && call.clientGone) line.appendChild(h("span", "emr-gone", "raybot gave up waiting"));
      item.appendChild(line);
      item.appendChild(h("div", "emr-request-id", "requestId " + call.requestId));
      const details = h("details", "emr-details");
      const summary = h("summary", null, `${call.method} ${call.path}`);
      summary.title = `${call.method} ${call.path}`; // the whole path, however long; the line itself is cut short
      details.appendChild(summary);
      if (call.body !== null && call.body !== undefined) {
        details.appendChild(h("pre", "emr-body", JSON.stringify(call.body, null, 2)));
      } else {
        details.appendChild(h("div", "muted", "no body"));
      }
      item.appendChild(details);
      list.appendChild(item);
    }
    if (emr.calls.some((call) => call.status === 0) && !S.ticker) S.ticker = setInterval(tick, 1000);
  }

  // --- who and where --------------------------------------------------------------------------------------------

  function choose(userKey, channelId) {
    const identity = S.world.identities.find((p) => p.key === userKey) || S.world.identities[0];
    S.user = identity.user_id;
    S.channel = channelId || S.channel || S.world.channels[0].channel_id;
    $("identity").value = identity.key;
    $("identity-title").textContent = identity.title;
    for (const link of document.querySelectorAll(".channel-link")) {
      link.classList.toggle("active", link.dataset.channel === S.channel);
    }
    const channel = S.world.channels.find((c) => c.channel_id === S.channel);
    $("channel-name").textContent = "# " + (channel ? channel.name : S.channel);
    $("channel-topic").textContent = channel ? channel.topic : "";
    $("composer").placeholder = `Message #${channel ? channel.name : S.channel} — try /ray help or @raybot list`;
    history.replaceState(null, "", `#as=${identity.key}&in=${S.channel}`);
    S.keys.channel = S.keys.thread = "";
    S.shownView = "";
    refresh();
  }

  async function send(textarea, threadTs) {
    const text = textarea.value.trim();
    if (!text) return;
    textarea.value = "";
    const answer = await api("/api/send", { user: S.user, channel: S.channel, text, thread_ts: threadTs || null });
    if (!answer.ok) notice(answer.error);
  }

  function composer(textarea, threadTs) {
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        send(textarea, threadTs());
      }
    });
  }

  async function start() {
    S.world = await api("/api/world");
    const select = $("identity");
    for (const identity of S.world.identities) {
      const option = h("option", null, identity.real_name);
      option.value = identity.key;
      select.appendChild(option);
    }
    select.addEventListener("change", () => choose(select.value));
    const channels = $("channels");
    for (const channel of S.world.channels) {
      const link = h("button", "channel-link", "# " + channel.name);
      link.type = "button";
      link.dataset.channel = channel.channel_id;
      link.addEventListener("click", () => {
        S.thread = null;
        choose($("identity").value, channel.channel_id);
      });
      channels.appendChild(link);
    }
    composer($("composer"), () => null);
    composer($("thread-composer"), () => S.thread);
    $("send").addEventListener("click", () => send($("composer"), null));
    $("thread-send").addEventListener("click", () => send($("thread-composer"), S.thread));
    $("thread-close").addEventListener("click", () => {
      S.thread = null;
      renderThread();
    });
    $("fault-inject").addEventListener("click", async () => {
      await api("/api/faults", { kind: $("fault-kind").value, action: $("fault-action").value || null });
      schedule();
    });
    $("fault-clear").addEventListener("click", async () => {
      await api("/api/faults", {}, "DELETE");
      schedule();
    });
    $("reset").addEventListener("click", async () => {
      await api("/api/reset", {});
      schedule();
    });
    $("shortcut-name").textContent = S.world.shortcut;
    if (S.world.alert) {
      $("post-alert").textContent = `Post an alert about ${S.world.alert.alias} · ${S.world.alert.group}`;
      $("post-alert").addEventListener("click", async () => {
        const answer = await api("/api/alert", { channel: S.channel });
        if (!answer.ok) notice(answer.error);
      });
    } else {
      $("alert-help").hidden = true;
    }
    $("skip").addEventListener("click", async () => {
      const answer = await api("/api/skip", { seconds: (S.state && S.state.emr && S.state.emr.skipSeconds) || 60 });
      if (!answer.ok) notice(answer.error);
      schedule();
    });
    for (const action of S.world.actions) {
      const option = h("option", null, action);
      option.value = action;
      $("fault-action").appendChild(option);
    }
    for (const kind of S.world.faults) {
      const option = h("option", null, kind);
      option.value = kind;
      $("fault-kind").appendChild(option);
    }
    document.addEventListener("click", (event) => {
      for (const menu of document.querySelectorAll(".menu:not([hidden]), .bk-overflow-menu:not([hidden])")) {
        if (!menu.parentElement.contains(event.target)) menu.hidden = true;
      }
    });
    const fromAddress = () => {
      const params = new URLSearchParams(location.hash.slice(1));
      if (params.get("in") !== S.channel) S.thread = null;
      choose(params.get("as") || "oncall", params.get("in") || S.world.channels[0].channel_id);
    };
    window.addEventListener("hashchange", fromAddress);
    fromAddress();
    connect();
    document.body.dataset.ready = "true";
  }

  start();
})();

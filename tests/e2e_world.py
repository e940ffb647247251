"""The world of the end-to-end tests: who is who, which channel grants what, which clusters exist."""

from __future__ import annotations

import json
from pathlib import Path

from bot.sandbox.emr_server import EmrEmulator
from bot.sandbox.slack_server import SlackEmulator
from tests.harness import AK_ID, AK_SECRET, APP_TOKEN, BOT_TOKEN

REPO = Path(__file__).resolve().parents[1]
SEED = json.loads((REPO / "bot" / "sandbox" / "seed_clusters.json").read_text())
# A cluster with no worker group at all, for the editor's 0-group case.
SEED.append(
    {
        **{k: v for k, v in SEED[3].items() if k != "workerSpec"},
        "clusterId": "ray-empty00000000000",
        "name": "empty",
        "workerSpec": [],
    }
)
WORKSPACE = "w-d2d82aa09155"
PROD = "ray-uiulpgow9xljimm1"

ONCALL_CHANNEL = "C0ONCALL01"
PLATFORM_CHANNEL = "C0PLATFORM"
UNBOUND_CHANNEL = "C0RANDOM99"
ONCALL_USER = "U0ONCALL1"  # member of S0ONCALL
OUTSIDER = "U0OUTSIDE"  # in the on-call channel, not in the group
LEAD = "U0LEAD"  # named directly in the binding
ADMIN = "U0ADMIN"
ONCALL_GROUP = "S0ONCALL"
EDITOR = "U0EDITOR1"  # member of S0EDITORS: may edit prod and fleet in the on-call channel
EDITORS = "S0EDITORS"

CONFIG = f"""
region: cn-hangzhou
clusters:
  prod:
    workspace: {WORKSPACE}
    cluster: {PROD}
  train-gpu:
    workspace: {WORKSPACE}
    cluster: ray-k3v8q2m7t5hzxa04
  fleet:
    workspace: {WORKSPACE}
    cluster: ray-9w2n4b6c8d0fgh1j
  ghost:
    workspace: {WORKSPACE}
    cluster: ray-doesnotexist0000
  empty:
    workspace: {WORKSPACE}
    cluster: ray-empty00000000000
  staging:
    workspace: {WORKSPACE}
    cluster: ray-p5r7s9u1w3y5a7c9
roles:
  viewer: {{actions: [list, show, history]}}
  oncall:
    actions: [list, show, history, resize, autoscale, undo]
    limits: {{max_replica: 40, max_step: 20}}
    approval: {{above_replica: 20}}
  lead: {{actions: [approve, list, show, history]}}
  editor: {{actions: [edit, list, show], limits: {{max_replica: 40}}}}
  admin: {{actions: ["*"]}}
channels:
  {ONCALL_CHANNEL}:
    - role: oncall
      clusters: ["prod*", "fleet"]
      usergroups: [{ONCALL_GROUP}]
      users: [{LEAD}]
    - role: viewer
      clusters: ["*"]
    - role: lead
      users: [{LEAD}]
    - role: editor
      clusters: ["prod", "fleet", "empty"]
      usergroups: [{EDITORS}]
  {PLATFORM_CHANNEL}:
    - role: admin
      clusters: ["*"]
      users: [{ADMIN}]
"""


def emr_emulator() -> EmrEmulator:
    return EmrEmulator(access_keys={AK_ID: AK_SECRET}, clusters=SEED)


def slack_emulator() -> SlackEmulator:
    return SlackEmulator(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        usergroups={ONCALL_GROUP: [ONCALL_USER, "U0OTHER"], EDITORS: [EDITOR]},
    )

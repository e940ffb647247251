"""Environment → Settings: the runtime contract (the variables the README lists), read in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class SettingsError(ValueError):
    """A missing or malformed environment variable; the message names it and says what to do."""


DEFAULT_SLACK_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class Settings:
    bot_token: str = field(repr=False)
    app_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)
    config_path: str = "raybot.yaml"
    database: str = "raybot.db"
    http_host: str = "0.0.0.0"
    http_port: int = 3000
    slack_api_url: str = DEFAULT_SLACK_API_URL
    emr_endpoint: str | None = None
    sts_endpoint: str | None = None  # overrides the config's sts_endpoint and the regional default
    emr_deadline_seconds: float = 10.0
    lock_wait_seconds: float = 5.0
    lock_ttl_seconds: float = 15.0
    database_pool_size: int = 5
    usergroup_cache_seconds: float = 60.0
    shutdown_seconds: float = 25.0
    follow_seconds: float = 900.0

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the environment; raise SettingsError naming the first variable that is missing or wrong."""
    env = os.environ if env is None else env
    bot_token = _get(env, "SLACK_BOT_TOKEN")
    if bot_token is None:
        raise SettingsError(
            "SLACK_BOT_TOKEN is not set: set it to the app's Bot User OAuth Token (xoxb-…) from "
            "api.slack.com/apps → OAuth & Permissions"
        )
    if not bot_token.startswith("xoxb-"):
        raise SettingsError("SLACK_BOT_TOKEN must be a bot token starting with xoxb- (not a user or app token)")
    app_token = _get(env, "SLACK_APP_TOKEN")
    if app_token is not None and not app_token.startswith("xapp-"):
        raise SettingsError(
            "SLACK_APP_TOKEN must be an app-level token starting with xapp- (Basic Information → App-Level Tokens)"
        )
    signing_secret = _get(env, "SLACK_SIGNING_SECRET")
    if app_token is None and signing_secret is None:
        raise SettingsError(
            "neither SLACK_APP_TOKEN nor SLACK_SIGNING_SECRET is set: set SLACK_APP_TOKEN (xapp-…) for Socket Mode, "
            "or SLACK_SIGNING_SECRET (Basic Information → Signing Secret) for HTTP mode"
        )
    port_text = _get(env, "RAYBOT_HTTP_PORT") or "3000"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SettingsError(f"RAYBOT_HTTP_PORT must be a port number from 0 to 65535, not {port_text!r}")
    deadline_text = _get(env, "RAYBOT_EMR_DEADLINE_SECONDS") or "10"
    try:
        deadline = float(deadline_text)
    except ValueError:
        deadline = -1.0
    if not 0 < deadline <= 300:
        raise SettingsError(
            f"RAYBOT_EMR_DEADLINE_SECONDS must be a number of seconds from 0 to 300, not {deadline_text!r}"
        )
    lock_wait = _seconds(env, "RAYBOT_LOCK_WAIT_SECONDS", "5", 60)
    # A dead holder keeps a cluster locked up to this long (a restart on the same host frees it at once).
    lock_ttl = _seconds(env, "RAYBOT_LOCK_TTL_SECONDS", "15", 300)
    pool_text = _get(env, "RAYBOT_DATABASE_POOL_SIZE") or "5"
    if not (pool_text.isascii() and pool_text.isdigit() and 1 <= int(pool_text) <= 50):
        raise SettingsError(
            f"RAYBOT_DATABASE_POOL_SIZE must be a whole number of connections from 1 to 50, not {pool_text!r}"
        )
    usergroup_cache = _seconds(env, "RAYBOT_USERGROUP_CACHE_SECONDS", "60", 3600, zero_ok=True)
    shutdown = _seconds(env, "RAYBOT_SHUTDOWN_SECONDS", "25", 600)
    follow = _seconds(env, "RAYBOT_FOLLOW_SECONDS", "900", 86400)
    api_url = _get(env, "RAYBOT_SLACK_API_URL") or DEFAULT_SLACK_API_URL
    if not api_url.startswith(("http://", "https://")):
        raise SettingsError(
            f"RAYBOT_SLACK_API_URL must be an http(s) URL such as {DEFAULT_SLACK_API_URL}, not {api_url!r}"
        )
    if not api_url.endswith("/"):
        api_url += "/"  # slack_sdk joins method names onto the base URL
    return Settings(
        bot_token=bot_token,
        app_token=app_token,
        signing_secret=signing_secret,
        config_path=_get(env, "RAYBOT_CONFIG") or "raybot.yaml",
        database=_get(env, "RAYBOT_DATABASE") or "raybot.db",
        http_host=_get(env, "RAYBOT_HTTP_HOST") or "0.0.0.0",
        http_port=port,
        slack_api_url=api_url,
        emr_endpoint=_get(env, "RAYBOT_EMR_ENDPOINT"),
        sts_endpoint=_get(env, "RAYBOT_STS_ENDPOINT"),
        emr_deadline_seconds=deadline,
        lock_wait_seconds=lock_wait,
        lock_ttl_seconds=lock_ttl,
        database_pool_size=int(pool_text),
        usergroup_cache_seconds=usergroup_cache,
        shutdown_seconds=shutdown,
        follow_seconds=follow,
    )


def _seconds(env: Mapping[str, str], name: str, default: str, most: float, *, zero_ok: bool = False) -> float:
    text = _get(env, name) or default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 <= value if zero_ok else 0 < value) or value > most:
        low = "from 0" if zero_ok else "above 0"
        raise SettingsError(f"{name} must be a number of seconds {low} and at most {most:g}, not {text!r}")
    return value

"""End-to-end plumbing: a real `raybot serve` process, and requests signed the way Slack signs them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from slack_sdk.signature import SignatureVerifier

REPO = Path(__file__).resolve().parents[1]
SIGNING_SECRET = "e2e-signing-secret-7f3a"
BOT_TOKEN = "xoxb-e2e-bot-token"
APP_TOKEN = "xapp-e2e-app-token"
AK_ID = "e2e-ak-id"
AK_SECRET = "e2e-ak-secret-9d1c"

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a raybot process: no proxies, no cloud metadata lookups, loopback only."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PROXY_VARS and not k.startswith(("SLACK_", "RAYBOT_", "ALIBABA_"))
    }
    env.update(
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        ALIBABA_CLOUD_ACCESS_KEY_ID=AK_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=AK_SECRET,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class RaybotProcess:
    """A running `raybot serve`; `url` is its base URL in HTTP mode.

    Its output is read on a thread as it comes (into `output`), so a chatty process never blocks on a full pipe.
    """

    proc: subprocess.Popen
    url: str | None
    output: list[str] = field(default_factory=list)
    probe_url: str | None = None  # Socket Mode: the probes listener (/healthz, /readyz, /metrics)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _reader: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, name=f"raybot-{self.proc.pid}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.output.append(line)
                self._changed.notify_all()
            with _OUTPUT_SEEN:  # module-level waits across several processes (wait_for_output below)
                _OUTPUT_SEEN.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_output(self, text: str | tuple[str, ...], timeout: float = 10.0, *, count: int = 1) -> str:
        """Block until `count` lines of output contain `text` (or one of several); return the count-th of them.
        TimeoutError after `timeout` s or when the process ended first. From async code: `asyncio.to_thread`."""
        texts = (text,) if isinstance(text, str) else text
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.output if any(t in line for t in texts)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self._reader is not None and not self._reader.is_alive()):
                    seen = "".join(self.output)
                    raise TimeoutError(f"raybot did not print {text!r} ({len(found)} of {count} lines):\n{seen}")
                self._changed.wait(left)

    def freeze(self) -> None:
        """SIGSTOP, returning once the process is stopped: what reaches its sockets now waits in the kernel."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        os.waitpid(self.proc.pid, os.WUNTRACED)  # the child's stop is reported to its parent, this process

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the process ends at once, its sockets closed by the kernel, nothing of it cleaned up."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        reader = self._reader
        if reader is not None:
            reader.join(timeout=10)
        if self.proc.stdout is not None and not (reader is not None and reader.is_alive()):
            self.proc.stdout.close()
        with self._changed:
            return "".join(self.output)


_OUTPUT_SEEN = threading.Condition()  # notified by every output line of a followed process


def output_marks(processes: list[RaybotProcess]) -> list[int]:
    """How many lines each of `processes` has printed so far: `wait_for_output(..., after=)` looks past them."""
    with _OUTPUT_SEEN:
        return [len(process.output) for process in processes]


def wait_for_output(
    processes: list[RaybotProcess], text: str, timeout: float = 10.0, *, after: list[int] | None = None
) -> tuple[RaybotProcess, str]:
    """The first of `processes` (each following its output) to print a line containing `text`, and that line;
    with `after` (from `output_marks`), only lines printed since count."""
    deadline = time.monotonic() + timeout
    skip = after or [0] * len(processes)
    with _OUTPUT_SEEN:
        while True:
            for process, start in zip(processes, skip, strict=True):
                line = next((line for line in process.output[start:] if text in line), None)
                if line is not None:
                    return process, line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no raybot printed {text!r} within {timeout}s")
            _OUTPUT_SEEN.wait(remaining)


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP sockets process `pid` holds (Linux): which process holds which connection."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            fields = row.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def start_raybot(
    env: dict[str, str], ready_marker: str = "raybot: ", timeout: float = 30.0, command: list[str] | None = None
) -> RaybotProcess:
    """Start `python -m bot.cli serve` (or `command`) and wait for the line saying it listens (or connected)."""
    proc = subprocess.Popen(
        command or [sys.executable, "-m", "bot.cli", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    probe_url = None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:  # blocks on the process's own output: the readiness signal
        output.append(line)
        if line.startswith(ready_marker + "listening on "):
            url = line.split("listening on ", 1)[1].strip().removesuffix("/slack/events")
            return RaybotProcess(proc, url, output)
        if line.startswith(ready_marker + "probes on "):
            probe_url = line.split("probes on ", 1)[1].split()[0]
        if line.startswith(ready_marker + "connected"):
            return RaybotProcess(proc, None, output, probe_url)
        if time.monotonic() > deadline:
            break
    proc.kill()
    rest = proc.stdout.read() or ""
    proc.stdout.close()
    proc.wait()
    raise RuntimeError("raybot did not start:\n" + "".join(output) + rest)


def slash_command_body(text: str, *, user: str, channel: str, response_url: str, command: str = "/ray") -> str:
    """A slash command exactly as Slack posts it (form-encoded)."""
    return urllib.parse.urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": "T0TEAM",
            "team_domain": "example",
            "channel_id": channel,
            "channel_name": "incident",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0RAYBOT",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        }
    )


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """X-Slack-Signature and X-Slack-Request-Timestamp as Slack computes them."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def post_signed(client: httpx.AsyncClient, url: str, body: str, **kwargs) -> httpx.Response:
    return await client.post(f"{url}/slack/events", content=body, headers=signed_headers(body, **kwargs))


async def gather_posts(client: httpx.AsyncClient, url: str, bodies: list[str]) -> list[httpx.Response]:
    return await asyncio.gather(*(post_signed(client, url, b) for b in bodies))


# Debian's chromium, driven by Playwright in the browser tests (never a downloaded browser).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

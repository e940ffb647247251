"""Many `raybot serve` processes for little CPU: one process imports raybot once, then forks a child per start.

`python -m bot.cli serve` spends ~2 s of CPU importing raybot before it serves; the crash trials start dozens of
raybots, which would cost a minute of CPU on imports alone. Here one "zygote" process (started like raybot, from the
repository, with the harness's clean environment) imports raybot's modules and nothing else, and forks on request.
Each child takes the environment it is given and runs `bot.cli.main(["serve"])`: it is its own process with its own
settings, event loop, database connection and sockets, started from scratch exactly as `raybot serve` starts;
`kill()` is a real SIGKILL of that process alone.

The zygote is single-threaded (it starts no thread and never runs an event loop). It forwards every line a child
prints, tagged with its pid, and reports its exit. It sends signals to its children itself, so a pid is never
signalled after it was reaped (and possibly reused).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import pkgutil
import selectors
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass, field

from tests.harness import REPO, clean_env, start_raybot

LISTENING = "raybot: listening on "


# ---- the zygote (runs in its own process) ---------------------------------------------------------------------------


def _emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _child(write_fd: int, env: dict[str, str]) -> None:
    """In the forked child: stdout and stderr to the pipe, the given environment, then `raybot serve`."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.closerange(3, 1024)  # the zygote's pipes and selector are not the child's
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["raybot", "serve"]
        import bot.cli

        code = bot.cli.main(["serve"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child reports and exits, it never returns to the zygote's loop
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def zygote_main() -> None:
    """Import raybot, then serve fork/signal requests (JSON lines on stdin) until stdin closes."""
    # What a child would spend its first second on: every module of raybot (the CLI builds its parser from
    # bot.sandbox.run, handlers import some modules late), and the credentials library it loads on its first call.
    import alibabacloud_credentials.client  # noqa: F401

    import bot
    import commands

    for package in (bot, commands):
        if not os.path.realpath(package.__file__).startswith(str(REPO) + os.sep):
            raise RuntimeError(f"raybot imported from {package.__file__}, not from {REPO}")
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module.name.startswith("bot.migrations."):
                continue  # Alembic's scripts, loaded by Alembic from their files: env.py runs only inside Alembic
            importlib.import_module(module.name)

    # Bolt's App() calls inspect.stack(), whose first call maps every loaded module to its file: do it once here.
    inspect.stack()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the test run is the test's to handle
    if threading.active_count() != 1:
        raise RuntimeError("the zygote must be single-threaded to fork safely")
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, None)
    children: dict[int, int] = {}  # read fd -> pid
    partial: dict[int, bytes] = {}
    control = b""
    _emit({"ready": os.getpid()})
    while True:
        for key, _ in selector.select():
            fd = key.fd
            data = os.read(fd, 65536)
            if fd == 0:
                if not data:
                    for pid in children.values():
                        os.kill(pid, signal.SIGKILL)
                    for pid in children.values():
                        os.waitpid(pid, 0)
                    sys.stdout.flush()
                    os._exit(0)  # nothing to finalize: skip tearing down every module raybot imported
                control += data
                while b"\n" in control:
                    line, control = control.split(b"\n", 1)
                    request = json.loads(line)
                    if request["op"] == "fork":
                        read_fd, write_fd = os.pipe()
                        sys.stdout.flush()
                        pid = os.fork()
                        if pid == 0:
                            os.close(read_fd)
                            _child(write_fd, request["env"])
                        os.close(write_fd)
                        children[read_fd] = pid
                        partial[read_fd] = b""
                        selector.register(read_fd, selectors.EVENT_READ, None)
                        _emit({"forked": request["id"], "pid": pid})
                    elif request["op"] == "signal" and request["pid"] in children.values():
                        os.kill(request["pid"], request["signal"])
                continue
            pid = children[fd]
            buffered = partial[fd] + data
            *lines, partial[fd] = buffered.split(b"\n")
            if not data and partial[fd]:
                lines.append(partial[fd])
            for line in lines:
                _emit({"pid": pid, "line": line.decode("utf-8", "replace")})
            if not data:  # every copy of the write end is closed: the child is gone, or about to be
                selector.unregister(fd)
                os.close(fd)
                del children[fd], partial[fd]
                _, status = os.waitpid(pid, 0)
                _emit({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


# ---- the test side --------------------------------------------------------------------------------------------------


@dataclass
class ForkedRaybot:
    """A `raybot serve` forked from the zygote; `url` is its base URL in HTTP mode."""

    server: ForkServer | PlainStarter = field(repr=False)
    pid: int
    url: str | None = None
    output: list[str] = field(default_factory=list, repr=False)
    exit_code: int | None = None
    listening: threading.Event = field(default_factory=threading.Event, repr=False)
    exited: threading.Event = field(default_factory=threading.Event, repr=False)

    def kill(self) -> None:
        """kill -9, and return once the process is gone."""
        self.server.signal(self.pid, signal.SIGKILL)
        if not self.exited.wait(10):
            raise RuntimeError(f"raybot {self.pid} did not die")

    def stop(self, timeout: float = 10.0) -> str:
        """SIGTERM (raybot drains and exits), SIGKILL if it takes longer than `timeout`; returns its output."""
        self.server.signal(self.pid, signal.SIGTERM)
        if not self.exited.wait(timeout):
            self.kill()
        return "".join(line + "\n" for line in self.output)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output[-lines:])


class ForkServer:
    """The zygote, and the raybots forked from it. Use as a context manager."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.forkserver import zygote_main; zygote_main()"],
            cwd=REPO,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()
        self._next_id = 0
        self._pending: dict[int, tuple[threading.Event, list[ForkedRaybot]]] = {}
        self._children: dict[int, ForkedRaybot] = {}
        assert self._proc.stdout is not None
        ready = self._proc.stdout.readline()
        if not ready.startswith('{"ready"'):
            self._proc.kill()
            raise RuntimeError(f"the raybot fork server did not start: {ready}{self._proc.stdout.read()}")
        self._reader = threading.Thread(target=self._read, name="raybot-forkserver", daemon=True)
        self._reader.start()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the zygote; it kills whatever raybot is still running."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        self._proc.wait(timeout=15)
        self._reader.join(timeout=5)

    def _send(self, request: dict) -> None:
        assert self._proc.stdin is not None
        with self._lock:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()

    def signal(self, pid: int, signum: int) -> None:
        self._send({"op": "signal", "pid": pid, "signal": int(signum)})

    def start(self, env: dict[str, str], timeout: float = 15.0) -> ForkedRaybot:
        """Fork a `raybot serve` with `env` and wait until it listens (HTTP mode)."""
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            forked: tuple[threading.Event, list[ForkedRaybot]] = (threading.Event(), [])
            self._pending[request_id] = forked
        self._send({"op": "fork", "id": request_id, "env": env})
        if not forked[0].wait(timeout):
            raise RuntimeError("the fork server did not fork")
        [raybot] = forked[1]
        if not raybot.listening.wait(timeout) or raybot.url is None:
            if not raybot.exited.is_set():
                raybot.kill()
            raise RuntimeError("raybot did not start:\n" + raybot.tail(40))
        return raybot

    async def start_async(self, env: dict[str, str], timeout: float = 15.0) -> ForkedRaybot:
        return await asyncio.to_thread(self.start, env, timeout)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for text in self._proc.stdout:
            message = json.loads(text)
            if "forked" in message:
                raybot = ForkedRaybot(self, message["pid"])
                with self._lock:
                    self._children[raybot.pid] = raybot
                    event, slot = self._pending.pop(message["forked"])
                slot.append(raybot)
                event.set()
                continue
            with self._lock:
                raybot = self._children[message["pid"]]
            if "line" in message:
                line = message["line"]
                raybot.output.append(line)
                if line.startswith(LISTENING) and raybot.url is None:
                    raybot.url = line.split(LISTENING, 1)[1].strip().removesuffix("/slack/events")
                    raybot.listening.set()
            elif "exit" in message:
                raybot.exit_code = message["exit"]
                with self._lock:
                    del self._children[raybot.pid]
                raybot.exited.set()
                raybot.listening.set()  # whoever waits for it to listen learns it never will


class PlainStarter:
    """The same interface as ForkServer, starting each raybot as `python -m bot.cli serve` (tests.harness): for
    checking that the forked ones behave the same (RAYBOT_TESTS_NO_FORK=1), at ~2 s of imports a start."""

    def __init__(self) -> None:
        self._processes: dict[int, subprocess.Popen] = {}

    def __enter__(self) -> PlainStarter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start(self, env: dict[str, str], timeout: float = 30.0) -> ForkedRaybot:
        process = start_raybot(env, timeout=timeout)
        raybot = ForkedRaybot(self, process.proc.pid, process.url, [line.rstrip("\n") for line in process.output])
        raybot.listening.set()

        def drain() -> None:  # read its output as it comes, so a chatty raybot never blocks on a full pipe
            assert process.proc.stdout is not None
            for line in process.proc.stdout:
                raybot.output.append(line.rstrip("\n"))
            raybot.exit_code = process.proc.wait()
            raybot.exited.set()

        threading.Thread(target=drain, name=f"raybot-{raybot.pid}", daemon=True).start()
        self._processes[raybot.pid] = process.proc
        return raybot

    async def start_async(self, env: dict[str, str], timeout: float = 30.0) -> ForkedRaybot:
        return await asyncio.to_thread(self.start, env, timeout)

    def signal(self, pid: int, signum: int) -> None:
        process = self._processes[pid]
        if process.poll() is None:  # never a pid that was already reaped
            process.send_signal(signum)


def raybot_starter() -> ForkServer | PlainStarter:
    """The fork server, or plain `python -m bot.cli serve` starts when RAYBOT_TESTS_NO_FORK=1."""
    return PlainStarter() if os.environ.get("RAYBOT_TESTS_NO_FORK") == "1" else ForkServer()

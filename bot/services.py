"""The one object handed to commands: config, policy inputs, the EMR client, Slack."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from bot.config import KNOWN_ACTIONS, ClusterTarget, Config
from bot.emr.client import EmrClient
from bot.emr.sts import Acting
from bot.errors import Denied, UnknownCluster
from bot.metrics import Metrics
from bot.permissions import Decision, Subject, acting_role, decide, referenced_usergroups, visible_aliases
from bot.store import Store

if TYPE_CHECKING:
    from bot.dispatch import CommandRouter

USERGROUP_TTL_SECONDS = 60.0

# Set while an HTTP request that was let in before a stop is handled, and in the tasks it starts (asyncio copies
# the context into them): Bolt's listener, which runs after the acknowledgement.
_ADMITTED: contextvars.ContextVar[bool] = contextvars.ContextVar("raybot_admitted", default=False)


class WorkTracker:
    """The requests being handled (from the acknowledgement to the last answer), for a graceful stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    @property
    def busy(self) -> int:
        return len(self._tasks)

    @asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._idle.clear()
        try:
            yield
        finally:
            self._tasks.discard(task)
            if not self._tasks:
                self._idle.set()

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """An HTTP request let in (not refused as stopping): tracked until it is answered, and what it starts is
        handled even if the stop begins meanwhile — Slack was told 200, so nobody would send it again."""
        token = _ADMITTED.set(True)
        try:
            async with self.track():
                yield
        finally:
            _ADMITTED.reset(token)

    @property
    def admitted(self) -> bool:
        """Whether the current request was let in before the stop began (see `admit`)."""
        return _ADMITTED.get()

    async def drain(self, bound: float) -> int:
        """Stop taking work; wait up to `bound` s for what runs; cancel the rest. Returns how many were cut off.

        A change cut off between its two audit writes stays "pending": the next start reports it as unknown.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        try:
            while True:
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
                # A request answered a moment ago may have started its listener just now: let it register first.
                await asyncio.sleep(0)
                if not self._tasks:
                    return 0
        except TimeoutError:
            cut = list(self._tasks)
            for task in cut:
                task.cancel()
            await asyncio.gather(*cut, return_exceptions=True)
            return len(cut)


class UsergroupDirectory:
    """Who is in which Slack user group, from usergroups.users.list, cached briefly.

    Concurrent lookups of one group share a single API call, so a burst of commands
    costs one request per group, not one per command.
    """

    def __init__(
        self, client: AsyncWebClient, *, ttl: float = USERGROUP_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._inflight: dict[str, asyncio.Future[frozenset[str]]] = {}

    async def members(self, usergroup: str) -> frozenset[str]:
        cached = self._cache.get(usergroup)
        if cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        pending = self._inflight.get(usergroup)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        self._inflight[usergroup] = future
        try:
            resp = await self._client.usergroups_users_list(usergroup=usergroup)
            users = frozenset(resp.get("users") or [])
            self._cache[usergroup] = (self._clock(), users)
            future.set_result(users)
            return users
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # consumed here; waiters get it through their own await
            raise
        finally:
            del self._inflight[usergroup]

    async def groups_of(self, user_id: str, candidates: set[str]) -> frozenset[str]:
        """The groups among `candidates` that `user_id` belongs to."""
        names = sorted(candidates)
        memberships = await asyncio.gather(*(self.members(g) for g in names))
        return frozenset(g for g, users in zip(names, memberships, strict=True) if user_id in users)


@dataclass
class Services:
    """Everything a command may ask for. `clock` is wall time (epoch seconds), injectable for tests."""

    config: Config
    emr: EmrClient
    slack: AsyncWebClient
    usergroups: UsergroupDirectory
    commands: CommandRouter
    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    work: WorkTracker = field(default_factory=WorkTracker)
    clock: Callable[[], float] = time.time
    bot_user_id: str = ""
    lock_wait_seconds: float = 5.0  # how long a change waits for another one on the same cluster
    follow_seconds: float = 900.0  # how long raybot follows a change before saying it did not settle
    _usergroup_refs: set[str] = field(default_factory=set)
    _binding_roles: bool = False
    _scheduler_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._usergroup_refs = referenced_usergroups(self.config)
        self._binding_roles = any(b.ram_role for bindings in self.config.channels.values() for b in bindings)

    def wake_scheduler(self) -> None:
        """A revert was scheduled: let the scheduler look again at what is due next."""
        self._scheduler_wakeup.set()

    async def scheduler_woken(self) -> None:
        await self._scheduler_wakeup.wait()
        self._scheduler_wakeup.clear()

    async def subject(self, user_id: str, channel_id: str) -> Subject:
        """The user as the policy sees them: with the config's user groups they belong to."""
        groups = await self.usergroups.groups_of(user_id, self._usergroup_refs) if self._usergroup_refs else frozenset()
        return Subject(user_id=user_id, channel_id=channel_id, usergroups=groups)

    def cluster(self, subject: Subject, alias: str, action: str) -> ClusterTarget:
        """Resolve an alias for `subject`'s `action`, or raise UnknownCluster naming the aliases this subject may
        see. The target carries who its cloud calls are made for: the subject, through the RAM role of the binding
        that grants `action` (or of the cluster or its workspace)."""
        if alias not in self.config.clusters:
            raise UnknownCluster(alias, visible_aliases(self.config, subject, "list"))
        return self._acting(self.config.cluster(alias), subject, action)

    async def acting_target(self, target: ClusterTarget, user_id: str, channel_id: str, action: str) -> ClusterTarget:
        """`target` (of a recorded change) acting for its requester, as background work does: through the role
        of the requester's binding in the change's channel that grants `action` (an action the policy does not
        know, like a revert whose change is gone, counts as an undo)."""
        subject = Subject(user_id=user_id, channel_id=channel_id)
        if self._binding_roles:  # only then can the user's groups change the role: ask Slack (cached) who they are
            try:
                subject = await self.subject(user_id, channel_id)
            except Exception:  # noqa: BLE001 - Slack down: a binding by user group cannot match; the cluster's role acts
                pass
        return self._acting(target, subject, action if action in KNOWN_ACTIONS else "undo")

    def _acting(self, target: ClusterTarget, subject: Subject, action: str) -> ClusterTarget:
        role = acting_role(self.config, subject, action, target.alias)
        return replace(target, acting=Acting(role, subject.user_id) if role is not None else None)

    def require(self, subject: Subject, action: str, alias: str | None = None) -> Decision:
        """Ask the policy; raise Denied with its reason when it says no."""
        decision = decide(self.config, subject, action, alias)
        if not decision.allowed:
            self.metrics.denial(decision.kind)  # type: ignore[arg-type]
            raise Denied(decision.reason)
        return decision

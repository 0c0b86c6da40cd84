"""What nats-server refuses, as security events: failed logins and permission violations.

nats-server enforces device credentials and permissions itself, and refuses quietly for the
platform: a device publishing on another device's topic over MQTT even gets its PUBACK. What
it does say, it says in its log, one `[ERR]` line per refusal (captured with nats-server 2.15,
after `[pid] date time`; the unit tests hold the whole lines):

    [ERR] 127.0.0.1:43225 - mid:10 - "c1" - Publish Violation - Subject "fogline.t.devices.d2.x"
    [ERR] 127.0.0.1:43225 - mid:10 - "c1" - Subscription Violation - Subject "...", SID ...
    [ERR] 127.0.0.1:49895 - mid:29 - "c2" - authentication error - User "default.d1"
    [ERR] 127.0.0.1:50118 - cid:31 - authentication error - User "default.d1"

(`mid:` an MQTT connection, with its client id; `cid:` a NATS one.)

The log is the only place permission violations are reported (there is no system advisory for
them), so it is the one source for all three kinds. A violation line names the connection
(`mid:`/`cid:` and its number), not its user: the user comes from nats-server's connect
advisories (`$SYS.ACCOUNT.*.CONNECT`, which carry that number as `client.id`), or, for a
connection made before they were followed, from a CONNZ request.

Refusals come in bursts (a misconfigured device retries many times a second), so they are
counted in memory per (user, kind) and published as one `SecurityEvent` per (user, kind) and
flush interval, with the count: the events stream and the database see a few events a second
at most, whatever the rate of refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from fogline.bus.events import EventPublisher, SecurityEvent
from fogline.domain.ids import is_slug
from fogline.domain.timeseries import now_ms

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
MAX_CONNECTIONS_REMEMBERED = 100_000
MAX_USERS_PER_FLUSH = 1_000  # distinct users kept between flushes; more are folded into one
OVERFLOW_USER = "(many users)"
NO_TENANT = "_none"  # the tenant of an event whose user is no device's name (never a slug)
MAX_FIELD = 200


class SecurityKind(StrEnum):
    LOGIN_FAILED = "login_failed"
    PUBLISH_DENIED = "publish_denied"
    SUBSCRIBE_DENIED = "subscribe_denied"


@dataclass(frozen=True)
class Refusal:
    """One refusal as nats-server logged it."""

    kind: SecurityKind
    address: str
    connection: int | None  # nats-server's number of the connection (`mid:`/`cid:`)
    user: str | None  # logins name the user; violations only the connection
    subject: str | None
    mqtt: bool


_PREFIX = re.compile(r"\[ERR\] (?P<address>\S+) - (?P<type>mid|cid):(?P<conn>\d+) - ")
_QUOTED = r"\"((?:[^\"\\]|\\.)*)\""
_SEGMENT = re.compile(_QUOTED + " - ")  # the client id, name, or "<account>/user:<name>"
_ACCOUNT_USER = re.compile(r"[^/\s]+/user:(.+)")
_PUBLISH = re.compile(r"Publish Violation - (?:User " + _QUOTED + r", )?Subject " + _QUOTED)
_SUBSCRIBE = re.compile(r"Subscription Violation - (?:User " + _QUOTED + r", )?Subject " + _QUOTED)
_LOGIN = re.compile(r"authentication error - User " + _QUOTED)


def _unquote(text: str | None) -> str | None:
    # Go's %q: a backslash escapes the next character (enough for names and subjects).
    if text is None:
        return None
    return re.sub(r"\\(.)", r"\1", text)[:MAX_FIELD]


def parse_refusal(line: str) -> Refusal | None:
    """The refusal a nats-server log line reports, or None for any other line."""
    if "[ERR]" not in line:
        return None
    prefix = _PREFIX.search(line)
    if prefix is None:
        return None
    rest = line[prefix.end() :]
    address, mqtt = prefix["address"], prefix["type"] == "mid"
    connection = int(prefix["conn"])
    # Quoted segments (escaped by nats-server, so a client's own name cannot end one early):
    # an MQTT connection's client id; a NATS connection's name, then its account and user.
    segments: list[str] = []
    while (segment := _SEGMENT.match(rest)) is not None:
        segments.append(segment[1])
        rest = rest[segment.end() :]
    named = None
    if not mqtt and segments and (m := _ACCOUNT_USER.fullmatch(_unquote(segments[-1]) or "")):
        named = m[1]
    if (m := _PUBLISH.match(rest)) is not None:
        kind, user, subject = SecurityKind.PUBLISH_DENIED, m[1], m[2]
    elif (m := _SUBSCRIBE.match(rest)) is not None:
        kind, user, subject = SecurityKind.SUBSCRIBE_DENIED, m[1], m[2]
    elif (m := _LOGIN.match(rest)) is not None:
        kind, user, subject = SecurityKind.LOGIN_FAILED, m[1], None
    else:
        return None
    return Refusal(kind, address, connection, _unquote(user) or named, _unquote(subject), mqtt)


def tenant_and_device(username: str) -> tuple[str, str | None]:
    """(tenant, device) a user name stands for (`<tenant>.<device>`, both slugs), else
    (NO_TENANT, None): a name no device can have."""
    tenant, dot, device = username.partition(".")
    if dot and is_slug(tenant) and is_slug(device):
        return tenant, device
    return NO_TENANT, None


@dataclass
class _Tally:
    count: int = 0
    first_at: int = 0
    last_at: int = 0
    subject: str | None = None
    address: str | None = None
    mqtt: bool = False


# Asks nats-server who a connection's user is (None when it does not know).
UserLookup = Callable[[int], Awaitable[str | None]]


@dataclass
class SecurityWatcher:
    """Counts nats-server's refusals per (user, kind) and publishes them as `SecurityEvent`s
    every `flush_s`."""

    events: EventPublisher
    lookup: UserLookup | None = None
    flush_s: float = FLUSH_INTERVAL_S
    reported: int = 0  # refusals seen
    published: int = 0  # events published
    looked_up: int = 0  # users asked of nats-server (their connect advisory was missed)
    _users: OrderedDict[int, str] = field(default_factory=OrderedDict)
    _tallies: dict[tuple[str, SecurityKind], _Tally] = field(default_factory=dict)
    _unresolved: list[tuple[Refusal, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def connected(self, connection: int, user: str) -> None:
        """nats-server's connect advisory: connection `connection` is `user`'s. Kept after it
        closes (its last refusals may be read from the log later); a restarted server numbers
        connections anew, and each new connection's advisory comes before its refusals."""
        self._users[connection] = user
        self._users.move_to_end(connection)
        while len(self._users) > MAX_CONNECTIONS_REMEMBERED:
            self._users.popitem(last=False)

    def refused(self, refusal: Refusal) -> None:
        self.reported += 1
        at = now_ms()
        user = refusal.user
        if user is None and refusal.connection is not None:
            user = self._users.get(refusal.connection)
        if user is None:
            self._unresolved.append((refusal, at))
            return
        self._count(user, refusal, at)

    def _count(self, user: str, refusal: Refusal, at: int) -> None:
        key = (user, refusal.kind)
        if key not in self._tallies and len(self._tallies) >= MAX_USERS_PER_FLUSH:
            key = (OVERFLOW_USER, refusal.kind)
        tally = self._tallies.setdefault(key, _Tally(first_at=at))
        tally.count += 1
        tally.last_at = at
        tally.subject = refusal.subject or tally.subject
        tally.address = refusal.address
        tally.mqtt = refusal.mqtt

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="security-watcher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:  # one bad flush must not end the watch
                log.exception("security.flush_failed")

    async def flush(self) -> None:
        """Publish what was counted since the last flush."""
        unresolved, self._unresolved = self._unresolved, []
        for refusal, at in unresolved:
            user = None
            if self.lookup is not None and refusal.connection is not None:
                user = self._users.get(refusal.connection)
                if user is None and (user := await self.lookup(refusal.connection)) is not None:
                    self.looked_up += 1
                    self.connected(refusal.connection, user)
            self._count(user or f"(connection {refusal.connection})", refusal, at)
        tallies, self._tallies = self._tallies, {}
        for (user, kind), tally in tallies.items():
            tenant, device = tenant_and_device(user)
            await self.events.publish_event(
                SecurityEvent(
                    tenant=tenant,
                    at=tally.last_at,
                    kind=kind.value,
                    username=user,
                    device=device,
                    count=tally.count,
                    first_at=tally.first_at,
                    subject=tally.subject,
                    address=tally.address,
                    protocol="mqtt" if tally.mqtt else "nats",
                )
            )
            self.published += 1

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.flush()  # what was counted last is not lost on a clean stop

"""The subscription worker of one server process: the matcher and the deliverer.

**Matcher.** Reads the outbox after its cursor in commit order (``sql/outbox.py``: sequence
order is commit order). A Subscription's own events keep its delivery state in step (a new
one, a client's ``requested`` or new endpoint: a handshake is due; ``off`` or deleted: off).
Every other event is matched against each live subscription's topic on the event's own version
(and the version it replaced, for the topic's ``previous`` condition; a deletion is judged by
the version it deleted) and its filters, and each match gets the subscription's next number.
The numbers and the cursor move in one transaction guarded by the cursor's old value, so with
several processes each batch is numbered once: numbers never skip or repeat.

**Deliverer.** For each subscription with something to send, under a lease (one deliverer per
subscription across processes; a killed process's lease expires): the handshake, or the next
events after the acknowledged cursor, ``max-count`` at a time, built through the door with the
subscriber's rights as of sending. A 2xx moves the cursor; anything else is retried with
exponential backoff and full jitter up to ``subscription_backoff_max_seconds``, for
``subscription_retry_hours``, then the subscription goes to ``error`` with the reason (kept
for ``$status``). At-least-once: a crash between the POST and the cursor's move re-sends the
same numbers. Each subscription is delivered in its own task: a slow receiver delays only
itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import secrets
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import orjson

from server.auth.clients import Client
from server.auth.policy import Policy
from server.auth.principal import LOCAL, Principal
from server.auth.scopes import ScopeSet
from server.errors import FhirError
from server.fhir.instant import now_us, parse_fhir_range
from server.outbound import Outbound, OutboundError, networks
from server.ports import Reader, Unit, Version
from server.search.match import Matcher, RowSource, compile_matcher
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import Criteria
from server.search.rows import IndexRows
from server.settings import Settings
from server.store.authorized import AuthorizedRepository
from server.store.base import (
    Event,
    Matching,
    Numbered,
    Origin,
    Outcome,
    Repository,
    State,
    Subscriptions,
    new_state,
)
from server.store.runner import Runner
from server.subscriptions import email
from server.subscriptions.notifications import (
    Seen,
    notification_bundle,
    seen_through,
    status_parameters,
)
from server.subscriptions.rule import secret_token
from server.subscriptions.spec import Spec, read_spec
from server.subscriptions.topics import Topic

logger = logging.getLogger("calaim_fhir.subscriptions")

SERVER = Origin(client="calaim-fhir:subscriptions")
"""The origin of the server's own status writes (requested → active → error, → off)."""

BATCH = 500
DEFAULT_MAX_COUNT = 100
FIRST_RETRY_SECONDS = 0.25
PROBE_COUNT = 1  # events in an attempt while the endpoint is failing
LEASE_SLACK_SECONDS = 5
DELIVERY_TICK_US = 250_000  # at most four delivery rounds a second per process
RECORD_GATHER_SECONDS = 0.05  # the longest a delivery's outcome waits for others to share a commit
Owners = Callable[[State], Principal | None]
SIGNATURE_HEADER = "X-Calaim-Signature"


def signature(key: str, timestamp: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body under the key>``: a receiver
    recomputes it and refuses a mismatch or an old ``t`` (docs/subscriptions.md)."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass(frozen=True, slots=True)
class Clock:
    """Time and randomness, injectable (tests run the backoff without waiting)."""

    now: Callable[[], int] = now_us
    random: Callable[[], float] = random.random


def backoff_us(attempts: int, max_seconds: float, rnd: float) -> int:
    """Full jitter: a random wait in [0.5, 1] of ``min(max, FIRST_RETRY_SECONDS * 2 **
    (attempts - 1))`` seconds: a receiver back after a brief outage is tried again within a
    fraction of a second; one that stays down is tried ever less often."""
    cap = min(max_seconds, FIRST_RETRY_SECONDS * 2.0 ** min(max(attempts - 1, 0), 40))
    return int(cap * (0.5 + 0.5 * rnd) * 1_000_000)


class SubscriptionService:
    def __init__(
        self,
        repo: Repository,
        runner: Runner,
        settings: Settings,
        search: SearchContext,
        rows: RowSource,
        policies: Sequence[Policy] = (),
        *,
        owners: Owners | None = None,
        clock: Clock = Clock(),
        outbound: Outbound | None = None,
    ) -> None:
        self._repo = repo
        self._store = repo.subscriptions
        self._runner = runner
        self._settings = settings
        self._search = search
        self._rows = rows
        self._policies = tuple(policies)
        self._owners = owners or self.registered_owner
        self._clock = clock
        self._outbound = outbound or Outbound(
            networks(settings.subscription_private_networks.split(",")),
            settings.subscription_allow_http_loopback,
            connect_timeout=settings.subscription_timeout_seconds,
            read_timeout=settings.subscription_timeout_seconds,
            keep_alive=True,
        )
        self._me = f"deliverer-{secrets.token_hex(6)}"
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._spec_cache: dict[str, tuple[int, Spec | None]] = {}
        self._delivery_specs: dict[str, tuple[int, dict[str, Any], Spec]] = {}
        self._recorder = _Recorder(repo.subscriptions, lambda: len(self._inflight))
        self._wake = asyncio.Event()

    # -- who the subscriber is, as of now ---------------------------------------------------

    def registered_owner(self, state: State) -> Principal | None:
        """The owner's rights now: the local operator, or the registered client's current
        grant (None: revoked or unknown, the subscription is turned off)."""
        if state.owner in (None, "local", "system"):
            return LOCAL
        row = self._repo.auth.client(state.owner)
        if row is None:
            return None
        client = Client.of(row)
        if not client.active:
            return None
        return Principal(
            client.client_id,
            organization=client.organization,
            user=state.user,
            operator=client.role == "admin",
            scopes=ScopeSet(client.scopes),
            role=client.role,
            purposes=client.purposes,
        )

    # -- matching ------------------------------------------------------------------------

    def match_once(self) -> int:
        """Match one batch of outbox events (blocking); the number of events read."""
        cursor = self._store.matcher_cursor()
        if cursor is None:
            return 0  # no Subscription was ever written
        events = self._repo.outbox.read(cursor, BATCH)
        if not events:
            return 0
        actions: list[Callable[[Matching], None]] = []
        matches: list[tuple[str, Event]] = []  # numbered together, before the next sync
        live = {s.id: s for s in self._store.states() if s.status in ("requested", "active")}
        with self._repo.reader() as reader:
            specs = self._specs_now(reader, live)
            for event in events:
                if event.type == "Subscription":
                    if event.origin.client == SERVER.client:
                        continue
                    _flush(matches, actions)
                    self._sync(event, reader, live, specs, actions)
                    continue
                versions = _Versions(reader, event, self._rows)
                for id in sorted(live):
                    if self._hits(id, event, versions, reader, specs):
                        matches.append((id, event))
            _flush(matches, actions)

        def apply(m: Matching) -> None:
            for action in actions:
                action(m)

        if self._store.commit_batch(cursor, events, apply):
            if actions:
                self._wake.set()
            return len(events)
        return 0

    def _sync(
        self,
        event: Event,
        reader: Reader,
        live: dict[str, State],
        specs: dict[str, Spec | None],
        actions: list[Callable[[Matching], None]],
    ) -> None:
        specs.pop(event.id, None)
        self._spec_cache.pop(event.id, None)
        version = reader.vread("Subscription", event.id, event.version)
        body = None if version is None or version.body is None else orjson.loads(version.body)
        status = "off" if body is None else str(body.get("status"))
        endpoint = None if body is None else (body.get("channel") or {}).get("endpoint")
        now = self._clock.now()

        def sync(m: Matching) -> None:
            state = m.state(event.id)
            if state is None:
                if status not in ("requested", "active"):
                    return
                origin = event.origin
                state = new_state(
                    event.id, origin.client, origin.organization, origin.user, endpoint, now
                )
            elif status == "off":
                state = replace(state, status="off")
            elif status == "requested" or endpoint != state.endpoint:
                state = replace(
                    state,
                    status="requested",
                    handshake=True,
                    attempts=0,
                    next_attempt=0,
                    failing_since=None,
                    endpoint=endpoint,
                )
            m.upsert(state)

        actions.append(sync)
        if status in ("requested", "active"):
            live[event.id] = live.get(event.id) or new_state(
                event.id, event.origin.client, None, None, endpoint, now
            )
        else:
            live.pop(event.id, None)

    def _specs_now(self, reader: Reader, live: dict[str, State]) -> dict[str, Spec | None]:
        """The live subscriptions' specs, parsed again only when their version changed (one
        query for the current versions)."""
        versions = reader.versions([("Subscription", id) for id in sorted(live)])
        out: dict[str, Spec | None] = {}
        for id in live:
            version = versions.get(("Subscription", id))
            cached = self._spec_cache.get(id)
            if cached is not None and cached[0] == version:
                out[id] = cached[1]
                continue
            out[id] = self._spec(id, reader, out)
            if version is not None:
                self._spec_cache[id] = (version, out[id])
        return out

    def _spec(self, id: str, reader: Reader, specs: dict[str, Spec | None]) -> Spec | None:
        if id not in specs:
            current = reader.read("Subscription", id)
            spec = None
            if current is not None and current.body is not None:
                try:
                    spec = read_spec(orjson.loads(current.body), self._search)
                except FhirError:
                    spec = None
            specs[id] = spec
        return specs[id]

    def _hits(
        self,
        id: str,
        event: Event,
        versions: _Versions,
        reader: Reader,
        specs: dict[str, Spec | None],
    ) -> bool:
        spec = self._spec(id, reader, specs)
        if spec is None:
            return False
        # subscriptions asking the same question of this event share one answer
        return versions.answer(
            (spec.topic.url, tuple(f.key for f in spec.filters)),
            lambda: self._judge(spec, event, versions),
        )

    def _judge(self, spec: Spec, event: Event, versions: _Versions) -> bool:
        topic = spec.topic
        if topic.type != event.type:
            return False
        interaction = "update" if event.interaction == "patch" else event.interaction
        if interaction not in topic.triggers:
            return False
        current, previous = versions.current(), versions.previous()
        if current is None:
            if not topic.deleted:
                return False
        elif topic.current is not None and not versions.test(
            _condition(topic, "current", self._search), current, event.committed
        ):
            return False
        if topic.previous is not None:
            if previous is None:
                if not topic.no_previous:
                    return False
            elif not versions.test(_condition(topic, "previous", self._search), previous, None):
                return False
        subject = current if current is not None else previous
        if subject is None:
            return not spec.filters
        last = event.committed if current is not None else None
        return all(versions.test(f, subject, last) for f in spec.filters)

    # -- delivery ------------------------------------------------------------------------

    async def deliver_due(self) -> None:
        """Start a delivery task for each due subscription not already being delivered."""
        now = self._clock.now()
        gap = int(self._settings.subscription_notification_interval_seconds * 1_000_000)
        due = await asyncio.to_thread(self._store.due, now, 200, now - gap if gap else None)
        ids = [state.id for state in due if state.id not in self._inflight]
        if not ids:
            return
        leased = await asyncio.to_thread(
            self._store.lease_many, ids, self._me, now, self._lease_until(now)
        )
        round = _Round(self, now)
        # the round's store reads in one thread hop, not one per subscription
        for found in await asyncio.to_thread(self._load_many, leased):
            self._start(found.id, heartbeat=False, leased=True, round=round, loaded=found)

    def _lease_until(self, now: int) -> int:
        lease = 2 * self._settings.subscription_timeout_seconds + LEASE_SLACK_SECONDS
        return now + int(lease * 1_000_000)

    def _start(
        self,
        id: str,
        heartbeat: bool,
        leased: bool = False,
        round: _Round | None = None,
        loaded: _Loaded | None = None,
    ) -> None:
        round = round or _Round(self, self._clock.now())
        task = asyncio.create_task(self._deliver(id, heartbeat, leased, round, loaded))
        self._inflight[id] = task
        task.add_done_callback(self._done(id))

    async def housekeeping(self) -> None:
        """Turn off the subscriptions whose owner was revoked or whose ``end`` passed, and
        start the heartbeats that are due."""
        now = self._clock.now()
        round = _Round(self, now)  # each owner's rights looked up once
        for state in await asyncio.to_thread(self._store.states):
            if state.status not in ("requested", "active") or state.id in self._inflight:
                continue
            if await round.owner(state) is None:
                await self._set_status(state.id, "off", "the subscriber's client was revoked")
                continue
            _, current = await asyncio.to_thread(self._current, state.id)
            if current is None or current.body is None:
                continue
            try:
                _, spec = self._delivery_spec(state.id, current)
            except FhirError:
                continue
            if spec.end is not None and _ended(spec.end, now):
                await self._set_status(state.id, "off", "the Subscription's end has passed")
                continue
            if state.status != "active" or spec.heartbeat is None or state.next_attempt > now:
                continue
            last = state.last_sent if state.last_sent is not None else state.created
            if now - last >= spec.heartbeat * 1_000_000:
                self._start(state.id, heartbeat=True)

    def _done(self, id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._inflight.pop(id, None)

        return done

    async def idle(self) -> None:
        """Wait for the deliveries started so far (tests)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    async def _deliver(
        self, id: str, heartbeat: bool, leased: bool, round: _Round, loaded: _Loaded | None
    ) -> None:
        try:
            await self._deliver_one(id, heartbeat, leased, round, loaded)
        except Exception:  # noqa: BLE001 - a delivery task must never die silently
            logger.exception("subscriptions: delivery of Subscription/%s failed", id)

    async def _deliver_one(
        self, id: str, heartbeat: bool, leased: bool, round: _Round, loaded: _Loaded | None
    ) -> None:
        """Under the lease (taken here unless ``leased``): send (what ``loaded`` read for the
        first send, when the round read it), then record the outcome, which also releases the
        lease (released on its own when nothing was sent). A backlog drains at once, not one
        batch per round: after a full batch the outcome keeps the lease and the next batch
        follows."""
        now = self._clock.now()
        if not leased and not await asyncio.to_thread(
            self._store.lease, id, self._me, now, self._lease_until(now)
        ):
            return
        recorded = False
        try:
            outcome = await self._send(id, now, round, heartbeat, loaded)
            while outcome is not None:
                kept = await self._recorder.record(outcome)
                recorded = True
                if outcome.give_up:
                    await self._write_status(id, "error")
                elif outcome.handshake and outcome.error is None:
                    await self._write_status(id, "active")
                if outcome.keep_until is None or not kept:
                    return
                recorded = False
                now = self._clock.now()
                outcome = await self._send(id, now, round.fresh(now))
        finally:
            if not recorded:
                await asyncio.to_thread(self._store.release, id, self._me)

    async def _send(
        self,
        id: str,
        now: int,
        round: _Round,
        heartbeat: bool = False,
        loaded: _Loaded | None = None,
    ) -> Outcome | None:
        """Send what is due (read now, unless ``loaded``); the outcome to record (None:
        nothing was sent)."""
        found = await asyncio.to_thread(self._load, id, heartbeat) if loaded is None else loaded
        state, current = found.state, found.current
        if state is None or state.status not in ("requested", "active"):
            return None
        if current is None or current.body is None:
            await self._set_status(id, "off", "the Subscription was deleted")
            return None
        spec = found.spec
        if spec is None:
            reason = f"the Subscription is no longer valid: {found.invalid}"
            await self._set_status(id, "error", reason)
            return None
        if spec.end is not None and _ended(spec.end, now):
            await self._set_status(id, "off", "the Subscription's end has passed")
            return None
        principal = await round.owner(state)
        if principal is None:
            await self._set_status(id, "off", "the subscriber's client was revoked")
            return None
        numbered = found.numbered
        if state.handshake:
            kind = "handshake"
        elif numbered:
            kind = "event-notification"
        elif heartbeat:
            kind = "heartbeat"
        else:
            return None
        if spec.channel == "email":
            error = await self._email(spec, id, kind, numbered)
        else:
            seen = await round.seen(state, principal, numbered)
            error = await self._post(spec, found, kind, seen, now)
        done = self._clock.now()
        if error is None:
            more = len(numbered) >= found.limit
            return Outcome(
                id,
                self._me,
                done,
                number=numbered[-1].number if numbered else state.delivered,
                handshake=state.handshake,
                keep_until=self._lease_until(done) if more else None,
            )
        return self._failure(state, error, done)

    def _load_many(self, ids: Sequence[str], heartbeat: bool = False) -> list[_Loaded]:
        """What the sends to ``ids`` read from the store, read together (one thread hop, one
        query for their states and one for their header values and signing keys): the
        state, the current Subscription and its spec, the events after the acknowledged
        cursor (``max-count`` at a time; one while the endpoint is failing: a cheap probe,
        and once one succeeds the backlog follows at once), and for a rest-hook with
        something to send its header values and signing key."""
        states = self._store.states_of(ids)
        with self._repo.reader() as reader:
            loads = [_Loaded(id, states.get(id), reader.read("Subscription", id)) for id in ids]
        wanted: dict[str, str | None] = {}  # subscription -> its header values' token
        for found in loads:
            state, current = found.state, found.current
            if state is None or state.status not in ("requested", "active"):
                continue
            if current is None or current.body is None:
                continue
            try:
                found.resource, spec = self._delivery_spec(found.id, current)
            except FhirError as exc:
                found.invalid = str(exc)
                continue
            found.spec = spec
            found.limit = spec.max_count or DEFAULT_MAX_COUNT
            if state.attempts:
                found.limit = min(found.limit, PROBE_COUNT)
            if not state.handshake:
                found.numbered = self._store.events(found.id, state.delivered, None, found.limit)
            if spec.channel != "email" and (state.handshake or found.numbered or heartbeat):
                wanted[found.id] = secret_token(found.resource)
        secrets = self._store.delivery_secrets(wanted)
        for found in loads:
            if found.id in secrets:
                found.headers, found.key = secrets[found.id]
        return loads

    def _load(self, id: str, heartbeat: bool) -> _Loaded:
        """``_load_many`` of one subscription."""
        return self._load_many([id], heartbeat)[0]

    def _delivery_spec(self, id: str, current: Version) -> tuple[dict[str, Any], Spec]:
        """The Subscription's resource and spec, parsed again only when its version changed
        (shared: never changed); raises ``FhirError`` when it is no longer valid."""
        cached = self._delivery_specs.get(id)
        if cached is not None and cached[0] == current.version:
            return cached[1], cached[2]
        resource = orjson.loads(current.body or b"{}")
        spec = read_spec(resource, self._search)
        self._delivery_specs[id] = (current.version, resource, spec)
        return resource, spec

    async def _post(
        self, spec: Spec, found: _Loaded, kind: str, seen: list[Seen], now: int
    ) -> str | None:
        """POST the notification Bundle; the error, or None on a 2xx."""
        state = found.state
        assert state is not None
        base = self._settings.fhir_base
        status = "requested" if state.handshake else "active"
        parameters = status_parameters(
            base, state.id, spec.topic.url, status, kind, state.events, seen, spec.content
        )
        bundle = notification_bundle(base, parameters, seen, spec.content, now)
        body = orjson.dumps(bundle)
        headers = dict(found.headers)
        headers["Content-Type"] = "application/fhir+json; fhirVersion=4.0"
        if found.key is not None:
            headers[SIGNATURE_HEADER] = signature(found.key, self._clock.now() // 1_000_000, body)
        try:
            response = await self._outbound.request(
                "POST", spec.endpoint, headers=headers, content=body
            )
        except OutboundError as exc:
            return str(exc)
        return None if 200 <= response.status < 300 else f"HTTP {response.status}"

    async def _email(self, spec: Spec, id: str, kind: str, numbered: list[Numbered]) -> str | None:
        """Send the no-content email; the error, or None when the relay took it."""
        first = numbered[0].number if numbered else None
        last = numbered[-1].number if numbered else None
        to = spec.endpoint[len("mailto:") :]
        msg = email.message(self._settings, to, id, kind, first, last)
        try:
            await asyncio.to_thread(email.send, self._settings, msg)
        except email.EmailError as exc:
            return str(exc)
        return None

    def _failure(self, state: State, error: str, now: int) -> Outcome:
        """A failed attempt: the next one after the backoff, or ``error`` once the endpoint
        has failed for ``subscription_retry_hours``."""
        since = state.failing_since if state.failing_since is not None else now
        give_up = now - since >= int(self._settings.subscription_retry_hours * 3600 * 1_000_000)
        wait = backoff_us(
            state.attempts + 1,
            self._settings.subscription_backoff_max_seconds,
            self._clock.random(),
        )
        reason = f"delivery to the endpoint failed: {error}"
        if give_up:
            hours = self._settings.subscription_retry_hours
            reason = f"delivery failed for {hours:g} hours; last error: {error}"
        logger.warning("subscriptions: Subscription/%s: %s", state.id, reason)
        return Outcome(
            state.id, self._me, now, error=reason, next_attempt=now + wait, give_up=give_up
        )

    def _current(self, id: str) -> tuple[State | None, Version | None]:
        state = self._store.state(id)
        with self._repo.reader() as reader:
            return state, reader.read("Subscription", id)

    def _seen(self, principal: Principal, numbered: list[Numbered]) -> list[Seen]:
        """The events as ``principal`` may see them now (through the door)."""
        door = AuthorizedRepository(self._runner, principal, policies=self._policies)
        with door.reader() as reader:
            return seen_through(reader, numbered)

    async def _set_status(self, id: str, status: str, reason: str) -> None:
        await asyncio.to_thread(self._store.set_status, id, status, reason)
        await self._write_status(id, status)

    async def _write_status(self, id: str, status: str) -> None:
        """The server's own write of the Subscription's status (a new version)."""

        def write(unit: Unit) -> None:
            current = unit.read("Subscription", id)
            if current is None or current.body is None:
                return
            body = orjson.loads(current.body)
            if body.get("status") == status:
                return
            body["status"] = status
            unit.update("Subscription", id, body)

        try:
            await self._runner.write(write, SERVER)
        except FhirError:
            logger.warning("subscriptions: status of Subscription/%s not written", id)

    def _registered(self) -> bool:
        return self._store.matcher_cursor() is not None

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Match and deliver until ``stop``: woken by this process's commits, and every
        ``subscription_poll_seconds`` for other processes' writes and due retries."""
        committed = self._runner.committed()
        every = self._settings.subscription_poll_seconds
        chores = max(every, 1.0) * 1_000_000
        prune_every = self._settings.outbox_prune_minutes * 60 * 1_000_000
        keep = int(self._settings.subscription_event_retention_days * 86_400 * 1_000_000)
        last_chores = 0
        last_round = 0
        last_prune = self._clock.now()
        registered = False  # a Subscription was ever written: there is work to look for
        last_look = 0
        while not stop.is_set():
            try:
                now = self._clock.now()
                if not registered and now - last_look >= every * 1_000_000:
                    # without any subscription there is nothing to match, send or tidy:
                    # look again once per poll interval, not on each commit
                    last_look = now
                    registered = await asyncio.to_thread(self._registered)
                if registered:
                    while await asyncio.to_thread(self.match_once):
                        pass
                    now = self._clock.now()
                    if now - last_round >= DELIVERY_TICK_US:
                        # one round per tick at most: a burst of commits is delivered together
                        last_round = now
                        await self.deliver_due()
                    if now - last_chores >= chores:
                        last_chores = now
                        await self.housekeeping()
                    if now - last_prune >= prune_every:
                        last_prune = now
                        await asyncio.to_thread(self._store.prune_events, now - keep)
            except FhirError:
                logger.warning("subscriptions: database unavailable; retrying")
            waits = [asyncio.create_task(e.wait()) for e in (stop, committed, self._wake)]
            with suppress(TimeoutError):
                await asyncio.wait(waits, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            # let the next tick come: commits meanwhile join this round
            rest = DELIVERY_TICK_US - (self._clock.now() - last_round)
            if rest > 0 and not stop.is_set():
                await asyncio.sleep(rest / 1_000_000)
            for w in waits:
                w.cancel()
            self._wake.clear()
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self._recorder.close()
        await self._outbound.aclose()


@dataclass(slots=True)
class _Loaded:
    """What one send read from the store (``SubscriptionService._load``)."""

    id: str
    state: State | None
    current: Version | None
    resource: dict[str, Any] | None = None
    spec: Spec | None = None
    invalid: str | None = None
    limit: int = DEFAULT_MAX_COUNT
    numbered: list[Numbered] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    key: str | None = None


class _Round:
    """What one delivery round reads once for all the subscriptions it sends to: each owner's
    rights, and what each owner may see of each event (through the door), as of the round.
    A drain that outlives ``DELIVERY_TICK_US`` moves on to a newer round (``fresh``), so no
    payload is built on rights older than that."""

    def __init__(self, service: SubscriptionService, started: int) -> None:
        self._service = service
        self.started = started
        self._owners: dict[tuple[str | None, ...], asyncio.Future[Principal | None]] = {}
        # per owner: each event's version as the owner may see it (by outbox ``seq``, one
        # event's identity), and the readings under way
        self._known: dict[tuple[str | None, ...], dict[int, Version | None]] = {}
        self._reading: dict[tuple[str | None, ...], dict[int, asyncio.Future[None]]] = {}
        self._next: _Round | None = None

    def fresh(self, now: int) -> _Round:
        if now - self.started < DELIVERY_TICK_US:
            return self
        if self._next is None or now - self._next.started >= DELIVERY_TICK_US:
            self._next = _Round(self._service, now)
        return self._next

    async def owner(self, state: State) -> Principal | None:
        key = _owner_key(state)
        found = self._owners.get(key)
        if found is None:
            found = self._owners[key] = asyncio.ensure_future(
                asyncio.to_thread(self._service._owners, state)
            )
        return await found

    async def seen(
        self, state: State, principal: Principal, numbered: list[Numbered]
    ) -> list[Seen]:
        """``numbered`` as the owner may see them: each version read through the door once
        per round and owner, however many of the owner's subscriptions carry it."""
        owner = _owner_key(state)
        known = self._known.setdefault(owner, {})
        reading = self._reading.setdefault(owner, {})
        missing = [e for e in numbered if e.seq not in known and e.seq not in reading]
        if missing:
            future = asyncio.ensure_future(self._visible(principal, missing, known))
            for e in missing:
                reading[e.seq] = future
        awaited: set[int] = set()  # each reading awaited once
        for e in numbered:
            if e.seq not in known:
                pending = reading[e.seq]
                if id(pending) not in awaited:
                    awaited.add(id(pending))
                    await pending
        return [Seen._make((e, known[e.seq])) for e in numbered]

    async def _visible(
        self, principal: Principal, numbered: list[Numbered], known: dict[int, Version | None]
    ) -> None:
        seen = await asyncio.to_thread(self._service._seen, principal, numbered)
        known.update((s.event.seq, s.version) for s in seen)


def _owner_key(state: State) -> tuple[str | None, ...]:
    return (state.owner, state.organization, state.user)


class _Recorder:
    """The outcomes of this process's deliveries, written together: a write waits up to
    ``RECORD_GATHER_SECONDS`` for the other deliveries in flight (``inflight``) to end, and the
    outcomes that come while it runs share the next one: a few commits per round, not one per
    subscription (on SQLite each is a write transaction the serving process's writes wait
    for). A delivery alone in flight is recorded at once."""

    def __init__(self, store: Subscriptions, inflight: Callable[[], int]) -> None:
        self._store = store
        self._inflight = inflight
        self._pending: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._writing: asyncio.Task[None] | None = None
        self._more = asyncio.Event()

    async def record(self, outcome: Outcome) -> bool:
        """Record ``outcome``; whether the lease was still ours (the outcome counted)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        self._more.set()
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORD_GATHER_SECONDS
        while len(self._pending) < self._inflight() and loop.time() < deadline:
            self._more.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._more.wait(), deadline - loop.time())
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                kept = set(await asyncio.to_thread(self._store.record, [o for o, _ in batch]))
            except Exception as exc:  # noqa: BLE001 - each waiting delivery gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for outcome, future in batch:
                if not future.done():
                    future.set_result(outcome.id in kept)

    async def close(self) -> None:
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)


class _Versions:
    """An event's version and the one it replaced, each read and indexed once, and the
    answers of the tests made of them, whatever the number of subscriptions that ask."""

    def __init__(self, reader: Reader, event: Event, rows: RowSource) -> None:
        self._reader = reader
        self._event = event
        self._read: dict[int, dict[str, Any] | None] = {}
        self._rows = _OnceRows(rows)
        self._answers: dict[Any, bool] = {}

    def _get(self, version: int | None) -> dict[str, Any] | None:
        if version is None:
            return None
        if version not in self._read:
            e = self._event
            self._read[version] = _body(self._reader.vread(e.type, e.id, version))
        return self._read[version]

    def current(self) -> dict[str, Any] | None:
        return self._get(self._event.version)

    def previous(self) -> dict[str, Any] | None:
        return self._get(self._event.previous)

    def answer(self, key: Any, judge: Callable[[], bool]) -> bool:
        """The answer to the question ``key``, judged once for this event."""
        found = self._answers.get(key)
        if found is None:
            found = self._answers[key] = judge()
        return found

    def test(self, criteria: Criteria, resource: dict[str, Any], last: int | None) -> bool:
        """Whether ``resource`` (one of this event's versions) satisfies ``criteria``."""
        return self.answer(
            (criteria.key, id(resource), last),
            lambda: _test(criteria, self._event.type, resource, self._rows, last),
        )


class _OnceRows:
    """A row source that indexes each resource once (keyed by the dict's identity: the
    versions of one event, alive as long as the event's ``_Versions``)."""

    def __init__(self, rows: RowSource) -> None:
        self._source = rows
        self._done: dict[int, tuple[dict[str, Any], IndexRows]] = {}

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows:
        found = self._done.get(id(resource))
        if found is None or found[0] is not resource:
            found = self._done[id(resource)] = (resource, self._source.rows(type, resource))
        return found[1]


def _test(
    criteria: Criteria, type: str, resource: dict[str, Any], rows: RowSource, last: int | None
) -> bool:
    try:
        return _matcher(criteria)(type, resource, rows, last_updated=last)
    except FhirError:
        return False


@lru_cache(maxsize=256)
def _matcher(criteria: Criteria) -> Matcher:
    return compile_matcher(criteria)


def _flush(matches: list[tuple[str, Event]], actions: list[Callable[[Matching], None]]) -> None:
    """Move the pending matches into one numbering action."""
    if not matches:
        return
    batch = list(matches)
    matches.clear()

    def apply(m: Matching) -> None:
        m.number(batch)

    actions.append(apply)


def _body(version: Version | None) -> dict[str, Any] | None:
    if version is None or version.body is None:
        return None
    body: dict[str, Any] = orjson.loads(version.body)
    return body


@lru_cache(maxsize=64)
def _condition(topic: Topic, which: str, ctx: SearchContext) -> Criteria:
    query = topic.current if which == "current" else topic.previous
    assert query is not None
    return parse_criteria_string(topic.type, query, ctx)


def _ended(end: str, now: int) -> bool:
    found = parse_fhir_range(end)
    return found is not None and found[0] <= now

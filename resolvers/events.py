"""Live call events: read from the call_events table, fanned out to every subscriber.

A call start or end writes its event as a row of call_events in its own transaction,
with the transaction's id; nothing is held until commit. Each process reads the events
committed since the snapshot it last read in, in one statement that also takes the new
snapshot (call_events_after()), and numbers them in the order read, without gaps, so
every subscriber of this process sees the same numbers. A snapshot of the active calls
is read in the same statement as a batch of events, numbered after the last of them, so
a subscriber gets a SNAPSHOT and then every later event exactly once, in commit order
(docs/live-events.md says why transaction id order is commit order wherever anyone
could tell). Reads are woken by a bare NOTIFY that the server making a change sends once
it has committed (wake_listeners), and happen every POLL_SECONDS anyway. The Listener
owns a dedicated LISTEN connection (never a pooled one) and checks it every few seconds;
after a reconnect the next read resumes from the last snapshot, so nothing is lost while
the events are kept (RETENTION_SECONDS); a process whose last read is older than what was
pruned resynchronises everyone. A slow client never delays the others: one that falls too
far behind is sent a fresh snapshot instead of a backlog.

Subscribers come in two kinds. A queued one (the general case) is a bounded queue read by
its own task, which turns each event into a message. A fed one belongs to a Feed: every
subscriber with the same document and variables sees the same bytes, so the Feed renders
each event once and hands the bytes to each subscriber's Sink, which writes them to its
socket at once: no task, no coroutine and no encoding per subscriber per event. It has no
task of its own once its first snapshot is sent: one is started only to resync it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from resolvers.errors import Unauthenticated
from sql.queries import QUERIES

log = logging.getLogger("callfloor.events")

# The wake-up: a bare NOTIFY after a change committed (the events are in the table).
CALL_CHANNEL = "call_events"
REVOKE_CHANNEL = "sessions_revoked"
# How often each process reads the events without a wake-up: a change made from psql, by
# another program or while the LISTEN connection was away reaches subscribers within this;
# an idle read is one index probe.
POLL_SECONDS = 1.0
# How long events are kept: far longer than a listener is away in a reconnect or a
# database restart; a process whose last read is older resynchronises its subscribers.
RETENTION_SECONDS = 600
# A read that takes longer is given up (a silent network); the next one resumes.
READ_TIMEOUT_SECONDS = 10.0
# How often a fed subscriber that fell behind checks whether its socket has drained.
DRAIN_POLL_SECONDS = 0.05


@dataclass(frozen=True, eq=False)
class CallEvent:
    """STARTED, ENDED or EXPIRED, as committed; or a SNAPSHOT of every active call."""

    type: str
    seq: int
    at: datetime
    active_call: dict[str, Any] | None = None
    outcome: str | None = None
    active_calls: list[dict[str, Any]] | None = None
    # The transaction that made the change (not for a SNAPSHOT).
    xid: int | None = None

    @classmethod
    def from_row(cls, data: dict[str, Any], seq: int) -> CallEvent:
        """A publish_call_event() payload with its transaction's id, numbered seq."""
        return cls(
            type=data["type"],
            seq=seq,
            at=datetime.fromisoformat(data["at"]),
            active_call=data["active_call"],
            outcome=data.get("outcome"),
            xid=int(data["xid"]),
        )

    def for_agent(self, agent_id: UUID | None) -> CallEvent | None:
        """The event as a subscriber narrowed to one agent sees it (None: not at all)."""
        if agent_id is None:
            return self
        wanted = str(agent_id)
        if self.active_calls is not None:
            calls = [call for call in self.active_calls if call["caller_id"] == wanted]
            return CallEvent(self.type, self.seq, self.at, active_calls=calls)
        if self.active_call is not None and self.active_call["caller_id"] == wanted:
            return self
        return None


class _Signal:
    """A marker put in a subscriber's queue instead of an event."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


RESYNC = _Signal("RESYNC")
REVOKED = _Signal("REVOKED")


class Sink(Protocol):
    """Where a fed subscriber's messages go: its socket, under its subscription's id."""

    @property
    def closed(self) -> bool:
        """Whether the socket is gone or closing: nothing more can be sent."""

    def write(self, body: bytes) -> bool:
        """Send one rendered message now; False when the socket is closed or too far behind."""

    def write_all(self, bodies: list[bytes]) -> bool:
        """Send rendered messages now, in one write; False as for write."""

    def backlog(self) -> int:
        """Bytes written but not yet taken by the operating system."""

    def end(self, error: Exception | None) -> None:
        """End the subscription on the socket (with the error, if any), as a subscription
        whose stream ended or failed ends."""


# An event rendered as its subscribers' message (the same bytes for every one of them).
Render = Callable[[CallEvent], "bytes | Awaitable[bytes]"]


@dataclass(frozen=True)
class Delivery:
    """How a fed subscriber's events reach it: the feed it shares (its key, and how to
    make its renderer should this subscriber be the first) and its own sink."""

    key: Hashable
    renderer: Callable[[], Render]
    sink: Sink


@dataclass(eq=False, slots=True)
class Subscriber:
    """One subscription: a bounded queue read by its own task, or a sink fed by a Feed."""

    user_id: UUID
    token_hash: str
    agent_id: UUID | None = None
    # The Hub's count of subscriptions when this one began: only a snapshot read after it
    # began can serve it (events before that were never queued for it).
    joined: int = 0
    queue: asyncio.Queue[CallEvent | _Signal] | None = None
    # Fed: the hub, feed and sink; events that arrive while a snapshot is on its way,
    # rendered (None once it is sent); the newest event number sent (older ones are not
    # sent again); whether a snapshot is on its way, and whether it may be too old.
    hub: Hub | None = None
    feed: Feed | None = None
    sink: Sink | None = None
    queue_size: int = 256
    pending: list[tuple[int, bytes]] | None = None
    seen: int = -1
    sending: bool = False
    stale: bool = False
    revoked: bool = False
    # Fed: attach() returned; from then on only the Hub serves it.
    attached: bool = False

    def offer(self, item: CallEvent | _Signal) -> None:
        """Queue without ever waiting; a full queue is replaced by one RESYNC."""
        assert self.queue is not None
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.reset(RESYNC)

    def reset(self, signal: _Signal) -> None:
        """Drop what is queued and queue the signal alone (fed: buffer events from now
        on and send a fresh snapshot, or end the subscription)."""
        if self.queue is None:
            assert self.hub is not None
            self.hub.reset_fed(self, signal)
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(signal)

    def send(self, batch: list[tuple[int, bytes]], bodies: list[bytes]) -> None:
        """Rendered events from the Feed (their numbers and messages): to the socket now,
        or buffered while a snapshot is on its way; a socket too far behind is resynced
        instead."""
        pending = self.pending
        if pending is not None:
            if len(pending) + len(batch) <= self.queue_size:
                pending.extend(batch)
            else:
                # Events were dropped: the snapshot being read may be older than them.
                pending.clear()
                self.stale = True
            return
        seen = self.seen
        if batch[-1][0] <= seen:
            return
        if batch[0][0] <= seen:  # some were in its snapshot
            bodies = [body for seq, body in batch if seq > seen]
        self.seen = batch[-1][0]
        assert self.sink is not None
        if not self.sink.write_all(bodies):
            self.reset(RESYNC)


class HubObserver:
    """What the Hub tells whoever watches it (the metrics); this one listens to nothing."""

    def opened(self) -> None:
        """A subscription began."""

    def closed(self) -> None:
        """A subscription ended."""

    def resynced(self) -> None:
        """A subscriber is to be sent a fresh snapshot in place of events it may miss."""

    def delivered(self, at: datetime) -> None:
        """An event committed at `at` was written to the subscribers of one document."""


@dataclass(eq=False)
class Feed:
    """The fed subscribers of one document and set of variables: each event is rendered
    once, and the same bytes go to every one of them, in the order of the events."""

    key: Hashable
    render: Render
    agent_id: UUID | None
    subscribers: dict[Subscriber, None] = field(default_factory=dict)
    _backlog: deque[CallEvent] = field(default_factory=deque)
    _worker: asyncio.Task[None] | None = None
    # The Hub's renderings of its current snapshot, by feed key (they outlive a feed, so
    # subscribers who come and go one at a time share them too).
    snapshots: dict[Hashable, tuple[CallEvent, asyncio.Future[bytes], Render]] = field(
        default_factory=dict
    )
    _outbox: list[tuple[int, bytes]] = field(default_factory=list)
    # When each event in the outbox was committed.
    _outbox_at: list[datetime] = field(default_factory=list)
    observer: HubObserver = field(default_factory=HubObserver)

    def publish(self, event: CallEvent) -> None:
        """Render the event and send it to every subscriber (rendering that has to wait
        for the database goes on in a task, in order)."""
        narrowed = event.for_agent(self.agent_id)
        if narrowed is None:
            return
        if self._worker is not None:
            self._backlog.append(narrowed)
            return
        body = self._render(narrowed)
        if isinstance(body, bytes):
            self.deliver(narrowed, body)
        elif body is not None:
            self._worker = asyncio.ensure_future(self._drain(narrowed, body))

    def deliver(self, event: CallEvent, body: bytes) -> None:
        """The rendered event to every subscriber, as soon as the events that arrived with
        it are rendered too: a socket is written once for all of them, so when events come
        faster than one is fanned out, the sends (most of the cost) are shared."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append((event.seq, body))
        self._outbox_at.append(event.at)

    def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        committed, self._outbox_at = self._outbox_at, []
        bodies = [body for _, body in batch]
        for subscriber in list(self.subscribers):
            subscriber.send(batch, bodies)
        for at in committed:
            self.observer.delivered(at)

    async def _drain(self, event: CallEvent, body: Awaitable[bytes]) -> None:
        try:
            while True:
                try:
                    self.deliver(event, await body)
                except Exception as error:
                    log.error("could not render call event %d: %r", event.seq, error)
                if not self._backlog:
                    return
                event = self._backlog.popleft()
                rendered = self._render(event)
                if isinstance(rendered, bytes):
                    self.deliver(event, rendered)
                    continue
                if rendered is None:
                    continue
                body = rendered
        finally:
            self._worker = None

    def _render(self, event: CallEvent) -> bytes | Awaitable[bytes] | None:
        try:
            return self.render(event)
        except Exception as error:
            log.error("could not render call event %d: %r", event.seq, error)
            return None

    async def render_snapshot(self, snapshot: CallEvent) -> bytes:
        """A snapshot rendered for this feed, once however many subscribers ask for it."""
        rendered = self.snapshots.get(self.key)
        if rendered is None or rendered[0] is not snapshot:
            if any(other is not snapshot for other, _, _ in self.snapshots.values()):
                self.snapshots.clear()  # renderings of older snapshots serve no one
            narrowed = snapshot.for_agent(self.agent_id)
            assert narrowed is not None
            future = asyncio.ensure_future(_awaited(self.render(narrowed)))
            # The renderer is kept with it: the key names its document while it lives.
            rendered = self.snapshots[self.key] = (snapshot, future, self.render)
        return await asyncio.shield(rendered[1])


async def _awaited(value: bytes | Awaitable[bytes]) -> bytes:
    return value if isinstance(value, bytes) else await value


@dataclass
class Hub:
    """Numbers the events of this process, fans them out to its subscribers and shares
    snapshots between them."""

    pool: asyncpg.Pool
    queue_size: int = 256
    observer: HubObserver = field(default_factory=HubObserver)
    read_timeout: float = READ_TIMEOUT_SECONDS
    subscribers: set[Subscriber] = field(default_factory=set)
    feeds: dict[Hashable, Feed] = field(default_factory=dict)
    last_seq: int = 0
    # The snapshot the last read took (pg_snapshot's text): the next reads from there;
    # and the database run it was taken on (call_events_after()'s origin).
    read_snapshot: str | None = None
    read_origin: str | None = None
    _joined: int = 0
    _reader: asyncio.Task[None] | None = None
    _read_again: bool = False
    # Snapshots of the active calls asked for: the next read takes one.
    _snapshot_waiters: list[asyncio.Future[CallEvent]] = field(default_factory=list)
    _snapshot: CallEvent | None = None
    _snapshot_task: asyncio.Task[CallEvent] | None = None
    _snapshot_covers: int = 0
    _snapshot_after: int = 0
    _sockets: dict[str, weakref.WeakSet[Any]] = field(default_factory=dict)
    _closing: set[asyncio.Future[None]] = field(default_factory=set)
    _resyncing: set[asyncio.Future[None]] = field(default_factory=set)
    _rendered_snapshots: dict[Hashable, tuple[CallEvent, asyncio.Future[bytes], Render]] = field(
        default_factory=dict
    )

    def wake(self) -> None:
        """Read the events committed since the last read: now, or once the read in flight
        is done (wake-ups meanwhile make one more read, not one each)."""
        self._read_again = True
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read_events())

    async def _read_events(self) -> None:
        try:
            while self._read_again:
                self._read_again = False
                waiters, self._snapshot_waiters = self._snapshot_waiters, []
                try:
                    row = await self.pool.fetchrow(
                        QUERIES["call_events_after"],
                        self.read_snapshot,
                        bool(waiters),
                        timeout=self.read_timeout,
                    )
                    assert row is not None
                except Exception as error:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(error)
                    # The next wake-up or poll reads again from the same snapshot.
                    log.warning("could not read call events: %r", error)
                    return
                self._read(row, waiters)
        finally:
            self._reader = None

    def _read(self, row: asyncpg.Record, waiters: list[asyncio.Future[CallEvent]]) -> None:
        """Publish a read's events in order, then answer the snapshots asked for: they
        show exactly the events up to the last of them."""
        self.read_snapshot = row["snapshot"]
        origin, self.read_origin = self.read_origin, row["origin"]
        if origin is not None and origin != row["origin"]:
            # Restarted, failed over or replaced: the last snapshot may mean nothing here.
            log.warning("the database is not the one last read; resynchronising")
            self.resync_all()
        elif row["missed"]:
            log.warning("call events were pruned before they were read; resynchronising")
            self.resync_all()
        else:
            for data in row["events"]:
                self.publish(CallEvent.from_row(data, self.last_seq + 1))
        if waiters:
            snapshot = CallEvent(
                type="SNAPSHOT",
                seq=self.last_seq,
                at=datetime.now().astimezone(),
                active_calls=list(row["calls"]),
            )
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(snapshot)

    def publish(self, event: CallEvent) -> None:
        """Hand a numbered event to every subscriber: rendered once per feed and written
        to each fed subscriber's socket, or queued for each queued one."""
        self.last_seq = max(self.last_seq, event.seq)
        for feed in list(self.feeds.values()):
            feed.publish(event)
        for subscriber in list(self.subscribers):
            if subscriber.queue is not None:
                subscriber.offer(event)

    def resync_all(self) -> None:
        """Events may have been lost: every subscriber starts again from a snapshot."""
        # Neither the last snapshot nor one being read may show what was lost.
        self._snapshot = self._snapshot_task = None
        for subscriber in list(self.subscribers):
            subscriber.reset(RESYNC)

    def revoke(self, *, token_hash: str | None = None, user_id: str | None = None) -> None:
        """End the subscriptions and sockets of a revoked token or a deactivated user."""
        for subscriber in list(self.subscribers):
            if subscriber.token_hash == token_hash or str(subscriber.user_id) == user_id:
                subscriber.reset(REVOKED)
        for key in (token_hash, user_id):
            for socket in list(self._sockets.pop(key or "", ())):
                task = asyncio.ensure_future(_close_quietly(socket))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def track_socket(self, token_hash: str, user_id: UUID, socket: Any) -> None:
        """Remember a WebSocket so revoking its token closes it (forgotten once collected)."""
        for key in (token_hash, str(user_id)):
            self._sockets.setdefault(key, weakref.WeakSet()).add(socket)
        for key in [key for key, sockets in self._sockets.items() if not sockets]:
            del self._sockets[key]

    async def snapshot(self) -> CallEvent:
        """Every active call, current as of the newest event this process has seen.

        One query serves every subscriber that asks at about the same time (after a
        reconnect, thousands do); a cached snapshot is reused only while no newer event
        has arrived, so it never hides an event from a new subscriber.
        """
        return await self._snapshot_for(self._joined)

    async def _snapshot_for(self, joined: int, after_seq: int = 0) -> CallEvent:
        """A snapshot that can serve a subscriber who joined as the joined-th and has been
        sent every event up to after_seq (it must show them all)."""
        if self._snapshot is not None and self._snapshot.seq >= self.last_seq:
            return self._snapshot
        # A read that began before the subscriber joined (or before after_seq) may show
        # less than the events queued for it: start another.
        if (
            self._snapshot_task is None
            or self._snapshot_covers < joined
            or self._snapshot_after < after_seq
        ):
            task = asyncio.ensure_future(self._fetch_snapshot())
            task.add_done_callback(self._snapshot_done)
            self._snapshot_task, self._snapshot_covers = task, self._joined
            self._snapshot_after = self.last_seq
        return await asyncio.shield(self._snapshot_task)

    def _snapshot_done(self, task: asyncio.Task[CallEvent]) -> None:
        if self._snapshot_task is not task:
            return  # superseded by a newer read
        self._snapshot_task = None
        if not task.cancelled() and task.exception() is None:
            self._snapshot = task.result()

    async def _fetch_snapshot(self) -> CallEvent:
        """The active calls, read in the same statement as a batch of events."""
        waiter: asyncio.Future[CallEvent] = asyncio.get_running_loop().create_future()
        self._snapshot_waiters.append(waiter)
        self.wake()
        return await waiter

    @contextlib.asynccontextmanager
    async def subscription(
        self, user_id: UUID, token_hash: str, agent_id: UUID | None = None
    ) -> AsyncIterator[AsyncIterator[CallEvent]]:
        """Subscribe for the duration of the block; yields the event stream."""
        self._joined += 1
        subscriber = Subscriber(
            queue=asyncio.Queue(self.queue_size),
            user_id=user_id,
            token_hash=token_hash,
            agent_id=agent_id,
            joined=self._joined,
        )
        # Subscribe before reading the snapshot, so nothing committed in between is lost.
        self.subscribers.add(subscriber)
        self.observer.opened()
        try:
            yield self._stream(subscriber)
        finally:
            self.subscribers.discard(subscriber)
            self.observer.closed()

    async def _stream(self, subscriber: Subscriber) -> AsyncIterator[CallEvent]:
        assert subscriber.queue is not None
        item: CallEvent | _Signal = RESYNC
        seen = -1
        while True:
            if item is REVOKED:
                raise Unauthenticated("The session was signed out")
            if item is RESYNC:
                snapshot = await self._snapshot_for(subscriber.joined)
                seen = snapshot.seq
                narrowed = snapshot.for_agent(subscriber.agent_id)
                assert narrowed is not None
                yield narrowed
            elif isinstance(item, CallEvent) and item.seq > seen:
                seen = item.seq
                event = item.for_agent(subscriber.agent_id)
                if event is not None:
                    yield event
            item = await subscriber.queue.get()

    async def attach(
        self, user_id: UUID, token_hash: str, agent_id: UUID | None, delivery: Delivery
    ) -> Callable[[], None]:
        """Subscribe a sink, send its first snapshot, and from then on feed it from here
        alone: no task of its own waits for its events. Returns what ends it."""
        self._joined += 1
        subscriber = Subscriber(
            user_id=user_id,
            token_hash=token_hash,
            agent_id=agent_id,
            joined=self._joined,
            hub=self,
            sink=delivery.sink,
            queue_size=self.queue_size,
            pending=[],
            sending=True,
        )
        feed = self.feeds.get(delivery.key)
        if feed is None:
            rendered = self._rendered_snapshots.get(delivery.key)
            render = rendered[2] if rendered is not None else delivery.renderer()
            feed = Feed(
                delivery.key,
                render,
                agent_id,
                snapshots=self._rendered_snapshots,
                observer=self.observer,
            )
            self.feeds[delivery.key] = feed
        subscriber.feed = feed
        # Subscribe before reading the snapshot, so nothing committed in between is lost.
        feed.subscribers[subscriber] = None
        self.subscribers.add(subscriber)
        self.observer.opened()
        try:
            await self._send_snapshots(subscriber)
            if subscriber.revoked:
                raise Unauthenticated("The session was signed out")
        except BaseException:
            self.detach(subscriber)
            raise
        finally:
            subscriber.sending = False
        subscriber.attached = True
        return lambda: self.detach(subscriber)

    def detach(self, subscriber: Subscriber) -> None:
        """Forget a fed subscriber: nothing more is sent to it."""
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
            self.observer.closed()
        subscriber.pending = None
        feed = subscriber.feed
        if feed is not None:
            feed.subscribers.pop(subscriber, None)
            if not feed.subscribers and self.feeds.get(feed.key) is feed:
                del self.feeds[feed.key]

    def reset_fed(self, subscriber: Subscriber, signal: _Signal) -> None:
        """A fed subscriber fell behind or may have missed events (RESYNC), or was
        revoked: resync it from a task of its own while that lasts, or end it."""
        sink = subscriber.sink
        assert sink is not None
        if subscriber.revoked:
            return
        if signal is REVOKED:
            subscriber.revoked = True
            self.detach(subscriber)
            if subscriber.attached:
                sink.end(Unauthenticated("The session was signed out"))
            return  # else attach() raises once its snapshot is read
        # Whatever was buffered is superseded by the snapshot to come, which must show
        # every event so far.
        subscriber.pending, subscriber.stale = [], True
        if subscriber.sending or sink.closed:
            return
        subscriber.sending = True
        self.observer.resynced()
        task = asyncio.ensure_future(self._resync(subscriber))
        self._resyncing.add(task)
        task.add_done_callback(self._resyncing.discard)

    async def _resync(self, subscriber: Subscriber) -> None:
        sink = subscriber.sink
        assert sink is not None
        try:
            await self._send_snapshots(subscriber)
        except Exception as error:
            log.warning("could not resync a subscriber: %r", error)
            self.detach(subscriber)
            sink.end(error)
        finally:
            subscriber.sending = False

    async def _send_snapshots(self, subscriber: Subscriber) -> None:
        """Until the subscriber is current: wait for its socket to drain, then send a
        snapshot and the events buffered meanwhile."""
        sink, feed = subscriber.sink, subscriber.feed
        assert sink is not None
        assert feed is not None
        while subscriber.pending is not None and not subscriber.revoked:
            # A socket that fell behind gets its snapshot once it has drained (a
            # transport tells no one when its buffer empties: ask).
            while sink.backlog() and not sink.closed:  # noqa: ASYNC110
                await asyncio.sleep(DRAIN_POLL_SECONDS)
            if sink.closed:
                return
            subscriber.stale = False
            # It has been sent every event so far, or they are lost: the snapshot must
            # show them all.
            snapshot = await self._snapshot_for(subscriber.joined, self.last_seq)
            body = await feed.render_snapshot(snapshot)
            pending = subscriber.pending
            if subscriber.stale or pending is None or subscriber.revoked:
                continue  # events were dropped meanwhile: read a newer one
            subscriber.pending = None
            subscriber.seen = snapshot.seq
            if not sink.write(body):
                subscriber.pending, subscriber.stale = [], True
                continue
            if pending:
                subscriber.send(pending, [event for _, event in pending])


async def _close_quietly(socket: Any) -> None:
    """Close a WebSocket with 4403; it may already be gone."""
    with contextlib.suppress(Exception):
        await socket.close(code=4403, reason="Session revoked")


@dataclass
class Listener:
    """The process's one LISTEN connection, kept alive and re-established with backoff,
    and the poll that reads the events every poll_interval whether woken or not."""

    url: str
    hub: Hub
    health_interval: float = 2.0
    max_backoff: float = 5.0
    poll_interval: float = POLL_SECONDS
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    connection: asyncpg.Connection | None = None
    reconnects: int = 0

    async def run(self) -> None:
        """Listen and poll until cancelled; after a reconnect, read what was missed."""
        poll = asyncio.create_task(self._poll(), name="call-event-poll")
        try:
            await self._listen()
        finally:
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            self.hub.wake()
            await asyncio.sleep(self.poll_interval)

    async def _listen(self) -> None:
        backoff = 0.1
        first = True
        while True:
            lost = asyncio.Event()
            try:
                self.connection = await asyncpg.connect(self.url, timeout=5)
                self.connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await self.connection.add_listener(CALL_CHANNEL, self._on_call_event)
                await self.connection.add_listener(REVOKE_CHANNEL, self._on_revoke)
                if not first:
                    self.reconnects += 1
                    # Wake-ups sent while it was away are lost, the events are not: the
                    # next read resumes from the last snapshot read.
                    log.warning("listener reconnected; reading the events missed meanwhile")
                    self.hub.wake()
                first = False
                backoff = 0.1
                self.connected.set()
                await self._watch(lost)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("listener connection failed: %r; retrying in %.1fs", error, backoff)
            finally:
                self.connected.clear()
                await self._close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _watch(self, lost: asyncio.Event) -> None:
        """Return when the connection is gone; a silent network cut fails the health query."""
        assert self.connection is not None
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self.health_interval)
                return
            await self.connection.fetchval("SELECT 1", timeout=self.health_interval)

    async def _close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), 2)
            except Exception:
                connection.terminate()

    def _on_call_event(self, _connection: Any, _pid: int, _channel: str, _payload: object) -> None:
        self.hub.wake()

    def _on_revoke(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        data = json.loads(str(payload))
        self.hub.revoke(token_hash=data.get("token_hash"), user_id=data.get("user_id"))


async def wake_listeners(database: asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy) -> None:
    """Wake every server's reader: call once a change that published call events has
    committed, never inside its transaction (there it would hold PostgreSQL's notify lock
    until the commit is flushed). Never raises: the change is committed whatever happens
    here, and a lost wake-up only delays its events to the next poll."""
    try:
        await database.execute(QUERIES["wake_listeners"])
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        # How asyncpg reports a connection its server dropped mid-use (a restart).
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    ) as error:
        log.warning("could not wake the listeners: %r", error)


async def prune_call_events(pool: asyncpg.Pool, keep_seconds: float = RETENTION_SECONDS) -> int:
    """Delete the call events older than keep_seconds; how many (safe on every replica)."""
    return int(await pool.fetchval(QUERIES["prune_call_events"], keep_seconds))

"""`MemorySessionStore`: sessions in a dict, for tests, notebooks and single-process apps.

A test double that behaves like the real backends: it keeps what they keep — the encoded record,
encoded history rows and scope rows — in dicts, with a per-user index, an expiry heap and an
optional `max_sessions`. A caller mutating a returned `Session` changes nothing until it saves,
and a value that cannot be encoded (or is too large) fails here exactly as it would on Redis or
PostgreSQL, because every save goes through the same checks and encoding in `SessionStore`.
"""

from __future__ import annotations

import heapq
import threading
from bisect import bisect_left, bisect_right
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from .. import search
from ..errors import SessionNotFound
from .base import SearchQuery, SearchRow, SessionStore
from .primitives import ErasureReport, HistoryRow, ScopeChange, SessionWrite, StoredSession, raise_conflict

__all__ = ["MemorySessionStore"]


@dataclass(slots=True)
class _Row:
    """One history row; its terms (the memory store's search index) are counted at its first
    search, not at every save (counting took 23 us a save, 15% of a memory-store turn)."""

    seq: int
    payload: bytes
    timestamp: float
    type: str
    text: str
    counted: Counter[str] | None = None

    @classmethod
    def of(cls, row: HistoryRow) -> _Row:
        return cls(row.seq, row.payload, row.timestamp, row.type, row.text)

    def terms(self) -> Counter[str]:
        """How often each term occurs in the row (`search.term_counts`), counted once."""
        if self.counted is None:
            self.counted = search.term_counts(self.type, self.text)
        return self.counted


@dataclass(slots=True)
class _Entry:
    user_id: str | None
    version: int
    last_accessed_at: float
    expiry_at: float | None
    record: bytes
    #: Oldest first.
    history: deque[_Row] = field(default_factory=deque)
    history_seq: int = 0
    #: The earliest expiry among this entry's pairs in the expiry heap (None: no pair); never
    #: later than `expiry_at` while that is set (see `MemorySessionStore._push_expiry`).
    heap_at: float | None = None

    def live(self, now: float) -> bool:
        return self.expiry_at is None or self.expiry_at > now


class MemorySessionStore(SessionStore):
    """In-memory session store.

    `max_sessions` bounds the number of sessions kept; when full, the least recently saved
    session is evicted to make room (as a cache would). Thread-safe.
    """

    def __init__(self, *, max_sessions: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        if max_sessions is not None and max_sessions <= 0:
            raise ValueError("max_sessions must be > 0")
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        self._expiries: list[tuple[float, str]] = []  # lazy heap: stale pairs are skipped
        self._user_scopes: dict[str, dict[str, bytes]] = {}
        self._app_scope: dict[str, bytes] = {}
        self._lock = threading.Lock()
        #: Every id in ascending order, for `list_page`; ids of deleted sessions leave it lazily.
        self._order: list[str] = []

    @property
    def sessions(self) -> dict[str, Any]:
        """Read-only view of the stored ids."""
        return dict.fromkeys(self._sessions)

    def _stored(self, sid: str, entry: _Entry) -> StoredSession:
        """What the backends return for `entry`: its recent history window and scope rows
        (copies: a save may change them once the lock is released)."""
        window = self.history_window
        recent = list(islice(reversed(entry.history), window)) if window else []
        recent.reverse()
        user_rows = None if entry.user_id is None else self._user_scopes.get(entry.user_id)
        return StoredSession(
            session_id=sid,
            user_id=entry.user_id,
            version=entry.version,
            last_accessed_at=entry.last_accessed_at,
            expiry_at=entry.expiry_at,
            record=entry.record,
            history=[row.payload for row in recent],
            history_seq=entry.history_seq,
            user_scope=dict(user_rows) if user_rows else {},
            app_scope=dict(self._app_scope),
        )

    async def load_record(self, session_id: str, now: float) -> StoredSession | None:
        with self._lock:
            entry = self._sessions.get(session_id)
            return self._stored(session_id, entry) if entry is not None and entry.live(now) else None

    async def write(self, write: SessionWrite, now: float) -> None:
        sid = write.session_id
        with self._lock:
            entry = self._sessions.get(sid)
            if write.expected_version == 0:
                if entry is not None:
                    raise raise_conflict(sid)
                self._evict_if_full()
                entry = _Entry(None, 0, write.last_accessed_at, write.expiry_at, write.record)
                self._sessions[sid] = entry
                self._add_to_order(sid)
            else:
                if entry is None or not entry.live(now):
                    raise SessionNotFound("the session was deleted or has expired; it is not re-created")
                if entry.version != write.expected_version:
                    raise raise_conflict(sid)
                if self.max_sessions is not None:
                    self._sessions.move_to_end(sid)  # eviction order: least recently saved first
            if entry.user_id != write.user_id:
                self._unindex(sid, entry)
                if write.user_id is not None:
                    self._by_user.setdefault(write.user_id, set()).add(sid)
            entry.user_id = write.user_id
            entry.version = write.new_version
            entry.last_accessed_at = write.last_accessed_at
            entry.expiry_at = write.expiry_at
            entry.record = write.record
            entry.history.extend(map(_Row.of, write.history))
            entry.history_seq = write.history_seq
            floor = write.history_seq - write.max_history
            while entry.history and entry.history[0].seq <= floor:
                entry.history.popleft()
            self._push_expiry(entry, write.expiry_at, sid)
            if write.user_scope is not None or write.app_scope is not None:
                self._apply_scopes([c for c in (write.user_scope, write.app_scope) if c is not None])

    def _add_to_order(self, sid: str) -> None:
        order = self._order
        at = bisect_left(order, sid)
        if at == len(order) or order[at] != sid:
            order.insert(at, sid)
        if len(order) > 2 * len(self._sessions) + 64:  # mostly deleted ids: rebuild, O(n) amortised
            self._order = sorted(self._sessions)

    def _evict_if_full(self) -> None:
        if self.max_sessions is None:
            return
        while len(self._sessions) >= self.max_sessions:
            sid, entry = self._sessions.popitem(last=False)
            self._unindex(sid, entry)

    def _unindex(self, sid: str, entry: _Entry) -> None:
        if entry.user_id is not None:
            ids = self._by_user.get(entry.user_id)
            if ids is not None:
                ids.discard(sid)
                if not ids:
                    del self._by_user[entry.user_id]

    def _apply_scopes(self, changes: list[ScopeChange]) -> None:
        for change in changes:
            target = self._app_scope if change.kind == "app" else self._user_scopes.setdefault(change.owner, {})
            target.update(change.sets)
            for key in change.deletes:
                target.pop(key, None)
            if change.kind == "user" and not target:
                self._user_scopes.pop(change.owner, None)

    async def delete_record(self, session_id: str) -> bool:
        return self._delete(session_id, None)

    async def delete_if_version(self, session_id: str, version: int) -> bool:
        return self._delete(session_id, version)

    def _delete(self, session_id: str, version: int | None) -> bool:
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None or (version is not None and entry.version != version):
                return False
            del self._sessions[session_id]
            self._unindex(session_id, entry)
            return True

    async def touch_record(self, session_id: str, last_accessed_at: float, expiry_at: float | None, now: float) -> bool:
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None or not entry.live(now):
                return False
            entry.last_accessed_at = max(entry.last_accessed_at, last_accessed_at)
            # A late touch never shortens an expiry a newer save or touch has set.
            if expiry_at is None or entry.expiry_at is None or expiry_at > entry.expiry_at:
                entry.expiry_at = expiry_at
                self._push_expiry(entry, expiry_at, session_id)
            return True

    def _push_expiry(self, entry: _Entry, expiry_at: float | None, session_id: str) -> None:
        """Make sure the heap holds a pair for `entry` no later than `expiry_at`.

        A save usually moves the expiry later: the entry's earlier pair then stays and nothing
        is pushed; when that pair's time comes, cleanup finds the entry live and pushes its
        current expiry instead (`delete_expired`). So every entry with an expiry has a pair
        at `heap_at` <= its expiry, and is found once it expires.
        """
        if expiry_at is None:
            return
        heap_at = entry.heap_at
        if heap_at is not None and heap_at <= expiry_at:
            return
        entry.heap_at = expiry_at
        heapq.heappush(self._expiries, (expiry_at, session_id))
        # Stale pairs only leave when their time comes: compact once they outnumber the live
        # sessions, so the heap stays O(sessions).
        if len(self._expiries) > 2 * len(self._sessions) + 64:
            self._compact_expiries()

    def _compact_expiries(self) -> None:
        pairs = []
        for sid, e in self._sessions.items():
            e.heap_at = e.expiry_at
            if e.expiry_at is not None:
                pairs.append((e.expiry_at, sid))
        heapq.heapify(pairs)
        self._expiries = pairs

    async def scope_rows(self, user_id: str | None) -> tuple[dict[str, bytes], dict[str, bytes]]:
        with self._lock:
            user = dict(self._user_scopes.get(user_id, {})) if user_id is not None else {}
            return user, dict(self._app_scope)

    async def write_scope_rows(self, changes: list[ScopeChange]) -> None:
        with self._lock:
            self._apply_scopes(changes)

    async def iter_scope_rows(self) -> AsyncIterator[ScopeChange]:
        with self._lock:
            scopes = [ScopeChange("user", uid, dict(v)) for uid, v in self._user_scopes.items() if v]
            if self._app_scope:
                scopes.append(ScopeChange("app", "", dict(self._app_scope)))
        for change in scopes:
            yield change

    async def history_page(
        self, session_id: str, limit: int, before_seq: int | None, now: float
    ) -> list[tuple[int, bytes]] | None:
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None or not entry.live(now):
                return None
            return [(r.seq, r.payload) for r in entry.history if before_seq is None or r.seq < before_seq][-limit:]

    async def user_session_ids(self, user_id: str, now: float) -> list[str]:
        with self._lock:
            ids = self._by_user.get(user_id, set())
            return [sid for sid in ids if (e := self._sessions.get(sid)) is not None and e.live(now)]

    async def list_page(self, user_id: str | None, limit: int, after: str | None, now: float) -> list[str]:
        with self._lock:
            # A user's ids are sorted per call (a user has few sessions); all ids are kept sorted.
            order = self._order if user_id is None else sorted(self._by_user.get(user_id, ()))
            at = 0 if after is None else bisect_right(order, after)
            found: list[str] = []
            while at < len(order) and len(found) < limit:
                sid = order[at]
                entry = self._sessions.get(sid)
                if entry is None and user_id is None:
                    del order[at]  # deleted since it was listed: leaves the order now
                    continue
                at += 1
                if entry is not None and entry.live(now):
                    found.append(sid)
            return found

    async def scan_records(self, batch_size: int, now: float) -> AsyncIterator[list[StoredSession]]:
        with self._lock:
            ids = list(self._sessions)
        for start in range(0, len(ids), batch_size):
            with self._lock:
                batch = [
                    self._stored(sid, e)
                    for sid in ids[start : start + batch_size]
                    if (e := self._sessions.get(sid)) is not None and e.live(now)
                ]
            yield batch

    async def delete_expired(self, now: float, batch_size: int) -> int:
        removed = 0
        while True:
            with self._lock:
                done = 0
                while self._expiries and self._expiries[0][0] <= now and done < batch_size:
                    at, sid = heapq.heappop(self._expiries)
                    done += 1
                    entry = self._sessions.get(sid)
                    # Only an entry's earliest pair counts (others are stale: skipped). If the
                    # entry is still live, its expiry moved on since: it gets a pair for that.
                    if entry is None or entry.heap_at != at:
                        continue
                    if entry.live(now):
                        entry.heap_at = None
                        self._push_expiry(entry, entry.expiry_at, sid)
                    else:
                        del self._sessions[sid]
                        self._unindex(sid, entry)
                        removed += 1
                if not self._expiries or self._expiries[0][0] > now:
                    return removed

    async def search(self, query: SearchQuery, now: float) -> list[SearchRow]:
        """BM25 in Python over the rows of the sessions in scope (the statistics come from those
        rows, before the `types` / `since` filters), tokenised as FTS5 does (`search.tokenize`)."""
        uid, sid = query.user_id, query.session_id
        with self._lock:
            ids = [sid] if sid is not None else sorted(self._by_user.get(uid, ())) if uid is not None else []
            rows: list[tuple[str, _Row]] = []
            for one in ids:
                entry = self._sessions.get(one)
                if entry is not None and entry.live(now) and (uid is None or entry.user_id == uid):
                    rows.extend((one, row) for row in entry.history)
        scores = search.bm25(query.terms, [row.terms() for _, row in rows])
        hits = [
            (score, sid_, row)
            for score, (sid_, row) in zip(scores, rows, strict=True)
            if score > 0
            and (query.types is None or row.type in query.types)
            and (query.since is None or row.timestamp >= query.since)
        ]
        hits.sort(key=lambda hit: (-hit[0], -hit[2].timestamp, -hit[2].seq))
        return [
            SearchRow(sid_, row.seq, row.payload, score, search.highlight(row.text, query.terms))
            for score, sid_, row in hits[: query.limit]
        ]

    async def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""
        return

    async def erase_user(self, user_id: str, now: float) -> ErasureReport:
        """One step under the lock: the user's sessions (from the per-user index), their
        expiry-heap pairs (the heap is rebuilt without them) and the user scope."""
        with self._lock:
            ids = self._by_user.pop(user_id, set())
            gone = [entry for sid in ids if (entry := self._sessions.pop(sid, None)) is not None]
            if any(entry.heap_at is not None for entry in gone):
                self._expiries = [pair for pair in self._expiries if pair[1] not in ids]
                heapq.heapify(self._expiries)
            if ids:  # the listing order keeps deleted ids lazily: an erase leaves none
                self._order = [sid for sid in self._order if sid not in ids]
            scope = self._user_scopes.pop(user_id, {})
            return ErasureReport(len(gone), sum(len(entry.history) for entry in gone), len(scope))

    def contents(self) -> list[tuple[str, bytes]]:
        """Everything the store holds, as ``(where, bytes)`` pairs: session ids, user ids,
        records, history rows and their searchable text, index and expiry-heap entries, scope
        owners, keys and values, the listing order. For audits and tests that check at the raw
        level what is left (after `erase_user`)."""
        with self._lock:
            out = [("heap", sid.encode()) for _, sid in self._expiries]
            out += [("listing", sid.encode()) for sid in self._order]
            for sid, entry in self._sessions.items():
                out += [("session", sid.encode()), ("record", entry.record)]
                out += [("user", entry.user_id.encode())] if entry.user_id is not None else []
                for row in entry.history:  # the payload and its searchable text
                    out += [("history", row.payload), ("history", row.text.encode())]
            for uid, ids in self._by_user.items():
                out += [("index", uid.encode()), *(("index", sid.encode()) for sid in ids)]
            for owner, rows in [*self._user_scopes.items(), ("", self._app_scope)]:
                out += [("scope", owner.encode()), *(("scope", k.encode() + b"=" + v) for k, v in rows.items())]
            return out

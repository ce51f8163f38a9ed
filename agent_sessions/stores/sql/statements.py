"""Every statement the SQL store runs, built once per dialect and compiled by SQLAlchemy.

Statements are SQLAlchemy Core constructs (the PostgreSQL save is `text()`: see `save`)
compiled once with the engine's dialect to the driver's SQL and parameter order (`Statement`),
so running one is a call on the driver with a tuple of values. Beside them, the values they bind
(`write_params`, `save_params`, `history_rows`, `scope_change_rows`, `scope_arrays`: a
`SessionWrite` as the statements' parameters) and the reading of the rows the loads return
(`assemble`).

Invariant the reads rely on: a session's history ``seq`` values are contiguous (saves number new
entries from the stored ``history_seq``; trimming drops a prefix), so the recent window of a
session is ``seq > history_seq - window``.
"""

# SQL text is assembled only from table names SQLAlchemy quoted; values are always bound.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ClauseElement,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from ..primitives import ScopeChange, SessionWrite, StoredSession
from .schema import Tables

__all__ = [
    "Statement",
    "Statements",
    "assemble",
    "history_rows",
    "save_params",
    "scope_arrays",
    "scope_change_rows",
    "write_params",
]

b = bindparam


@dataclass(frozen=True, slots=True)
class Statement:
    """One compiled statement: the driver's SQL and the names of its parameters, in order."""

    sql: str
    names: tuple[str, ...]
    #: Values SQLAlchemy bound itself (SQLite's ``OFFSET 0`` after a ``LIMIT``).
    defaults: Mapping[str, Any]

    @classmethod
    def compile(cls, construct: ClauseElement, dialect: Dialect) -> Statement:
        compiled = construct.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # every statement here is a SQL statement
        names = tuple(compiled.positiontup or ())
        return cls(compiled.string, names, {k: v for k, v in compiled.params.items() if v is not None})

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(params[name] if name in params else self.defaults[name] for name in self.names)


def _tag(n: int) -> Any:
    return literal_column(str(n))


class Statements:
    """The store's statements for one dialect and one set of tables."""

    def __init__(self, tables: Tables, dialect: Dialect) -> None:
        self.postgres = postgres = dialect.name == "postgresql"
        self._dialect = dialect
        self._tables = tables
        s, h, sc = tables.sessions.c, tables.history.c, tables.scopes.c
        c = self._compile
        live = or_(s.expiry_at.is_(None), s.expiry_at > b("now"))
        user_kind: Any = literal_column("'user'")
        app_kind: Any = literal_column("'app'")
        app_rows = (sc.kind == app_kind, sc.owner == literal_column("''"))

        # A get: the record, its recent history window and its scopes, in one statement.
        window = (
            select(h.session_id, h.seq, h.payload)
            .where(h.session_id == b("id"))
            .order_by(h.seq.desc())
            .limit(b("window"))
            .subquery("w")
        )
        owner = select(s.user_id).where(s.session_id == b("id")).scalar_subquery()
        record = (s.user_id, s.version, s.history_seq, s.last_accessed_at, s.expiry_at, s.record)
        self.load = c(
            union_all(
                select(_tag(0), s.session_id, *record).where(s.session_id == b("id"), live),
                select(_tag(1), window.c.session_id, null(), window.c.seq, null(), null(), null(), window.c.payload),
                select(_tag(2), sc.owner, sc.key, null(), null(), null(), null(), sc.value).where(
                    sc.kind == user_kind, sc.owner == owner
                ),
                select(_tag(3), sc.owner, sc.key, null(), null(), null(), null(), sc.value).where(*app_rows),
            )
        )
        if postgres:
            ids: Select[Any] = select(func.unnest(b("ids", type_=postgresql.ARRAY(sc.key.type))))
        else:
            ids = select(func.json_each(b("ids")).table_valued("value").c.value)
        self.load_many = c(self._sessions_of(ids, scopes=True))
        page = (select(s.session_id).where(s.session_id > b("after"), live).order_by(s.session_id).limit(b("n"))).cte(
            "page"
        )
        self.scan = c(self._sessions_of(select(page.c.session_id), scopes=False))
        self.state = c(select(s.version, s.expiry_at).where(s.session_id == b("id")))
        page_rows = (
            select(h.seq, h.payload)
            .where(h.session_id == b("id"), h.seq < b("before"))
            .order_by(h.seq.desc())
            .limit(b("n"))
            .subquery("p")
        )
        self.history_page = c(
            union_all(
                select(_tag(0), null(), null()).where(s.session_id == b("id"), live),
                select(_tag(1), page_rows.c.seq, page_rows.c.payload),
            )
        )
        self.user_ids = c(select(s.session_id).where(s.user_id == b("uid"), live))
        # The user scope of `uid` (none when it is None) and the app scope.
        self.scopes_of = c(
            select(sc.kind, sc.key, sc.value).where(
                or_(and_(sc.kind == user_kind, sc.owner == b("uid")), and_(*app_rows))
            )
        )
        self.scope_page = c(
            select(sc.kind, sc.owner, sc.key, sc.value)
            .where(tuple_(sc.kind, sc.owner, sc.key) > tuple_(b("k"), b("o"), b("key")))
            .order_by(sc.kind, sc.owner, sc.key)
            .limit(b("n"))
        )

        # Writes. The SQLite save's compare-and-set (the PostgreSQL one is in `save`).
        dialect_insert = postgresql.insert if postgres else sqlite.insert
        columns: dict[str, Any] = {
            "session_id": b("id"),
            "user_id": b("uid"),
            "version": b("newv"),
            "history_seq": b("hseq"),
            "created_at": b("created"),
            "last_accessed_at": b("la"),
            "expiry_at": b("exp"),
            "record": b("rec"),
        }
        self.insert = c(dialect_insert(tables.sessions).values(columns).on_conflict_do_nothing())
        columns.pop("session_id")
        columns.pop("created_at")
        self.update = c(
            update(tables.sessions).where(s.session_id == b("id"), s.version == b("expv"), live).values(columns)
        )
        self.add_history = c(
            insert(tables.history).values(
                session_id=b("id"),
                seq=b("seq"),
                timestamp=b("ts"),
                type=b("kind"),
                payload=b("payload"),
                search_text=b("text"),
            )
        )
        self.trim = c(delete(tables.history).where(h.session_id == b("id"), h.seq <= b("floor")))
        upsert = dialect_insert(tables.scopes).values(kind=b("kind"), owner=b("owner"), key=b("key"), value=b("value"))
        self.upsert_scope = c(
            upsert.on_conflict_do_update(
                index_elements=[sc.kind, sc.owner, sc.key], set_={"value": upsert.excluded.value}
            )
        )
        self.delete_scope = c(
            delete(tables.scopes).where(sc.kind == b("kind"), sc.owner == b("owner"), sc.key == b("key"))
        )
        self.delete_session = c(delete(tables.sessions).where(s.session_id == b("id")))
        self.delete_history = c(delete(tables.history).where(h.session_id == b("id")))
        # A touch only moves both columns forward, so a delayed touch never shortens the expiry a
        # newer save or touch set. NULL is "never expires": a new NULL replaces any expiry and a
        # stored NULL is replaced by any (as in the memory and Redis stores).
        new_exp = b("exp", type_=s.expiry_at.type)
        greatest = func.greatest if postgres else func.max
        self.touch = c(
            update(tables.sessions)
            .where(s.session_id == b("id"), live)
            .values(
                last_accessed_at=greatest(s.last_accessed_at, b("la", type_=s.last_accessed_at.type)),
                expiry_at=case(
                    (or_(new_exp.is_(None), s.expiry_at.is_(None), new_exp > s.expiry_at), new_exp), else_=s.expiry_at
                ),
            )
        )
        expiring = select(s.session_id).where(s.expiry_at <= b("now")).order_by(s.expiry_at).limit(b("n"))
        if postgres:
            # One statement; SKIP LOCKED leaves a session a save holds (it is live for that save).
            gone = (
                delete(tables.sessions)
                .where(s.session_id.in_(expiring.with_for_update(skip_locked=True)), s.expiry_at <= b("now"))
                .returning(s.session_id)
                .cte("gone")
            )
            cleared = delete(tables.history).where(h.session_id.in_(select(gone.c.session_id))).cte("cleared")
            self.expire = [c(select(gone.c.session_id).add_cte(cleared))]
        else:
            # One writer at a time: both statements see the same expired sessions.
            self.expire = [
                c(delete(tables.history).where(h.session_id.in_(expiring))),
                c(delete(tables.sessions).where(s.session_id.in_(expiring)).returning(s.session_id)),
            ]
        self.rename_session = c(
            update(tables.sessions).where(s.session_id == b("old"), live).values(session_id=b("new"))
        )
        self.rename_history = c(update(tables.history).where(h.session_id == b("old")).values(session_id=b("new")))
        # Listing (`list_page`): keyset on the primary key, or on the (user_id, session_id) index.
        listed = select(s.session_id).order_by(s.session_id).limit(b("n"))
        self.list_all = c(listed.where(s.session_id > b("after"), live))
        self.list_user = c(listed.where(s.user_id == b("uid"), s.session_id > b("after"), live))
        # Erasing a user (`erase_user`): the ids of its sessions (expired ones too), then, in one
        # transaction, those still the user's, the history of those gone, and the user scope.
        self.user_all_ids = c(select(s.session_id).where(s.user_id == b("uid")))
        self.erase_sessions = c(delete(tables.sessions).where(s.session_id.in_(ids), s.user_id == b("uid")))
        still_there = select(s.session_id).where(s.session_id == h.session_id).exists()
        self.erase_history = c(delete(tables.history).where(h.session_id.in_(ids), ~still_there))
        self.erase_scope = c(delete(tables.scopes).where(sc.kind == user_kind, sc.owner == b("uid")))
        self._saves: dict[tuple[bool, bool, bool], Statement] = {}

    def _compile(self, construct: ClauseElement) -> Statement:
        return Statement.compile(construct, self._dialect)

    def _sessions_of(self, ids: Select[Any], *, scopes: bool) -> ClauseElement:
        """The records and history windows (and scopes) of the sessions `ids` selects."""
        s, h, sc = self._tables.sessions.c, self._tables.history.c, self._tables.scopes.c
        live = or_(s.expiry_at.is_(None), s.expiry_at > b("now"))
        parts = [
            select(
                _tag(0), s.session_id, s.user_id, s.version, s.history_seq, s.last_accessed_at, s.expiry_at, s.record
            ).where(s.session_id.in_(ids), live),
            select(_tag(1), h.session_id, null(), h.seq, null(), null(), null(), h.payload)
            .join_from(self._tables.history, self._tables.sessions, s.session_id == h.session_id)
            .where(s.session_id.in_(ids), h.seq > s.history_seq - b("window")),
        ]
        if scopes:
            parts += [
                select(_tag(2), sc.owner, sc.key, null(), null(), null(), null(), sc.value).where(
                    sc.kind == literal_column("'user'"), sc.owner.in_(select(s.user_id).where(s.session_id.in_(ids)))
                ),
                select(_tag(3), sc.owner, sc.key, null(), null(), null(), null(), sc.value).where(
                    sc.kind == literal_column("'app'"), sc.owner == literal_column("''")
                ),
            ]
        return union_all(*parts)

    def save(self, *, insert: bool, sets: bool = False, deletes: bool = False) -> Statement:
        """The PostgreSQL save of one or more sessions as ONE statement: a compare-and-set per
        session (an insert, or an update of the live version), then, for the sessions that won,
        their history rows, the trimming and the scope changes. Returns the ids that won.

        `text()`: data-modifying CTEs over ``unnest`` column lists, which Core can only spell
        through dialect internals less readable than the SQL itself.
        """
        key = (insert, sets, deletes)
        stmt = self._saves.get(key)
        if stmt is not None:
            return stmt
        prep = self._dialect.identifier_preparer
        s, h, sc = (prep.format_table(t) for t in (self._tables.sessions, self._tables.history, self._tables.scopes))
        if insert:
            cas = (
                f"INSERT INTO {s} (session_id, user_id, version, history_seq, created_at, last_accessed_at, expiry_at, "
                "record) SELECT id, uid, newv, hseq, created, la, exp, rec FROM w "
                "ON CONFLICT (session_id) DO NOTHING RETURNING session_id"
            )
        else:
            cas = (
                f"UPDATE {s} AS x SET user_id = w.uid, version = w.newv, history_seq = w.hseq, "
                "last_accessed_at = w.la, expiry_at = w.exp, record = w.rec FROM w WHERE x.session_id = w.id "
                "AND x.version = w.expv AND (x.expiry_at IS NULL OR x.expiry_at > w.now) RETURNING x.session_id"
            )
        ctes = [
            "w AS (SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:uids AS text[]), CAST(:expvs AS bigint[]), "
            "CAST(:newvs AS bigint[]), CAST(:hseqs AS bigint[]), CAST(:createds AS float8[]), CAST(:las AS float8[]), "
            "CAST(:exps AS float8[]), CAST(:recs AS bytea[]), CAST(:floors AS bigint[]), CAST(:nows AS float8[])) "
            "AS w(id, uid, expv, newv, hseq, created, la, exp, rec, floor, now))",
            f"cas AS ({cas})",
            f'hist AS (INSERT INTO {h} (session_id, seq, "timestamp", "type", payload, search_text) '
            "SELECT t.id, t.seq, t.ts, t.kind, t.payload, t.text FROM unnest(CAST(:h_ids AS text[]), "
            "CAST(:h_seqs AS bigint[]), CAST(:h_tss AS float8[]), CAST(:h_kinds AS text[]), "
            "CAST(:h_payloads AS bytea[]), CAST(:h_texts AS text[])) AS t(id, seq, ts, kind, payload, text) "
            "WHERE t.id IN (SELECT session_id FROM cas))",
            f"trim AS (DELETE FROM {h} AS y USING w WHERE y.session_id = w.id AND w.floor > 0 AND y.seq <= w.floor "
            "AND w.id IN (SELECT session_id FROM cas))",
        ]
        if sets:
            ctes.append(
                f'sset AS (INSERT INTO {sc} (kind, owner, "key", value) SELECT t.kind, t.owner, t.key, t.value '
                "FROM unnest(CAST(:set_kinds AS text[]), CAST(:set_owners AS text[]), CAST(:set_keys AS text[]), "
                "CAST(:set_values AS bytea[])) AS t(kind, owner, key, value) WHERE EXISTS (SELECT 1 FROM cas) "
                'ON CONFLICT (kind, owner, "key") DO UPDATE SET value = excluded.value)'
            )
        if deletes:
            ctes.append(
                f"sdel AS (DELETE FROM {sc} AS x USING unnest(CAST(:del_kinds AS text[]), "
                "CAST(:del_owners AS text[]), CAST(:del_keys AS text[])) AS d(kind, owner, key) "
                'WHERE x.kind = d.kind AND x.owner = d.owner AND x."key" = d.key AND EXISTS (SELECT 1 FROM cas))'
            )
        stmt = self._saves[key] = self._compile(text("WITH " + ",\n".join(ctes) + "\nSELECT session_id FROM cas"))
        return stmt


# ================================================================ the values bound and the rows returned
# The parameter names below are the bind parameters of the statements above, and `assemble`
# reads the tagged rows `load` / `load_many` / `scan` return: each changes with its statement.


def assemble(rows: Sequence[Any], *, scopes: bool) -> list[StoredSession]:
    """Sessions from the rows of `load`/`load_many`/`scan`: tag 0 a record, 1 a history entry,
    2 a user scope row (owner = the user id), 3 an app scope row."""
    sessions: dict[str, StoredSession] = {}
    history: dict[str, list[tuple[int, bytes]]] = {}
    users: dict[str, dict[str, bytes]] = {}
    app: dict[str, bytes] = {}
    for tag, sid, key, n1, n2, f1, f2, blob in rows:
        if tag == 0:
            sessions[sid] = StoredSession(sid, key, n1, f1, f2, bytes(blob), [], n2, scopes_loaded=scopes)
        elif tag == 1:
            history.setdefault(sid, []).append((n1, bytes(blob)))
        elif tag == 2:
            users.setdefault(sid, {})[key] = bytes(blob)
        else:
            app[key] = bytes(blob)
    out = []
    for sid in sorted(sessions):
        stored = sessions[sid]
        stored.history = [payload for _, payload in sorted(history.get(sid, ()))]
        if scopes:
            stored.user_scope = dict(users.get(stored.user_id, {})) if stored.user_id is not None else {}
            stored.app_scope = dict(app)
        out.append(stored)
    return out


def write_params(write: SessionWrite, now: float) -> dict[str, Any]:
    """The parameters of `insert` / `update` / `trim` for one save (SQLite's row at a time)."""
    return {
        "id": write.session_id,
        "uid": write.user_id,
        "expv": write.expected_version,
        "newv": write.new_version,
        "hseq": write.history_seq,
        "created": write.created_at,
        "la": write.last_accessed_at,
        "exp": write.expiry_at,
        "rec": write.record,
        "now": now,
        "floor": write.history_seq - write.max_history,
    }


def history_rows(write: SessionWrite, floor: int) -> list[dict[str, Any]]:
    """The `add_history` rows of a save: its new entries above `floor` (the rest are trimmed)."""
    sid = write.session_id
    return [
        {"id": sid, "seq": r.seq, "ts": r.timestamp, "kind": r.type, "payload": r.payload, "text": r.text}
        for r in write.history
        if r.seq > floor
    ]


def save_params(writes: Sequence[SessionWrite], now: float | Sequence[float]) -> dict[str, Any]:
    """The column arrays of `Statements.save` (one element per session or history row)."""
    floors = [w.history_seq - w.max_history for w in writes]
    history = [(w.session_id, r) for w, floor in zip(writes, floors, strict=True) for r in w.history if r.seq > floor]
    return {
        "ids": [w.session_id for w in writes],
        "uids": [w.user_id for w in writes],
        "expvs": [w.expected_version for w in writes],
        "newvs": [w.new_version for w in writes],
        "hseqs": [w.history_seq for w in writes],
        "createds": [w.created_at for w in writes],
        "las": [w.last_accessed_at for w in writes],
        "exps": [w.expiry_at for w in writes],
        "recs": [w.record for w in writes],
        "floors": [floor if w.history else 0 for w, floor in zip(writes, floors, strict=True)],
        "nows": [now] * len(writes) if isinstance(now, float | int) else list(now),
        "h_ids": [sid for sid, _ in history],
        "h_seqs": [r.seq for _, r in history],
        "h_tss": [r.timestamp for _, r in history],
        "h_kinds": [r.type for _, r in history],
        "h_payloads": [r.payload for _, r in history],
        "h_texts": [r.text for _, r in history],
    }


def scope_change_rows(changes: Sequence[ScopeChange]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The scope rows to upsert and to delete (`upsert_scope`, `delete_scope`), each sorted by
    ``(kind, owner, key)``.

    Writers lock scope rows in the order they write them; two sessions of one user saving the
    same keys in different orders would otherwise deadlock. Upserts run before deletes, so a save
    that sets a key another deletes can still deadlock; PostgreSQL then aborts one of them, which
    `transaction.rerun_aborted` (and the manager) run again.
    """
    sets = sorted(
        ({"kind": c.kind, "owner": c.owner, "key": k, "value": v} for c in changes for k, v in c.sets.items()),
        key=lambda row: (row["kind"], row["owner"], row["key"]),
    )
    deletes = sorted(
        ({"kind": c.kind, "owner": c.owner, "key": k} for c in changes for k in c.deletes),
        key=lambda row: (row["kind"], row["owner"], row["key"]),
    )
    return sets, deletes


def scope_arrays(sets: Sequence[Mapping[str, Any]], deletes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The scope arrays of `Statements.save(sets=..., deletes=...)` from the rows of
    `scope_change_rows` (none for an empty side)."""
    params: dict[str, Any] = {}
    if sets:
        params.update(
            set_kinds=[r["kind"] for r in sets],
            set_owners=[r["owner"] for r in sets],
            set_keys=[r["key"] for r in sets],
            set_values=[r["value"] for r in sets],
        )
    if deletes:
        params.update(
            del_kinds=[r["kind"] for r in deletes],
            del_owners=[r["owner"] for r in deletes],
            del_keys=[r["key"] for r in deletes],
        )
    return params

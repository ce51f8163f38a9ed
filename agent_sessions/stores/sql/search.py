"""Full-text search of history on SQL: the index, its creation and migration, the statements.

Every history row carries ``search_text`` (`search.entry_text`, computed in Python at write
time, so encrypted records are searchable). The index is derived from that column by the
database itself, so every operation that touches history rows — insert, cap trimming, delete,
cleanup, rename, import, migrate, erase — keeps it right without knowing about it:

- SQLite: an external-content FTS5 table ``<prefix>session_search`` over ``(type,
  search_text)`` (``unicode61 remove_diacritics 2``), keyed by the history row's rowid and kept
  in step by three triggers on the history table (insert, delete, update of the indexed
  columns), in the writer's transaction. A rename changes ``session_id`` only: the rowid and
  the indexed columns stay, so the index needs no change. Ranked by ``bm25``.
  (``VACUUM`` keeps these rowids, tested; should a tool ever renumber them,
  `DatabaseSessionStore.rebuild_search_index` rebuilds the index from the rows.)
- PostgreSQL: a stored generated ``tsvector`` column ``search`` over type and text (split on
  punctuation first, like `search.tokenize`) in the store's text-search configuration
  (``simple`` by default: no language assumed; it keeps diacritics) with a GIN index;
  ``websearch_to_tsquery`` of the quoted words, ranked by ``ts_rank_cd`` (normalised by length,
  entries holding every word first).

On both, the snippet is `search.highlight` of the returned text (as in the memory store), so the
three backends highlight the same words the same way.

Schema version 2 adds the column and the index; a version-1 database is migrated on first use
(`upgrade_from_1`), its existing history decoded in Python in batches to fill the text.
"""

# SQL text is assembled only from table names SQLAlchemy quoted and a checked configuration
# name; values are always bound.
# ruff: noqa: S608

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, select, text, tuple_, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from ...errors import StoreUnavailable
from ...search import SearchQuery
from .engine import DB_ERRORS
from .schema import Tables
from .statements import Statement

__all__ = [
    "SEARCH_CONFIG_PATTERN",
    "SearchStatements",
    "check_search_config",
    "check_search_index",
    "create_search_index",
    "search_table",
    "upgrade_from_1",
]

logger = logging.getLogger(__name__)

SEARCH_CONFIG_PATTERN = re.compile(r"(?:[a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*")
_BACKFILL_BATCH = 500
#: PostgreSQL: the text split into words on punctuation and spaces first, as `search.tokenize`
#: does (PostgreSQL's parser would keep ``jane-doe@example.org`` as one token).
_WORDS = "regexp_replace(search_text, '[[:punct:][:space:]]+', ' ', 'g')"
#: Turns the raw text of one row into its searchable text (decode, then `search.entry_text`).
TextOf = Callable[[str, bytes], str]


def check_search_config(config: str) -> str:
    """The PostgreSQL text-search configuration name, checked (``simple``, ``english``,
    ``myschema.myconfig``); `ValueError` otherwise."""
    if not isinstance(config, str) or not SEARCH_CONFIG_PATTERN.fullmatch(config):
        raise ValueError("search_config must be a text-search configuration name such as 'simple' or 'english'")
    return config


def search_table(tables: Tables) -> str:
    """The name of the SQLite FTS5 table of these tables."""
    return tables.history.name.removesuffix("session_history") + "session_search"


def _ddl(tables: Tables, dialect: Dialect, config: str) -> list[str]:
    prep = dialect.identifier_preparer
    hist = prep.format_table(tables.history)
    if dialect.name == "postgresql":
        index = prep.quote(f"ix_{tables.history.name}_search")
        return [
            f"ALTER TABLE {hist} ADD COLUMN IF NOT EXISTS search tsvector GENERATED ALWAYS AS "
            f"(to_tsvector('{config}'::regconfig, \"type\" || ' ' || {_WORDS})) STORED",
            f"CREATE INDEX IF NOT EXISTS {index} ON {hist} USING gin (search)",
        ]
    fts = prep.quote(search_table(tables))
    name = search_table(tables)
    old = f"INSERT INTO {fts} ({fts}, rowid, type, search_text) VALUES ('delete', old.rowid, old.type, old.search_text)"
    new = f"INSERT INTO {fts} (rowid, type, search_text) VALUES (new.rowid, new.type, new.search_text)"
    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(type, search_text, content='{tables.history.name}', "
        "content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')",
        f"CREATE TRIGGER IF NOT EXISTS {prep.quote(name + '_ai')} AFTER INSERT ON {hist} BEGIN {new}; END",
        f"CREATE TRIGGER IF NOT EXISTS {prep.quote(name + '_ad')} AFTER DELETE ON {hist} BEGIN {old}; END",
        f"CREATE TRIGGER IF NOT EXISTS {prep.quote(name + '_au')} AFTER UPDATE OF type, search_text ON {hist} "
        f"BEGIN {old}; {new}; END",
    ]


async def create_search_index(conn: AsyncConnection, tables: Tables, config: str, *, rebuild: bool = False) -> None:
    """Create the search index (idempotent), in `conn`'s transaction; `rebuild` (SQLite):
    index the rows already in the history table."""
    for statement in _ddl(tables, conn.dialect, config):
        await conn.exec_driver_sql(statement)
    if rebuild and conn.dialect.name == "sqlite":
        fts = conn.dialect.identifier_preparer.quote(search_table(tables))
        await conn.exec_driver_sql(f"INSERT INTO {fts} ({fts}) VALUES ('rebuild')")


async def upgrade_from_1(conn: AsyncConnection, tables: Tables, config: str, text_of: TextOf) -> None:
    """Migrate version-1 tables to version 2 in `conn`'s transaction: add ``search_text``,
    fill it from every existing row (decoded in Python, in batches), then build the index."""
    h = tables.history.c
    hist = conn.dialect.identifier_preparer.format_table(tables.history)
    await conn.exec_driver_sql(f"ALTER TABLE {hist} ADD COLUMN search_text TEXT NOT NULL DEFAULT ''")
    page = (
        select(h.session_id, h.seq, h.payload)
        .where(tuple_(h.session_id, h.seq) > tuple_(bindparam("a"), bindparam("b")))
        .order_by(h.session_id, h.seq)
        .limit(_BACKFILL_BATCH)
    )
    fill = (
        update(tables.history)
        .where(h.session_id == bindparam("b_id"), h.seq == bindparam("b_seq"))
        .values(search_text=bindparam("b_text"))
    )
    cursor: tuple[str, int] = ("", -(2**62))
    done = 0
    while True:
        rows = (await conn.execute(page, {"a": cursor[0], "b": cursor[1]})).all()
        if not rows:
            break
        values = [{"b_id": sid, "b_seq": seq, "b_text": text_of(sid, bytes(payload))} for sid, seq, payload in rows]
        await conn.execute(fill, values)
        done += len(rows)
        cursor = (rows[-1][0], rows[-1][1])
    await create_search_index(conn, tables, config, rebuild=True)
    logger.info("session tables upgraded to schema version 2: %d history entries indexed for search", done)


async def check_search_index(conn: AsyncConnection, tables: Tables) -> None:
    """Raise `StoreUnavailable` if the search index disagrees with the history rows: FTS5's
    ``integrity-check`` against its content table (SQLite), unindexed rows (PostgreSQL)."""
    prep = conn.dialect.identifier_preparer
    if conn.dialect.name == "postgresql":
        hist = prep.format_table(tables.history)
        missing = (await conn.exec_driver_sql(f"SELECT count(*) FROM {hist} WHERE search IS NULL")).scalar_one()
        if missing:
            raise StoreUnavailable(f"{missing} history rows are missing from the search index")
        return
    fts = prep.quote(search_table(tables))
    try:
        await conn.exec_driver_sql(f"INSERT INTO {fts} ({fts}, rank) VALUES ('integrity-check', 1)")
    except DB_ERRORS as exc:
        raise StoreUnavailable(
            "the search index disagrees with the history rows; rebuild it with rebuild_search_index()"
        ) from exc


class SearchStatements:
    """The two search statements of one dialect (by user, by session) and their parameters."""

    def __init__(self, tables: Tables, dialect: Dialect, config: str) -> None:
        self.postgres = dialect.name == "postgresql"
        prep = dialect.identifier_preparer
        hist, sess = prep.format_table(tables.history), prep.format_table(tables.sessions)
        if self.postgres:
            cfg = f"'{config}'::regconfig"
            filters = (
                "(s.expiry_at IS NULL OR s.expiry_at > CAST(:now AS float8)) "
                'AND (CAST(:types AS text[]) IS NULL OR h."type" = ANY(CAST(:types AS text[]))) '
                'AND (CAST(:since AS float8) IS NULL OR h."timestamp" >= CAST(:since AS float8))'
            )
            # The snippet is made in Python (`search.highlight`) from the text returned:
            # `ts_headline` parses with PostgreSQL's parser (emails, URLs, hyphenated words as
            # one token), which would not highlight the words the index matched.
            # By user, the matches come from the GIN index first (MATERIALIZED): left free, the
            # planner drives from the user's sessions and probes the GIN index once per session
            # (100 sessions of 1,000 entries: 20 ms instead of 3, measured).
            source = {
                "user": f'm AS MATERIALIZED (SELECT h.session_id, h.seq, h."timestamp", h."type", h.search '
                f"FROM {hist} AS h CROSS JOIN q WHERE h.search @@ q.any_word), ",
                "session": f'm AS (SELECT h.session_id, h.seq, h."timestamp", h."type", h.search FROM {hist} AS h '
                "CROSS JOIN q WHERE h.session_id = CAST(:sid AS text) AND h.search @@ q.any_word), ",
            }
            scopes = {
                "user": "s.user_id = CAST(:uid AS text)",
                "session": "(CAST(:uid AS text) IS NULL OR s.user_id = :uid)",
            }
            queries = {
                kind: (
                    f"WITH q AS (SELECT websearch_to_tsquery({cfg}, :any) AS any_word, "
                    f"websearch_to_tsquery({cfg}, :every) AS every_word), {source[kind]}"
                    'hits AS (SELECT h.session_id, h.seq, h."timestamp", '
                    "(CASE WHEN h.search @@ q.every_word THEN 1.0 ELSE 0.0 END) + ts_rank_cd(h.search, q.any_word, 33) "
                    f"AS score FROM m AS h JOIN {sess} AS s ON s.session_id = h.session_id CROSS JOIN q "
                    f"WHERE {scopes[kind]} AND {filters} "
                    'ORDER BY score DESC, h."timestamp" DESC, h.seq DESC LIMIT :n) '
                    f"SELECT h.session_id, h.seq, h.payload, hits.score, h.search_text FROM hits JOIN {hist} AS h "
                    "ON h.session_id = hits.session_id AND h.seq = hits.seq "
                    'ORDER BY hits.score DESC, hits."timestamp" DESC, hits.seq DESC'
                )
                for kind in ("user", "session")
            }
        else:
            fts = prep.quote(search_table(tables))
            # The best rows first (rowid and rank only), then the payload and text of those `:n`
            # alone. The snippet is made in Python from the text (`search.highlight`): FTS5's
            # `snippet()` needs the MATCH again in the outer query, which runs the whole full-text
            # query once per hit (a five-word query with ten hits in 1,000 entries: 5.2 ms a
            # search that way, 3.3 ms this way, measured).
            query = (
                f'WITH hits AS (SELECT {fts}.rowid AS rid, -bm25({fts}) AS score, h."timestamp" AS ts, h.seq '
                f"FROM {fts} JOIN {hist} AS h ON h.rowid = {fts}.rowid "
                f"JOIN {sess} AS s ON s.session_id = h.session_id "
                f"WHERE {fts} MATCH :any AND {{scope}} AND (s.expiry_at IS NULL OR s.expiry_at > :now) "
                "AND (:types IS NULL OR h.type IN (SELECT value FROM json_each(:types))) "
                'AND (:since IS NULL OR h."timestamp" >= :since) '
                'ORDER BY score DESC, h."timestamp" DESC, h.seq DESC LIMIT :n) '
                f"SELECT h.session_id, h.seq, h.payload, hits.score, h.search_text FROM hits "
                f"JOIN {hist} AS h ON h.rowid = hits.rid ORDER BY hits.score DESC, hits.ts DESC, hits.seq DESC"
            )
            queries = {
                "user": query.replace("{scope}", "s.user_id = :uid"),
                "session": query.replace("{scope}", "h.session_id = :sid AND (:uid IS NULL OR s.user_id = :uid)"),
            }
        self.by_user = Statement.compile(text(queries["user"]), dialect)
        self.by_session = Statement.compile(text(queries["session"]), dialect)

    def statement(self, query: SearchQuery, now: float) -> tuple[Statement, dict[str, Any]]:
        """The statement for `query` and its parameters. Every word is quoted, so no query is
        ever a syntax error: SQLite matches any term (``"a" OR "b"``); PostgreSQL gets the
        words as ``websearch_to_tsquery`` phrases, any of them and every one of them."""
        params: dict[str, Any] = {"uid": query.user_id, "sid": query.session_id, "now": now, "n": query.limit}
        params["since"] = query.since
        if self.postgres:
            words = query.words or query.terms
            params["any"] = " or ".join(f'"{w}"' for w in words)
            params["every"] = " ".join(f'"{w}"' for w in words)
            params["types"] = None if query.types is None else list(query.types)
        else:
            params["any"] = " OR ".join(f'"{t}"' for t in query.terms)
            params["types"] = None if query.types is None else json.dumps(list(query.types))
        return (self.by_session if query.session_id is not None else self.by_user), params

"""Full-text search of history: what is indexed, how text is tokenised, and the query types.

One definition every backend shares:

- `entry_text` — the searchable text of a history entry: its string values (not its keys, nor
  its ``type`` / ``timestamp``, nor values under secret-looking keys such as ``token`` or
  ``password``: `SECRET_KEY`), depth-first in order, joined by newlines and cut at
  `MAX_ENTRY_TEXT` characters. The store computes it in Python from the decoded entry when it
  writes the row (so encrypted records are searchable) and keeps it beside the row; the entry's
  ``type`` is indexed too.
- `tokenize` — the SQLite FTS5 ``unicode61 remove_diacritics 2`` tokeniser in Python: lower
  case, diacritics removed, split on anything that is not a letter or a digit. User queries are
  reduced to these terms and quoted, so no string is ever a query syntax error; a query matches
  entries holding any of its terms, best first (BM25 on SQLite and the memory store,
  ``ts_rank_cd`` on PostgreSQL).
- `SearchQuery` / `SearchRow` — what `SessionStore.search` (the backend primitive) takes and
  returns; `HistoryHit` — what `SessionManager.search_history` returns.

The memory store ranks with `bm25` below, over the entries in the search's scope (SQLite ranks
over the whole table: scores differ in size, rarely in order).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .errors import InvalidSearchQuery

__all__ = [
    "MAX_ENTRY_TEXT",
    "MAX_QUERY_CHARS",
    "MAX_SEARCH_LIMIT",
    "SECRET_KEY",
    "HistoryHit",
    "SearchQuery",
    "SearchRow",
    "bm25",
    "entry_text",
    "fold",
    "highlight",
    "make_query",
    "query_terms",
    "term_counts",
    "tokenize",
]

#: Keys whose values are never indexed (nor printed by the CLI): secrets must not sit in an
#: index in clear text, even when the records are encrypted (`FernetCodec`).
SECRET_KEY: Final = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|auth|credential|cookie|private[-_]?key|bearer|signature",
    re.IGNORECASE,
)
#: The most characters of an entry's text that are indexed (the first 8 Ki).
MAX_ENTRY_TEXT: Final = 8192
#: The longest query accepted, in characters.
MAX_QUERY_CHARS: Final = 1024
#: The most hits one search returns.
MAX_SEARCH_LIMIT: Final = 1000
#: The most distinct terms of a query that are searched (the first ones).
MAX_QUERY_TERMS: Final = 32
#: Tokens around the match a snippet shows.
SNIPPET_TOKENS: Final = 12
BM25_K1: Final = 1.2
BM25_B: Final = 0.75


@dataclass(frozen=True, slots=True)
class HistoryHit:
    """One history entry a search found.

    `entry` is the entry as `get_history` returns it; `score` ranks hits (higher is better;
    comparable only within one search); `snippet` is a short extract of the entry's text with
    the matched terms wrapped in ``**`` (e.g. ``"I live in **Lisbon** now"``).
    """

    session_id: str
    seq: int
    entry: dict[str, Any]
    score: float
    snippet: str


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A checked search for `SessionStore.search`.

    Scope: the live sessions of `user_id`, or (when it is None) the one session `session_id`;
    with both, that session only if it belongs to `user_id`. `terms` are `tokenize`d, distinct,
    non-empty; `types` (None: any) and `since` (None: any time; else ``timestamp >= since``)
    filter entries; at most `limit` hits, best first.
    """

    user_id: str | None
    session_id: str | None
    terms: tuple[str, ...]
    limit: int
    types: tuple[str, ...] | None = None
    since: float | None = None
    #: The query's words lower-cased with their diacritics kept, for an engine that keeps them
    #: in its index (PostgreSQL's ``simple`` configuration); `terms` are these folded.
    words: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchRow:
    """One hit as a backend returns it: the encoded entry, its score (higher is better) and its
    snippet (matched terms wrapped in ``**``)."""

    session_id: str
    seq: int
    payload: bytes
    score: float
    snippet: str


def entry_text(entry: dict[str, Any]) -> str:
    """The searchable text of a history entry (see the module docstring); "" if it has none."""
    parts: list[str] = []
    size = 0
    stack: list[Any] = [v for k, v in reversed(entry.items()) if k not in ("type", "timestamp")]
    while stack and size < MAX_ENTRY_TEXT:
        value = stack.pop()
        if isinstance(value, str):
            if value:
                parts.append(value)
                size += len(value) + 1
        elif isinstance(value, dict):
            stack.extend(v for k, v in reversed(value.items()) if not SECRET_KEY.search(k))
        elif isinstance(value, list):
            stack.extend(reversed(value))
    return "\n".join(parts)[:MAX_ENTRY_TEXT]


def fold(word: str) -> str:
    """`word` lower-cased without its diacritics (as unicode61 ``remove_diacritics 2``)."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


#: A run of letters and digits (`str.isalnum` characters: ``\w`` without the underscore).
_WORD = re.compile(r"[^\W_]+")


def _word_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of letters and digits in `text`."""
    for match in _WORD.finditer(text):
        yield match.span()


def _token_spans(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, folded token) for each word of `text`."""
    for start, end in _word_spans(text):
        yield start, end, fold(text[start:end])


def tokenize(text: str) -> list[str]:
    """The terms of `text`: lower case, diacritics removed, split on non-alphanumerics."""
    return [token for _, _, token in _token_spans(text) if token]


def query_terms(query: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The distinct terms of a user query (at most `MAX_QUERY_TERMS`, in order), and its
    distinct words lower-cased with diacritics kept (see `SearchQuery.words`).

    Raises `InvalidSearchQuery` for a query that is not a str, is longer than
    `MAX_QUERY_CHARS` or holds a NUL character. A query without any letter or digit has no
    terms (and finds nothing).
    """
    if not isinstance(query, str):
        raise InvalidSearchQuery(f"the query must be a str, got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidSearchQuery(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in query:
        raise InvalidSearchQuery("the query holds a NUL character")
    words = [query[start:end].lower() for start, end in _word_spans(query)]
    terms = tuple(t for t in dict.fromkeys(map(fold, words)) if t)[:MAX_QUERY_TERMS]
    return terms, tuple(dict.fromkeys(words))[:MAX_QUERY_TERMS]


def term_counts(kind: str, text: str) -> Counter[str]:
    """How often each term occurs in an entry of type `kind` with text `text` (the document
    the memory store ranks: type and text together, as FTS5 counts a row's columns)."""
    return Counter(tokenize(kind) + tokenize(text))


def bm25(terms: Sequence[str], docs: Sequence[Counter[str]]) -> list[float]:
    """The Okapi BM25 score of each document for `terms` (FTS5's formula: k1 1.2, b 0.75,
    idf ``log((N - df + 0.5) / (df + 0.5))`` floored at 1e-6); 0.0 when no term occurs."""
    total = len(docs)
    if not total:
        return []
    lengths = [sum(doc.values()) for doc in docs]
    average = sum(lengths) / total or 1.0
    scores = [0.0] * total
    for term in terms:
        df = sum(1 for doc in docs if term in doc)
        if not df:
            continue
        idf = max(math.log((total - df + 0.5) / (df + 0.5)), 1e-6)
        for i, doc in enumerate(docs):
            tf = doc.get(term, 0)
            if tf:
                norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths[i] / average)
                scores[i] += idf * tf * (BM25_K1 + 1) / (tf + norm)
    return scores


def highlight(text: str, terms: Sequence[str], *, tokens: int = SNIPPET_TOKENS) -> str:
    """A snippet of `text` like FTS5's ``snippet()``: the window of at most `tokens` tokens
    holding the most distinct matched terms (the earliest such), matched tokens wrapped in
    ``**``, with ``…`` where text was cut."""
    spans = list(_token_spans(text))
    if not spans:
        return text[:200]
    wanted = set(terms)
    # Candidate windows start a little before each matched token (or at the start).
    starts = sorted({max(0, i - 2) for i, span in enumerate(spans) if span[2] in wanted} | {0})
    best, best_count = 0, -1
    for first in starts:
        count = len({span[2] for span in spans[first : first + tokens]} & wanted)
        if count > best_count:
            best, best_count = first, count
    window = spans[best : best + tokens]
    out: list[str] = ["…"] if best > 0 else []
    cursor = window[0][0]
    for start, end, token in window:
        out.append(text[cursor:start])
        out.append(f"**{text[start:end]}**" if token in wanted else text[start:end])
        cursor = end
    if best + tokens < len(spans):
        out.append("…")
    elif cursor < len(text):
        out.append(text[cursor:])
    return "".join(out).strip()


def make_query(
    user_id: str | None,
    session_id: str | None,
    query: Any,
    *,
    limit: Any,
    types: Sequence[str] | None,
    since: Any,
) -> SearchQuery:
    """Check the arguments of a search (ids already validated) into a `SearchQuery`.

    Raises `InvalidSearchQuery` for a bad query (`query_terms`), neither id given, a `limit`
    outside 1..`MAX_SEARCH_LIMIT`, `types` that is not a sequence of str, or a `since` that is
    not a finite number.
    """
    if user_id is None and session_id is None:
        raise InvalidSearchQuery("give a user_id (all their sessions) or a session_id (that session)")
    terms, words = query_terms(query)
    if type(limit) is not int or not 0 < limit <= MAX_SEARCH_LIMIT:
        raise InvalidSearchQuery(f"limit must be an int from 1 to {MAX_SEARCH_LIMIT}, got {limit!r:.40}")
    kinds: tuple[str, ...] | None = None
    if types is not None:
        if isinstance(types, str) or not all(isinstance(t, str) for t in types):
            raise InvalidSearchQuery("types must be a list of entry types (str), not a str")
        kinds = tuple(dict.fromkeys(types))
    if since is not None and (
        isinstance(since, bool) or not isinstance(since, int | float) or not math.isfinite(since)
    ):
        raise InvalidSearchQuery(f"since must be a timestamp (seconds since the epoch), got {since!r:.40}")
    return SearchQuery(user_id, session_id, terms, limit, kinds, None if since is None else float(since), words)

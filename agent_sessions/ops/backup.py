"""Backup and restore: a store to a JSON Lines file and back, streaming in constant memory.

The file (gzip-compressed when its name ends in ``.gz``) is one JSON object per line:

1. a header: ``{"format": "agent-sessions-export", "format_version": 1, "exported_at": ...,
   "include_auth": false, "library_version": ...}`` (``format_version`` 2 when the file holds
   ``conversation`` lines, 1 otherwise: a file without them stays readable by older readers);
2. one ``{"kind": "scope", "scope": "user"|"app", "owner": ..., "values": {...}}`` per user
   scope (``user:`` state keys and ``pref:`` preferences) and for the app scope;
3. one ``{"kind": "session", "session": {...}, "history": [...]}`` per live session: every
   field but `history` (with its `version` and `history_seq`; `auth_info` is null unless
   exported with ``include_auth=True``), and its full stored history, oldest first;
4. (version 2 only) one ``{"kind": "conversation", "conversation": {"record": {...},
   "entries": [...]}}`` per conversation of the data holders given (all of them; with
   `export_user`, the user's): its pydantic-ai ``ConversationRecord`` (as its JSON) and every
   entry its history and branches reach, parents first, each ``{"id", "parent_id", "kind",
   "message"}`` (pydantic-ai's ``ModelMessagesTypeAdapter`` JSON, bytes as base64);
5. an end marker ``{"kind": "end", "sessions": n, "scopes": m, "history_entries": h}`` (and
   ``"conversations": c`` in version 2), so a file cut short at a line boundary is still
   recognised as truncated.

Conversation lines are written by the first `ExportableDataHolder` given to `import_sessions`
(`holders`), under the same `on_conflict` policy. Without one they are not written: they are
counted as skipped (`TransferReport.conversations_skipped`, with `conversations_skipped_reason`)
and logged as a warning, never dropped silently. A conversation is one line, bounded like a
session line (`max_line_bytes`); one the holder refuses (`InvalidExportItem`: entries out of
order or missing, a naive timestamp, ...) is a bad line (`BackupFormatError`), none of it written.

Import reads line by line and writes sessions in batches (`SessionStore.restore_many`). The
first bad line (not JSON, wrong shape, unknown kind, cut short) stops it with
`BackupFormatError` naming the line: everything before that line is imported, nothing after
it, and no session is ever half-written (each is one atomic insert).

The file's bytes are read by `_export_reader.py` (bounded lines, strict decode, the end marker's
count, `BackupFormatError`) and written by `_export_file.py` (a temporary file, then renamed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from ..errors import AgentSessionsError, InvalidExportItem, InvalidSessionId, InvalidUserId
from ..ids import validate_session_id, validate_user_id
from ..lifecycle import ExportableDataHolder, SessionDataHolder, can_export_all, holders_implementing
from ..session import Session
from ..stores.base import SessionStore
from ..stores.primitives import Restore
from ._export_file import ExportWriter
from ._export_reader import (
    READ_CHUNK,
    BackupFormatError,
    ExportReader,
    count_export_sessions,
    is_gzip,
    iter_export_lines,
    parse_line,
)
from ._transfer import (
    LINE_NESTING,
    RESTORE_BATCH,
    OnConflict,
    Progress,
    TransferReport,
    check_on_conflict,
    full_history,
    restore_scope,
    restore_sessions,
    session_payload,
)
from ._transfer import (
    max_line_bytes as store_line_bound,
)

__all__ = [
    "DEFAULT_IMPORT_LINE_BYTES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "NO_HOLDER_REASON",
    "PLAIN_FORMAT_VERSION",
    "BackupFormatError",
    "ExportReport",
    "count_export_sessions",
    "export_sessions",
    "failed_line",
    "import_sessions",
    "iter_export_lines",
    "write_export",
]

logger = logging.getLogger(__name__)


FORMAT_NAME = "agent-sessions-export"
#: The newest format this library reads and writes: 2 (files with ``conversation`` lines); a
#: file without conversations is still written as version 1.
FORMAT_VERSION = 2
#: The version of a file that holds no ``conversation`` lines.
PLAIN_FORMAT_VERSION = 1
#: The reason an import reports for conversation lines it could not write.
NO_HOLDER_REASON = "no conversation store that can import was given to write them to"
#: The note `import_sessions` adds to a store error; `failed_line` reads the number back.
_LINE_NOTE = "while importing line {} of the export file"
_LINE_NOTE_PATTERN = re.compile(r"while importing line (\d+) of the export file")
#: The longest line `import_sessions` reads by default (its `max_line_bytes`).
DEFAULT_IMPORT_LINE_BYTES = 64 * 1024 * 1024
#: Session lines are written in batches of up to `RESTORE_BATCH`, and once they hold this many
#: bytes of file: a batch is held twice more (parsed, then encoded), so this bounds that memory
#: (128 KiB keeps `tests/ops/test_memory_bound.py` under its bound with bulk `write_many`s too).
_BATCH_BYTES = 128 * 1024


@dataclass(slots=True)
class ExportReport:
    """What `export_sessions` wrote."""

    path: Path
    sessions: int = 0
    scopes: int = 0
    history_entries: int = 0
    bytes_written: int = 0
    include_auth: bool = False
    compressed: bool = False
    #: Conversations written (``conversation`` lines, from the data holders that can export).
    conversations: int = 0
    #: The data holders given that cannot export (their data is not in the file).
    not_exported: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- encoding
def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode()


def _library_version() -> str:
    from .. import __version__

    return __version__


# ---------------------------------------------------------------- export
async def export_sessions(
    store: SessionStore,
    path: str | os.PathLike[str],
    *,
    include_auth: bool = False,
    batch_size: int = 500,
    compress: bool | None = None,
    progress: Progress | None = None,
    holders: Iterable[SessionDataHolder] = (),
) -> ExportReport:
    """Write every live session (with its full history), all scope data and everything the
    data holders in `holders` keep (the conversation stores beside `store`) to `path`.

    Streams: at most `batch_size` sessions are held at once. gzip is used when `path` ends in
    ``.gz`` (or force it with `compress`). `auth_info` is written only with
    ``include_auth=True``. The file appears at `path` only once complete (written beside it,
    then renamed), with mode 0o600 (owner only, whatever the umask): it holds live session ids,
    which are bearer credentials. `progress` is called with the running counts after each batch.
    Raises `StoreUnavailable` / `SerializationError` from the store; a corrupt stored record
    stops the export (nothing is left at `path`). A holder that cannot export all it keeps
    (not a `FullyExportableDataHolder`) is named in the report's `not_exported` (and logged).
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be > 0")
    exporting, not_exported = holders_implementing(holders, can_export_all, "whole-store export")

    async def conversations() -> AsyncIterator[dict[str, Any]]:
        for holder in exporting:
            async for item in holder.export_all():
                yield item

    report = await write_export(
        store,
        path,
        store.iter_scopes(),
        store.iter_sessions(batch_size=batch_size),
        conversations=conversations() if exporting else None,
        include_auth=include_auth,
        batch_size=batch_size,
        compress=compress,
        progress=progress,
    )
    report.not_exported = not_exported
    return report


async def write_export(
    store: SessionStore,
    path: str | os.PathLike[str],
    scopes: AsyncIterable[tuple[str, str, dict[str, Any]]],
    sessions: AsyncIterable[Session],
    *,
    conversations: AsyncIterable[dict[str, Any]] | None = None,
    include_auth: bool = False,
    batch_size: int = 500,
    compress: bool | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Write `scopes` (``(kind, owner, values)``) and `sessions` of `store` (each with its full
    history) to `path` in the export format, as `export_sessions` does (the writer of
    `export_sessions` and `export_user`), then `conversations` (data holders' export items), one
    ``conversation`` line each: the file is version 2 if there is at least one, else version 1."""
    target = Path(path)
    # The header comes first and names the version: look at the first conversation now.
    pending: AsyncIterator[dict[str, Any]] | None = None
    first: dict[str, Any] | None = None
    if conversations is not None:
        pending = aiter(conversations)
        first = await anext(pending, None)
    compressed = is_gzip(target, compress)
    report = ExportReport(path=target, include_auth=include_auth, compressed=compressed)
    running = TransferReport()
    writer = await asyncio.to_thread(ExportWriter, target, compressed)
    try:
        header = {
            "format": FORMAT_NAME,
            "format_version": PLAIN_FORMAT_VERSION if first is None else FORMAT_VERSION,
            "library_version": _library_version(),
            "exported_at": time.time(),
            "include_auth": include_auth,
            "source": type(store).__name__,
        }
        lines = [_dumps(header)]
        async for kind, owner, values in scopes:
            lines.append(_dumps({"kind": "scope", "scope": kind, "owner": owner, "values": values}))
            report.scopes += 1
            if len(lines) >= batch_size:
                await asyncio.to_thread(writer.write, lines)
                lines = []
        async for session in sessions:
            history = await full_history(store, session)
            payload = session_payload(session, include_auth=include_auth)
            lines.append(_dumps({"kind": "session", "session": payload, "history": history}))
            report.sessions += 1
            report.history_entries += len(history)
            if len(lines) >= batch_size:
                await asyncio.to_thread(writer.write, lines)
                lines = []
                if progress is not None:
                    running.imported, running.history_entries = report.sessions, report.history_entries
                    progress(running)
        if pending is not None and first is not None:
            item: dict[str, Any] | None = first
            while item is not None:
                lines.append(_dumps({"kind": "conversation", "conversation": item}))
                report.conversations += 1
                if len(lines) >= batch_size:
                    await asyncio.to_thread(writer.write, lines)
                    lines = []
                item = await anext(pending, None)
        end: dict[str, Any] = {"kind": "end", "sessions": report.sessions, "scopes": report.scopes}
        end["history_entries"] = report.history_entries
        if first is not None:
            end["conversations"] = report.conversations
        lines.append(_dumps(end))
        await asyncio.to_thread(writer.write, lines)
        report.bytes_written = await asyncio.to_thread(writer.commit)
    except BaseException:
        await asyncio.to_thread(writer.abort)
        raise
    if progress is not None:
        running.imported, running.history_entries = report.sessions, report.history_entries
        progress(running)
    logger.info(
        "exported %d sessions, %d scopes, %d history entries, %d conversations (%d bytes)",
        report.sessions,
        report.scopes,
        report.history_entries,
        report.conversations,
        report.bytes_written,
    )
    return report


# ---------------------------------------------------------------- import
def _check_header(obj: dict[str, Any]) -> int:
    """The file's format version, if this library reads it; else `BackupFormatError`."""
    if obj.get("format") != FORMAT_NAME:
        raise BackupFormatError(1, f"not an agent-sessions export (the header must have format={FORMAT_NAME!r})")
    version = obj.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BackupFormatError(1, "the header has no valid format_version")
    if version > FORMAT_VERSION:
        raise BackupFormatError(
            1, f"format_version {version} is newer than this library reads ({FORMAT_VERSION}); upgrade agent-sessions"
        )
    return version


@dataclass(slots=True)
class _SessionLine:
    lineno: int
    restore: Restore


def _parse_session(lineno: int, obj: dict[str, Any]) -> _SessionLine:
    data = obj.get("session")
    history = obj.get("history")
    if not isinstance(data, dict) or not isinstance(history, list):
        raise BackupFormatError(lineno, "a session line needs a 'session' object and a 'history' list")
    data = dict(data)
    seq = data.pop("history_seq", len(history))
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < len(history):
        raise BackupFormatError(lineno, "history_seq must be an integer >= the number of history entries")
    for i, entry in enumerate(history):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("type"), str)
            or not isinstance(entry.get("timestamp"), int | float)
            or isinstance(entry.get("timestamp"), bool)
        ):
            raise BackupFormatError(lineno, f"history[{i}] is not an entry like {{'timestamp', 'type', 'data'}}")
    try:
        validate_session_id(data.get("session_id"))
        if data.get("user_id") is not None:
            validate_user_id(data["user_id"])
        session = Session.model_validate(data)
    except (InvalidSessionId, InvalidUserId) as exc:
        raise BackupFormatError(lineno, str(exc)) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BackupFormatError(lineno, f"invalid session: {first['msg']} at {first['loc']}") from exc
    return _SessionLine(lineno, Restore(session, history, seq))


def _parse_scope(lineno: int, obj: dict[str, Any]) -> tuple[Literal["user", "app"], str, dict[str, Any]]:
    kind, owner, values = obj.get("scope"), obj.get("owner"), obj.get("values")
    if not isinstance(values, dict) or not isinstance(owner, str):
        raise BackupFormatError(lineno, "a scope line needs an 'owner' string and a 'values' object")
    if kind == "app":
        if any(not k.startswith("app:") for k in values):
            raise BackupFormatError(lineno, "app scope keys must start with 'app:'")
        return "app", "", values
    if kind == "user":
        try:
            validate_user_id(owner)
        except InvalidUserId as exc:
            raise BackupFormatError(lineno, str(exc)) from exc
        if any(not k.startswith(("user:", "pref:")) for k in values):
            raise BackupFormatError(lineno, "user scope keys must start with 'user:' or 'pref:'")
        return "user", owner, values
    raise BackupFormatError(lineno, f"unknown scope {kind!r}; expected 'user' or 'app'")


@dataclass(slots=True)
class _ImportState:
    report: TransferReport = field(default_factory=TransferReport)
    header_seen: bool = False
    end_seen: bool = False
    sessions: int = 0
    scopes: int = 0
    history_entries: int = 0
    last_line: int = 0
    version: int = PLAIN_FORMAT_VERSION
    conversations: int = 0
    #: The data holder conversation lines are written to (None: they are counted as skipped).
    holder: ExportableDataHolder | None = None
    #: Session lines read and not written yet, and their size in the file.
    pending: list[_SessionLine] = field(default_factory=list)
    pending_bytes: int = 0


async def import_sessions(
    store: SessionStore,
    path: str | os.PathLike[str],
    *,
    on_conflict: OnConflict = "skip",
    progress: Progress | None = None,
    dry_run: bool = False,
    max_line_bytes: int = DEFAULT_IMPORT_LINE_BYTES,
    holders: Iterable[SessionDataHolder] = (),
) -> TransferReport:
    """Load an export file written by `export_sessions` (or `export_user`) into `store`;
    returns the counts.

    Each session is inserted with its exported `version` and full history. `on_conflict`
    decides what happens to ids (and scope keys) the store already has: ``"skip"`` (default),
    ``"overwrite"``, ``"newer"`` (higher version wins) or ``"error"``. Sessions that have
    expired by now are not restored (counted as `expired`). Streams the file: memory stays
    constant whatever its size. A replaced session is deleted, then inserted (readers may see it
    absent for that moment), and takes the file's `auth_info`: null unless it was exported with
    ``include_auth=True``. With `dry_run`, the whole file is read and checked and the store
    consulted, but nothing is written: the report says what a real import would do now (size
    limits of the store are only checked by a real import).

    Raises `BackupFormatError` at the first bad line (its `report` says what was imported
    before it; nothing after it is), `SessionConflict` under ``"error"``, and the store's own
    errors (`StoreUnavailable`, `SessionTooLarge`, ...) with the line number in a note
    (`failed_line` reads it back). Sessions are written in batches (`SessionStore.restore_many`)
    with the same outcomes as one by one: a session the store refuses stops the import at its
    own line, the sessions before it written. `StoreUnavailable` while a batch is written names
    the batch's first line; some of its sessions may have landed (a re-run with ``"skip"`` or
    ``"newer"`` completes the import).

    Memory stays flat whatever the file holds: a line longer than `max_line_bytes` (default
    64 MiB: a session with its whole history on one line), or than the longest line `store`
    could accept at all, is a `BackupFormatError` naming the line, raised before the line is
    read whole (a gzip bomb is an error, not an out-of-memory). Raise it to import larger sessions.

    Conversation lines (format version 2) go to the first of `holders` that can import
    (`ExportableDataHolder`, e.g. the conversation store beside `store`) under the same
    `on_conflict` (see the holder's `import_items`); without one they are not written: counted
    in `conversations_skipped` with `conversations_skipped_reason`, and logged as a warning. A
    conversation line the holder refuses (`InvalidExportItem`) is a `BackupFormatError` at it.
    """
    policy = check_on_conflict(on_conflict)
    holder = next((h for h in holders if isinstance(h, ExportableDataHolder)), None)
    if max_line_bytes <= 0:
        raise ValueError("max_line_bytes must be > 0")
    source = Path(path)
    reader = await asyncio.to_thread(ExportReader, source, min(max_line_bytes, store_line_bound(store)))
    state = _ImportState(holder=holder)
    try:
        while not state.end_seen:
            chunk = await asyncio.to_thread(reader.chunk, READ_CHUNK)
            if isinstance(chunk, BackupFormatError):
                chunk.report = state.report
                raise chunk
            if not chunk:
                break
            # Lines are let go of as they are read: a batch of parsed sessions takes their place.
            chunk.reverse()
            while chunk:
                lineno, raw = chunk.pop()
                try:
                    await _import_line(store, policy, state, lineno, raw, dry_run)
                except BackupFormatError:
                    await _write_sessions(store, policy, state, dry_run)  # the lines before it
                    raise
            await _write_sessions(store, policy, state, dry_run)
            if progress is not None:
                progress(state.report)
    except BackupFormatError as exc:
        exc.report = state.report
        raise
    finally:
        await asyncio.to_thread(reader.close)
    if not state.header_seen:
        raise BackupFormatError(1, "the file is empty", state.report)
    if not state.end_seen:
        raise BackupFormatError(
            state.last_line + 1, "the file ends without its end marker: it is truncated", state.report
        )
    logger.info(
        "%s %d sessions (%d replaced, %d skipped, %d expired), %d scope keys",
        "dry run: would import" if dry_run else "imported",
        state.report.imported,
        state.report.replaced,
        state.report.skipped,
        state.report.expired,
        state.report.scopes,
    )
    if state.conversations:
        logger.info(
            "%s %d conversations (%d replaced, %d skipped)",
            "dry run: would import" if dry_run else "imported",
            state.report.conversations,
            state.report.conversations_replaced,
            state.report.conversations_skipped,
        )
    if state.report.conversations_skipped_reason is not None:
        logger.warning(
            "%d conversations of the file were not imported: %s",
            state.report.conversations_skipped,
            state.report.conversations_skipped_reason,
        )
    return state.report


async def _import_line(
    store: SessionStore, policy: OnConflict, state: _ImportState, lineno: int, raw: bytes, dry_run: bool
) -> None:
    state.last_line = lineno
    if state.end_seen:
        raise BackupFormatError(lineno, "content after the end marker")
    obj = parse_line(lineno, raw, store.max_depth + LINE_NESTING)
    if not state.header_seen:
        state.version = _check_header(obj)
        state.header_seen = True
        return
    kind = obj.get("kind")
    if kind == "session":
        item = _parse_session(lineno, obj)
        state.pending.append(item)
        state.pending_bytes += len(raw)
        state.sessions += 1
        state.history_entries += len(item.restore.history)
        if len(state.pending) >= RESTORE_BATCH or state.pending_bytes >= _BATCH_BYTES:
            await _write_sessions(store, policy, state, dry_run)
        return
    # Any other line waits for the sessions before it, as if each line were imported alone.
    await _write_sessions(store, policy, state, dry_run)
    try:
        if kind == "scope":
            scope, owner, values = _parse_scope(lineno, obj)
            state.report.scopes += await restore_scope(store, scope, owner, values, policy, dry_run=dry_run)
            state.scopes += 1
        elif kind == "conversation":
            await _import_conversation(state, policy, lineno, obj, dry_run)
        elif kind == "end":
            expected = (obj.get("sessions"), obj.get("scopes"), obj.get("history_entries"))
            held = (state.sessions, state.scopes, state.history_entries)
            if expected != held:
                raise BackupFormatError(
                    lineno,
                    f"the end marker counts (sessions, scopes, history entries) {expected} but the file holds {held}",
                )
            conversations = obj.get("conversations", 0)
            if (
                not isinstance(conversations, int)
                or isinstance(conversations, bool)
                or conversations != state.conversations
            ):
                raise BackupFormatError(
                    lineno,
                    f"the end marker counts {conversations!r} conversations but the file holds {state.conversations}",
                )
            state.end_seen = True
        else:
            raise BackupFormatError(lineno, f"unknown line kind {kind!r}")
    except BackupFormatError:
        raise
    except AgentSessionsError as exc:
        exc.add_note(_LINE_NOTE.format(lineno))
        raise


def _parse_conversation(lineno: int, obj: dict[str, Any]) -> dict[str, Any]:
    """The item of a conversation line (the holder checks the rest)."""
    item = obj.get("conversation")
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("record"), dict)
        or not isinstance(item["record"].get("conversation_id"), str)
        or not isinstance(item.get("entries"), list)
        or any(not isinstance(entry, dict) for entry in item["entries"])
    ):
        raise BackupFormatError(
            lineno, "a conversation line needs a 'conversation' object with a 'record' object and an 'entries' list"
        )
    return item


async def _import_conversation(
    state: _ImportState, policy: OnConflict, lineno: int, obj: dict[str, Any], dry_run: bool
) -> None:
    """Hand one conversation line to the holder, or count it as skipped when there is none."""
    if state.version < FORMAT_VERSION:
        raise BackupFormatError(lineno, f"conversation lines need format_version {FORMAT_VERSION}")
    item = _parse_conversation(lineno, obj)
    state.conversations += 1
    report = state.report
    if state.holder is None:
        report.conversations_skipped += 1
        report.conversations_skipped_reason = NO_HOLDER_REASON
        return
    try:
        done = await state.holder.import_items([item], policy, dry_run=dry_run)
    except InvalidExportItem as exc:  # the file's content, not the store, is at fault
        raise BackupFormatError(lineno, str(exc)) from exc
    report.conversations += done.imported
    report.conversations_replaced += done.replaced
    report.conversations_skipped += done.skipped


async def _write_sessions(store: SessionStore, policy: OnConflict, state: _ImportState, dry_run: bool) -> None:
    """Write the pending session lines in one batch; a store error names the line it stopped at."""
    if not state.pending:
        return
    batch, state.pending, state.pending_bytes = state.pending, [], 0
    done = 0
    try:
        async for outcome in restore_sessions(store, [line.restore for line in batch], policy, dry_run=dry_run):
            state.report.count(outcome, len(batch[done].restore.history))
            done += 1
    except AgentSessionsError as exc:
        exc.add_note(_LINE_NOTE.format(batch[done].lineno))
        raise


def failed_line(exc: BaseException) -> int | None:
    """The export-file line an error raised by `import_sessions` was importing, if known."""
    if isinstance(exc, BackupFormatError):
        return exc.line
    for note in getattr(exc, "__notes__", ()):
        found = _LINE_NOTE_PATTERN.fullmatch(str(note))
        if found:
            return int(found.group(1))
    return None

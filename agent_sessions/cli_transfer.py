"""The `agent-sessions` commands that move whole stores: ``export`` (to a JSON Lines file),
``import`` (from one) and ``migrate`` (store to store), with their progress bars and the one-line
report of which line of a file stopped an import. `cli.py` registers them on the app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .cli_support import (
    CliError,
    ConflictPolicy,
    Store,
    checked_url,
    conversation_holders,
    err_console,
    fail,
    one_line,
    opened_store,
    out_console,
    progress,
    run_command,
    safe_url,
    sessions_text,
    sqlite_file,
    summary,
)
from .errors import AgentSessionsError, StoreUnavailable
from .lifecycle import ExportableDataHolder, FullyExportableDataHolder, SessionDataHolder, can_export, can_export_all
from .ops import (
    DEFAULT_IMPORT_LINE_BYTES,
    BackupFormatError,
    TransferReport,
    count_export_sessions,
    count_sessions,
    export_sessions,
    export_user,
    failed_line,
    import_sessions,
    migrate,
)
from .stores import DEFAULT_STORE_URL, SessionStore

__all__ = ["export_command", "import_command", "migrate_command"]

logger = logging.getLogger(__name__)

#: The ``--count/--no-count`` flag of export and migrate.
Count = Annotated[
    bool,
    typer.Option(
        "--count/--no-count", help="Count the sessions first, to show a progress bar with a total and an ETA."
    ),
]


async def _session_total(store: SessionStore, status: str, batch_size: int) -> int:
    """How many live sessions `store` holds (a progress bar's total), under a `status` spinner."""
    with err_console().status(status):
        return await count_sessions(store, batch_size=batch_size)


def export_command(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="The file to write. A name ending in .gz is gzip-compressed.", show_default=False
        ),
    ],
    store: Store = DEFAULT_STORE_URL,
    include_auth: Annotated[
        bool,
        typer.Option(
            "--include-auth", help="Also export each session's auth_info. It holds secrets: protect the file."
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="How many sessions to read from the store at a time.")
    ] = 500,
    count: Count = True,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="Export only this user's sessions, user scope and conversations (portability).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Back up every live session to a JSON Lines file.

    The file holds each session with its full history, and all user and app scope data (with
    --user: that user's sessions, user scope and conversations only). It is created with mode
    0600, readable by you only whatever the umask, because it holds live session ids: anyone
    who has one can act as that session. Restore it with the import command.
    """
    console = err_console()
    if not path.parent.is_dir():
        fail(f"cannot write {path}: the directory {path.parent} does not exist", 1)

    async def body() -> Any:
        async with opened_store(store) as s:
            if user is not None:
                holders = await conversation_holders(s)
                return await export_user(s, user, path, include_auth=include_auth, holders=holders)
            total = await _session_total(s, "Counting the sessions…", batch_size) if count else None
            with progress(console, "Exporting", total) as update:
                return await export_sessions(
                    s,
                    path,
                    include_auth=include_auth,
                    batch_size=batch_size,
                    progress=lambda r: update(r.imported),
                    holders=await conversation_holders(s),
                )

    report = run_command(store, body)
    conversations = f", and {report.conversations} conversations," if report.conversations or user else ""
    out_console().print(
        f"Exported {report.sessions} sessions, {report.scopes} scopes and {report.history_entries} history "
        f"entries{conversations} to {escape(str(report.path))} ({report.bytes_written:,} bytes"
        f"{', auth_info included' if include_auth else ''})."
    )
    for name in report.not_exported:
        err_console().print(f"warning: the {name} data holder cannot export this: what it keeps is not in the file")


def _import_failure(exc: BaseException, path: Path, store: str, dry_run: bool) -> str | None:
    """One line saying which line of the file stopped an import, and whose fault it was."""
    line = failed_line(exc)
    if line is None:
        return None
    done = "checked" if dry_run else "imported"
    if isinstance(exc, BackupFormatError):
        return (
            f"line {line} of {path} is bad (the file): {str(exc).removeprefix(f'line {line}: ')}; "
            f"{sessions_text(exc.report.sessions_seen)} before it {'was' if exc.report.sessions_seen == 1 else 'were'} "
            f"{done}, none after it"
        )
    reason = one_line(exc)
    after = "none after it"
    if isinstance(exc, StoreUnavailable | ConnectionError | TimeoutError):
        reason = f"cannot reach the store: {reason}"
        # Sessions are written in batches: the line named is the batch's first, and some of
        # that batch may have landed before the store went away.
        after = "some of its batch may have landed; run the import again with --on-conflict skip to finish"
    return (
        f"line {line} of {path} could not be written (the store, {safe_url(store)}): {reason}; "
        f"the lines before it were {done}, {after}"
    )


@asynccontextmanager
async def _import_holders(store: SessionStore, missing_sqlite: bool) -> AsyncIterator[list[SessionDataHolder]]:
    """Where ``import`` writes conversations: the conversation store beside `store`; for a dry
    run against a SQLite file that does not exist yet, an empty one in memory (it creates nothing)."""
    if not missing_sqlite:
        yield await conversation_holders(store, importing=True)
        return
    try:
        from .integrations.pydantic_ai import DatabaseConversationStore
    except ImportError:
        yield []
        return
    empty = DatabaseConversationStore("sqlite+aiosqlite://", create_tables=False)
    try:
        yield [empty]
    finally:
        await empty.close()


def import_command(
    path: Annotated[
        Path, typer.Argument(metavar="FILE", help="A file written by the export command.", show_default=False)
    ],
    store: Store = DEFAULT_STORE_URL,
    on_conflict: Annotated[
        ConflictPolicy,
        typer.Option("--on-conflict", help="What to do with session ids and conversation ids the store already has."),
    ] = ConflictPolicy.skip,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Read and check the whole file and say what would happen, without writing anything."
        ),
    ] = False,
    max_line_bytes: Annotated[
        int,
        typer.Option(
            "--max-line-bytes",
            min=1,
            help="The longest line to read (one session with its whole history); longer lines are refused unread.",
        ),
    ] = DEFAULT_IMPORT_LINE_BYTES,
) -> None:
    """Restore sessions from an export file (sessions that have expired since are not restored)."""
    console = err_console()

    async def body() -> TransferReport:
        total = await count_export_sessions(path)
        target = store
        missing = sqlite_file(store)
        if dry_run and missing is not None and not missing.exists():
            # A dry run writes nothing, not even a new empty database file: the file that a
            # real import would create starts empty, as a memory store does.
            logger.info("%s does not exist yet: the dry run checks against an empty store", missing)
            target = "memory://"
        async with opened_store(target, must_exist=False) as s, _import_holders(s, target != store) as holders:
            with progress(console, "Checking" if dry_run else "Importing", total) as update:
                try:
                    return await import_sessions(
                        s,
                        path,
                        on_conflict=on_conflict.value,
                        progress=lambda r: update(r.sessions_seen),
                        dry_run=dry_run,
                        max_line_bytes=max_line_bytes,
                        holders=holders,
                    )
                except (AgentSessionsError, ConnectionError, TimeoutError) as exc:
                    message = _import_failure(exc, path, store, dry_run)
                    if message is None:
                        raise
                    raise CliError(message) from exc

    report = run_command(store, body)
    if report.conversations_skipped_reason is not None:
        err_console().print(
            f"warning: {report.conversations_skipped} conversations of the file were not imported: "
            f"{report.conversations_skipped_reason}"
        )
    if dry_run:
        out_console().print(f"Dry run, nothing written. Importing {escape(str(path))} would give: {summary(report)}.")
    else:
        out_console().print(f"Imported from {escape(str(path))}: {summary(report)}.")


async def _conversation_pairs(
    source: SessionStore, target: SessionStore
) -> list[tuple[FullyExportableDataHolder, ExportableDataHolder]]:
    """The conversation store beside SRC paired with the one beside DST; a warning when SRC
    keeps conversations and DST has no conversation store (a memory store) to take them."""
    sources = [h for h in await conversation_holders(source) if can_export_all(h)]
    if not sources:
        return []
    targets = [h for h in await conversation_holders(target, importing=True) if can_export(h)]
    if not targets:
        from pydantic_ai.conversation_store import ConversationStore  # installed: SRC has a conversation store

        if isinstance(sources[0], ConversationStore) and await sources[0].read_records(limit=1):
            err_console().print("warning: SRC keeps conversations but DST has no conversation store: not migrated")
        return []
    return [(sources[0], targets[0])]


def migrate_command(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The source store's URL.", callback=checked_url)],
    dst: Annotated[str, typer.Argument(metavar="DST", help="The destination store's URL.", callback=checked_url)],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="How many sessions to read from SRC at a time.")
    ] = 500,
    on_conflict: Annotated[
        ConflictPolicy,
        typer.Option("--on-conflict", help="What to do with session (and conversation) ids DST already has."),
    ] = ConflictPolicy.newer,
    count: Count = True,
) -> None:
    """Copy every live session, its history and scope data, and the conversations kept beside
    SRC, from SRC to DST (safe to re-run)."""
    console = err_console()

    async def body() -> TransferReport:
        async with opened_store(src) as source, opened_store(dst, must_exist=False) as target:
            pairs = await _conversation_pairs(source, target)
            total = await _session_total(source, "Counting the sessions in SRC…", batch_size) if count else None
            with progress(console, "Migrating", total) as update:
                return await migrate(
                    source,
                    target,
                    batch_size=batch_size,
                    on_conflict=on_conflict.value,
                    progress=lambda r: update(r.sessions_seen),
                    conversations=pairs,
                )

    report = run_command(None, body)
    out_console().print(f"Migrated {safe_url(src)} → {safe_url(dst)}: {summary(report)}.", highlight=False)

"""The `agent-sessions` command: inspect, back up, restore, migrate and clean a session store.

Every command takes ``--store URL`` (default: ``$AGENT_SESSIONS_STORE``, else the embedded
SQLite file ``agent_sessions.db`` in the working directory). Exit codes: 0 success, 1 the
operation failed (store unreachable, session not found, bad export file), 2 bad usage (a
malformed store URL, checked before anything connects; a malformed session id; a bad option),
130 interrupted. Errors are one line on stderr;
``-v`` / ``-vv`` before the command also show the library's logs.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

try:
    import typer
    from rich.markup import escape
    from rich.table import Table
    from typer.core import TyperGroup
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the agent-sessions command needs typer and rich: pip install agent-sessions[cli]") from exc

from . import __version__
from .cli_support import (
    REDACTED,
    CliError,
    ConflictPolicy,
    checked_url,
    configure_logging,
    err_console,
    fail,
    one_line,
    opened_store,
    out_console,
    progress,
    redact,
    run_command,
    safe_url,
    sessions_text,
    sqlite_file,
    summary,
    when,
)
from .display import conversation_document, print_stats, session_document, store_stats, stored_conversation
from .errors import AgentSessionsError, InvalidSessionId, StoreUnavailable
from .ids import validate_session_id
from .ops import (
    DEFAULT_IMPORT_LINE_BYTES,
    BackupFormatError,
    TransferReport,
    count_export_sessions,
    count_sessions,
    export_sessions,
    failed_line,
    import_sessions,
    migrate,
)
from .search import HistoryHit
from .session import Session
from .stores import DEFAULT_STORE_URL, create_store

__all__ = ["app", "main", "redact"]

T = TypeVar("T")
logger = logging.getLogger(__name__)


class CommandGroup(TyperGroup):
    """The top-level group; its list of commands shows each one's first sentence whole (click's
    default cuts it to the terminal's width with "...")."""

    # typer vendors click and keeps its Context/HelpFormatter types private: hence Any.
    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Write the commands section: name and first sentence, wrapped to the terminal."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="agent-sessions",
    cls=CommandGroup,
    help="Inspect, back up, restore, migrate and clean agent_sessions stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

STORE_HELP = (
    "The store to use, as a URL: memory://, sqlite+aiosqlite:///file.db, "
    "postgresql+asyncpg://user@host:5432/db, redis://host:6379/0 or redis+cluster://host:7000."
)


Store = Annotated[
    str,
    typer.Option(
        "--store", "-s", envvar="AGENT_SESSIONS_STORE", help=STORE_HELP, show_envvar=True, callback=checked_url
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON, with raw numbers (for scripts).")]


# ---------------------------------------------------------------- commands
def _version(value: bool) -> None:
    if value:
        out_console().print(f"agent-sessions {__version__}")
        raise typer.Exit()


_log_handler: logging.Handler | None = None


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Show library logs (-v info, -vv debug).")
    ] = 0,
) -> None:
    """Inspect, back up, restore, migrate and clean agent_sessions stores."""
    configure_logging(verbose)


@app.command("list")
def list_sessions(
    store: Store = DEFAULT_STORE_URL,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's sessions.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="Sessions per page.")] = 20,
    page: Annotated[int, typer.Option("--page", "-p", min=1, help="Page number (1 = first).")] = 1,
    as_json: AsJson = False,
) -> None:
    """List live sessions, a page at a time (a user's newest first; all sessions in store order)."""

    async def body() -> tuple[list[Session], bool]:
        async with opened_store(store) as s:
            skip = (page - 1) * limit
            if user is not None:
                found = sorted(await s.get_user_sessions(user), key=lambda x: x.last_accessed_at, reverse=True)
                return found[skip : skip + limit], len(found) > skip + limit
            rows: list[Session] = []
            seen = 0
            async for session in s.iter_sessions(batch_size=min(max(limit, 100), 1000)):
                seen += 1
                if seen <= skip:
                    continue
                if len(rows) == limit:
                    return rows, True
                rows.append(session)
            return rows, False

    sessions, more = run_command(store, body)
    if as_json:
        out_console().print_json(data={"page": page, "more": more, "sessions": [s.to_dict() for s in sessions]})
        return
    console = out_console()
    if not sessions:
        console.print("No sessions." if page == 1 else f"No sessions on page {page}.")
        return
    # The id must stay whole (it is what `show` takes); on a narrow terminal the less
    # important columns go rather than squeezing it.
    wide = console.width >= 130
    table = Table(title=f"Sessions{f' of {user}' if user else ''} — page {page}", title_justify="left")
    table.add_column("session id", no_wrap=True, min_width=43, style="cyan")
    table.add_column("user", min_width=4, overflow="fold")
    table.add_column("last access (UTC)" if wide else "last access", no_wrap=True)
    if wide:
        table.add_column("expires (UTC)", no_wrap=True)
        table.add_column("version", justify="right")
    table.add_column("history", justify="right", no_wrap=True)
    for s in sessions:
        cells = [s.session_id, escape(s.user_id or "—"), when(s.last_accessed_at, short=not wide)]
        if wide:
            cells += [when(s.expiry_at), str(s.version)]
        table.add_row(*cells, str(s.history_seq))
    console.print(table)
    if more:
        console.print(f"More on page {page + 1}: [bold]--page {page + 1}[/]")


@app.command("show")
def show_session(
    session_id: Annotated[
        str, typer.Argument(metavar="ID", help='The session id (one starting with "-" goes after --).')
    ],
    store: Store = DEFAULT_STORE_URL,
    history: Annotated[int, typer.Option("--history", min=0, help="How many recent history entries to show.")] = 10,
    as_json: AsJson = False,
) -> None:
    """Show one session as indented JSON: its state, preferences, recent history and stored conversation.

    Times read as dates with rounded ages ("3m 20s ago") and durations are rounded; --json
    prints the raw numbers instead. auth_info and secret-looking values are redacted.
    """
    try:
        sid = validate_session_id(session_id)
    except InvalidSessionId as exc:
        fail(str(exc), 2)

    async def body() -> tuple[Session, list[dict[str, Any]], list[dict[str, Any]] | None, float]:
        async with opened_store(store) as s:
            session = await s.get(sid)
            if session is None:
                raise CliError("no live session with that id (it never existed, expired or was deleted)")
            entries = (await s.get_history(sid, limit=history)).entries if history else []
            return session, entries, await stored_conversation(s, session), s.clock()

    session, entries, messages, now = run_command(store, body)
    conversation = None if messages is None else conversation_document(messages, redact=redact)
    if as_json:
        data = redact(session.model_dump(exclude={"history"}))
        data["auth_info"] = None if session.auth_info is None else REDACTED
        data["history"] = redact(entries)
        if conversation is not None:
            data["conversation"] = conversation
        out_console().print_json(data=data)
        return
    doc = session_document(session, entries, now=now, redact=redact, conversation=conversation)
    # Plain, indented JSON: rich's JSON highlighter could mistake a value for markup, and a long
    # value is left to the terminal to wrap (soft wrap), never cut.
    out_console().print(json.dumps(doc, indent=2, ensure_ascii=False), markup=False, highlight=False)


Count = Annotated[
    bool,
    typer.Option(
        "--count/--no-count", help="Count the sessions first, to show a progress bar with a total and an ETA."
    ),
]


@app.command("export")
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
) -> None:
    """Back up every live session to a JSON Lines file.

    The file holds each session with its full history, and all user and app scope data. It is
    created with mode 0600, readable by you only whatever the umask, because it holds live
    session ids: anyone who has one can act as that session. Restore it with the import command.
    """
    console = err_console()
    if not path.parent.is_dir():
        fail(f"cannot write {path}: the directory {path.parent} does not exist", 1)

    async def body() -> Any:
        async with opened_store(store) as s:
            total = None
            if count:
                with console.status("Counting the sessions…"):
                    total = await count_sessions(s, batch_size=batch_size)
            with progress(console, "Exporting", total) as update:
                return await export_sessions(
                    s,
                    path,
                    include_auth=include_auth,
                    batch_size=batch_size,
                    progress=lambda r: update(r.imported),
                )

    report = run_command(store, body)
    out_console().print(
        f"Exported {report.sessions} sessions, {report.scopes} scopes and {report.history_entries} history "
        f"entries to {escape(str(report.path))} ({report.bytes_written:,} bytes"
        f"{', auth_info included' if include_auth else ''})."
    )


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


@app.command("import")
def import_command(
    path: Annotated[
        Path, typer.Argument(metavar="FILE", help="A file written by the export command.", show_default=False)
    ],
    store: Store = DEFAULT_STORE_URL,
    on_conflict: Annotated[
        ConflictPolicy,
        typer.Option("--on-conflict", help="What to do with session ids the store already has."),
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
        async with opened_store(target, must_exist=False) as s:
            with progress(console, "Checking" if dry_run else "Importing", total) as update:
                try:
                    return await import_sessions(
                        s,
                        path,
                        on_conflict=on_conflict.value,
                        progress=lambda r: update(r.sessions_seen),
                        dry_run=dry_run,
                        max_line_bytes=max_line_bytes,
                    )
                except (AgentSessionsError, ConnectionError, TimeoutError) as exc:
                    message = _import_failure(exc, path, store, dry_run)
                    if message is None:
                        raise
                    raise CliError(message) from exc

    report = run_command(store, body)
    if dry_run:
        out_console().print(f"Dry run, nothing written. Importing {escape(str(path))} would give: {summary(report)}.")
    else:
        out_console().print(f"Imported from {escape(str(path))}: {summary(report)}.")


@app.command("migrate")
def migrate_command(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The source store's URL.", callback=checked_url)],
    dst: Annotated[str, typer.Argument(metavar="DST", help="The destination store's URL.", callback=checked_url)],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="How many sessions to read from SRC at a time.")
    ] = 500,
    on_conflict: Annotated[
        ConflictPolicy, typer.Option("--on-conflict", help="What to do with session ids DST already has.")
    ] = ConflictPolicy.newer,
    count: Count = True,
) -> None:
    """Copy every live session, its history and scope data from SRC to DST (safe to re-run)."""
    console = err_console()

    async def body() -> TransferReport:
        async with opened_store(src) as source, opened_store(dst, must_exist=False) as target:
            total = None
            if count:
                with console.status("Counting the sessions in SRC…"):
                    total = await count_sessions(source, batch_size=batch_size)
            with progress(console, "Migrating", total) as update:
                return await migrate(
                    source,
                    target,
                    batch_size=batch_size,
                    on_conflict=on_conflict.value,
                    progress=lambda r: update(r.sessions_seen),
                )

    report = run_command(None, body)
    out_console().print(f"Migrated {safe_url(src)} → {safe_url(dst)}: {summary(report)}.", highlight=False)


@app.command("cleanup")
def cleanup_command(
    store: Store = DEFAULT_STORE_URL,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="How many expired sessions to delete per step.")
    ] = 500,
) -> None:
    """Delete expired sessions now (with their history and index entries)."""

    async def body() -> int:
        async with opened_store(store) as s:
            return await s.cleanup_expired(batch_size=batch_size)

    removed = run_command(store, body)
    out_console().print(f"Removed {removed} expired session{'' if removed == 1 else 's'}.")


@app.command("stats")
def stats_command(
    store: Store = DEFAULT_STORE_URL,
    full_history: Annotated[
        bool, typer.Option("--full-history", help="Analyse every stored entry, not just each recent window.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Counts, sizes and a history analysis summary (tool usage, runs, errors, activity)."""

    async def body() -> dict[str, Any]:
        async with opened_store(store) as s:
            return await store_stats(s, full_history=full_history)

    stats = run_command(store, body)
    if as_json:
        out_console().print_json(data=stats)
        return
    print_stats(out_console(), stats)


@app.command("demo")
def demo_command(
    store: Store = DEFAULT_STORE_URL,
    model: Annotated[
        str | None, typer.Option("--model", help="A pydantic-ai model name; default: an offline scripted model.")
    ] = None,
    user: Annotated[str, typer.Option("--user", help="The demo user's id.")] = "demo-user",
) -> None:
    """Run an agent with a persistent session over a few turns (offline unless --model is given)."""
    from .demo import run_demo

    async def body() -> None:
        # A bad URL or an unreachable server fails here, in one line, before the demo starts.
        async with opened_store(store, must_exist=False) as s:
            await s.get_user_sessions(user)
        await run_demo(store, model=model, console=out_console(), user_id=user)

    run_command(store, body)


@app.command("mcp")
def mcp_command(
    store: Store = DEFAULT_STORE_URL,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Act as this user: their latest live session, or a new one.")
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Act on this session (it must exist; with --user, be theirs).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            metavar="KEY=VALUE",
            help="A store option, e.g. schema=tenant_a or prefix=app: (repeat).",
        ),
    ] = None,
) -> None:
    """Serve the session tools to an MCP client over stdio (the identity is fixed here, never by the model).

    stdout carries the MCP protocol only; errors and -v logs go to stderr.
    """
    try:
        from .integrations.mcp import check_identity, parse_store_options, run_stdio_server
    except ImportError as exc:
        fail(str(exc), 1)
    try:
        check_identity(user_id=user, session_id=session)
        options = parse_store_options(option or [])
    except ValueError as exc:
        fail(str(exc), 2)
    try:
        target = create_store(store, **options)
    except ImportError as exc:
        fail(str(exc), 1)
    except (ValueError, TypeError) as exc:
        fail(f"bad --store URL {safe_url(store)!r} or --option: {exc}", 2)
    run_command(store, lambda: run_stdio_server(target, user_id=user, session_id=session))


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="Words to look for (any string; quote it).")],
    store: Store = DEFAULT_STORE_URL,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Search all this user's live sessions.")] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Search this session only (with --user: if it is theirs).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="How many hits to show.")] = 10,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only entries of this type (repeat for several).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Search history entries across a user's sessions, best first (SQLite and PostgreSQL stores).

    Matched words are highlighted in each snippet; --json prints the hits with their entries
    (secret-looking values redacted).
    """
    if user is None and session is None:
        fail("give --user ID (all their sessions) or --session ID (one session)", 2)
    if session is not None:
        try:
            session = validate_session_id(session)
        except InvalidSessionId as exc:
            fail(str(exc), 2)

    async def body() -> list[HistoryHit]:
        async with opened_store(store) as s:
            return await s.search_history(user, query, limit=limit, types=types, session_id=session)

    hits = run_command(store, body)
    if as_json:
        out_console().print_json(
            data={
                "query": query,
                "hits": [
                    {"session_id": h.session_id, "seq": h.seq, "score": h.score, "snippet": h.snippet}
                    | {"entry": redact(h.entry)}
                    for h in hits
                ],
            }
        )
        return
    console = out_console()
    if not hits:
        console.print("No matching history entries.")
        return
    wide = console.width >= 130
    table = Table(title=f"History matching {escape(query)!r}", title_justify="left")
    table.add_column("session id", no_wrap=True, min_width=43, style="cyan")
    table.add_column("#", justify="right", no_wrap=True)
    if wide:
        table.add_column("when (UTC)", no_wrap=True)
    table.add_column("entry", overflow="fold", min_width=20, ratio=1)
    for h in hits:
        snippet = _HIGHLIGHT.sub(r"[bold yellow]\1[/]", escape(h.snippet.replace("\n", " ")))
        cells = [h.session_id, str(h.seq)] + ([when(h.entry.get("timestamp"))] if wide else [])
        table.add_row(*cells, f"[dim]{escape(str(h.entry['type']))}:[/] {snippet}")
    console.print(table)


_HIGHLIGHT = re.compile(r"\*\*(.+?)\*\*")


def main() -> None:
    """Entry point of the `agent-sessions` console script."""
    app(prog_name="agent-sessions")


if __name__ == "__main__":  # pragma: no cover
    main()

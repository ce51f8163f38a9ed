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
import os
import re
import shlex
from typing import Annotated, Any

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
    AsJson,
    CliError,
    Store,
    configure_logging,
    conversation_holders,
    fail,
    one_line,
    opened_store,
    out_console,
    redact,
    run_command,
    safe_url,
    when,
)
from .cli_transfer import export_command, import_command, migrate_command
from .display import conversation_document, print_stats, session_document, store_stats, stored_conversation
from .errors import AgentSessionsError, InvalidSessionId
from .ids import validate_session_id, validate_user_id
from .listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, SessionPage
from .ops import erase_user
from .search import HistoryHit
from .session import Session
from .stores import DEFAULT_STORE_URL, create_store

__all__ = ["app", "main", "redact"]


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


# ---------------------------------------------------------------- commands
def _version(value: bool) -> None:
    if value:
        out_console().print(f"agent-sessions {__version__}")
        raise typer.Exit()


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
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=MAX_PAGE_SIZE, help="Sessions per page.")
    ] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None, typer.Option("--cursor", "-c", help="Where the previous page ended (its next-page hint).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List live sessions a page at a time, in session id order (each page starts where a cursor says)."""

    async def body() -> SessionPage:
        async with opened_store(store) as s:
            return await s.list_sessions(user, limit=limit, cursor=cursor)

    page = run_command(store, body)
    sessions = page.sessions
    if as_json:
        data = {"next_cursor": page.next_cursor, "sessions": [s.to_dict() for s in sessions]}
        out_console().print_json(data=data)
        return
    console = out_console()
    if not sessions:
        console.print("No sessions." if cursor is None else "No more sessions.")
        return
    # The id must stay whole (it is what `show` takes); on a narrow terminal the less
    # important columns go rather than squeezing it.
    wide = console.width >= 130
    table = Table(title=f"Sessions{f' of {escape(user)}' if user else ''}", title_justify="left")
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
    if page.next_cursor is not None:
        console.print("Next page:", escape(next_page_command(store, user, limit, page.next_cursor)), soft_wrap=True)


def next_page_command(store: str, user: str | None, limit: int, cursor: str) -> str:
    """The shell command that lists the page after this one (the store named unless it is the
    default or comes from AGENT_SESSIONS_STORE; a password in it is masked)."""
    words = ["agent-sessions", "list"]
    if store not in (DEFAULT_STORE_URL, os.environ.get("AGENT_SESSIONS_STORE")):
        words += ["--store", safe_url(store)]
    if user is not None:
        words += ["--user", user]
    if limit != DEFAULT_PAGE_SIZE:
        words += ["--limit", str(limit)]
    return shlex.join([*words, "--cursor", cursor])


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


# export, import and migrate (cli_transfer.py), here so that --help lists them in this order.
app.command("export")(export_command)
app.command("import")(import_command)
app.command("migrate")(migrate_command)


@app.command("erase")
def erase_command(
    user: Annotated[str, typer.Option("--user", help="The user id whose data to erase.", show_default=False)],
    store: Store = DEFAULT_STORE_URL,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Erase without asking for confirmation.")] = False,
) -> None:
    """Erase one user's data: every session with its history, the user scope and conversations.

    Preferences and user: keys go with the user scope; conversations are those run_turn keeps
    beside the sessions (SQL tables, Redis keys). Asks first unless --yes. It cannot be undone:
    keep a copy with export --user first if you need one. Running it again erases nothing more.
    """
    try:
        validate_user_id(user)
    except AgentSessionsError as exc:
        fail(one_line(exc), 2)
    if not yes and not typer.confirm(
        f"Erase every session, preference and conversation of user {user!r} in {safe_url(store)}?"
    ):
        fail("nothing was erased", 1)

    async def body() -> Any:
        async with opened_store(store) as s:
            return await erase_user(s, user, holders=await conversation_holders(s))

    report = run_command(store, body)
    out_console().print(
        f"Erased user {escape(user)}: {report.sessions} sessions, {report.history_entries} history entries, "
        f"{report.scope_keys} user scope keys and {report.conversations} conversations.",
        highlight=False,
    )


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

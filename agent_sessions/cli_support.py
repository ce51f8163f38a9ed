"""What the `agent-sessions` commands share: the ``--store`` and ``--json`` options, store URLs
and opening, consoles, one-line errors and exit codes, redaction, progress bars and report
wording. The commands live in `cli.py` and `cli_transfer.py`."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import search
from .errors import (
    AgentSessionsError,
    InvalidCursor,
    InvalidSearchQuery,
    InvalidSessionId,
    InvalidUserId,
    StoreUnavailable,
)
from .lifecycle import SessionDataHolder
from .ops import TransferReport
from .stores import InvalidStoreUrl, SessionStore, create_store, parse_store_url

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: The handler `configure_logging` installed last (replaced on the next call).
_log_handler: logging.Handler | None = None


def checked_url(value: str) -> str:
    """Option callback: a malformed store URL is bad usage (exit 2), reported before any connection."""
    try:
        parse_store_url(value)
    except InvalidStoreUrl as exc:
        fail(f"bad store URL: {exc}", 2)
    except ImportError as exc:
        fail(str(exc), 1)
    return value


REDACTED = "***redacted***"
#: Keys whose values `show` never prints (nor the search index holds).
SECRET_KEY = search.SECRET_KEY


STORE_HELP = (
    "The store to use, as a URL: memory://, sqlite+aiosqlite:///file.db, "
    "postgresql+asyncpg://user@host:5432/db, redis://host:6379/0 or redis+cluster://host:7000."
)


#: The ``--store`` option every command but migrate takes (checked before anything connects).
Store = Annotated[
    str,
    typer.Option(
        "--store", "-s", envvar="AGENT_SESSIONS_STORE", help=STORE_HELP, show_envvar=True, callback=checked_url
    ),
]
#: The ``--json`` flag of the commands that can print JSON.
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON, with raw numbers (for scripts).")]


class ConflictPolicy(enum.StrEnum):
    """What import and migrate do with session ids the destination already has."""

    skip = "skip"
    overwrite = "overwrite"
    newer = "newer"
    error = "error"


class CliError(Exception):
    """A failure reported to the shell as one line on stderr and an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- plumbing
def out_console() -> Console:
    return Console(soft_wrap=True)


def err_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def safe_url(url: str) -> str:
    """`url` with any password replaced, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url.split("://", 1)[0] + "://…"


def sqlite_file(url: str) -> Path | None:
    scheme, _, rest = url.partition("://")
    if not scheme.lower().startswith("sqlite"):
        return None
    database = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
    if database in ("", ":memory:"):
        return None
    return Path(database)


def open_store(url: str, *, must_exist: bool) -> SessionStore:
    if must_exist:
        path = sqlite_file(url)
        if path is not None and not path.exists():
            raise CliError(f"no store at {safe_url(url)} (file {path} does not exist); pass --store URL")
    try:
        return create_store(url)
    except ImportError as exc:
        raise CliError(str(exc), code=1) from exc
    except InvalidStoreUrl as exc:
        raise CliError(f"bad store URL: {exc}", code=2) from exc
    except ValueError as exc:
        raise CliError(f"bad store URL {safe_url(url)!r}: {exc}", code=2) from exc


@asynccontextmanager
async def opened_store(url: str, *, must_exist: bool = True) -> AsyncIterator[SessionStore]:
    store = open_store(url, must_exist=must_exist)
    try:
        yield store
    finally:
        await store.close()


def fail(message: str, code: int) -> NoReturn:
    err_console().print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_command(url: str | None, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's coroutine, turning expected failures into one line and an exit code."""
    where = f" at {safe_url(url)}" if url else ""
    try:
        return asyncio.run(factory())
    except CliError as exc:
        fail(str(exc), exc.code)
    except (InvalidSessionId, InvalidUserId, InvalidSearchQuery, InvalidCursor) as exc:
        fail(str(exc), 2)
    except StoreUnavailable as exc:
        message = one_line(exc)
        if exc.__cause__ is not None and one_line(exc.__cause__) not in message:
            message += f": {one_line(exc.__cause__)}"
        fail(f"cannot reach the store{where}: {message}", 1)
    except AgentSessionsError as exc:
        fail(one_line(exc), 1)
    except (ConnectionError, TimeoutError) as exc:
        fail(f"cannot reach the store{where}: {one_line(exc) or type(exc).__name__}", 1)
    except FileNotFoundError as exc:
        fail(f"no such file: {exc.filename}", 1)
    except OSError as exc:
        # Files: permissions, a directory given as a file, a full disk. The name is the one the
        # user gave (an export writes to a temporary file beside it).
        fail(f"{exc.strerror or one_line(exc)}: {exc.filename}" if exc.filename else one_line(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def when(ts: object, *, short: bool = False) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        return "never" if ts is None else escape(repr(ts))
    return datetime.fromtimestamp(ts, UTC).strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def redact(value: Any) -> Any:
    """A copy of a JSON value with the values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@contextmanager
def progress(console: Console, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    else:
        columns += [TextColumn("{task.completed} sessions"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def sessions_text(n: int) -> str:
    return f"{n} session{'' if n == 1 else 's'}"


def summary(report: TransferReport) -> str:
    text = (
        f"{report.imported} new, {report.replaced} replaced, {report.skipped} skipped, "
        f"{report.expired} expired; {report.scopes} scope keys, {report.history_entries} history entries"
    )
    if report.conversations_seen:
        text += (
            f"; conversations: {report.conversations} new, {report.conversations_replaced} replaced, "
            f"{report.conversations_skipped} skipped"
        )
        if report.conversations_skipped_reason is not None:
            text += f" ({report.conversations_skipped_reason})"
    return text


def configure_logging(verbosity: int) -> None:
    """Library logs go to stderr only with -v (INFO) or -vv (DEBUG): by default a failure is
    reported once, as the command's one-line error, not again as a log record."""
    global _log_handler
    root = logging.getLogger()
    if _log_handler is not None:
        root.removeHandler(_log_handler)
    handler: logging.Handler
    if verbosity <= 0:
        handler = logging.NullHandler()
    else:
        handler = RichHandler(console=err_console(), show_path=False, rich_tracebacks=False)
        handler.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
        logging.getLogger("agent_sessions").setLevel(handler.level)
    root.addHandler(handler)
    _log_handler = handler


async def conversation_holders(store: SessionStore, *, importing: bool = False) -> list[SessionDataHolder]:
    """The conversation store beside `store` (`run_turn` saves there), for ``erase`` to erase
    and ``export --user`` to export too: the SQL one if its tables exist, the Redis one under
    the same prefix; none for a memory store or without pydantic-ai installed. With
    `importing` (``import``), the SQL one even if its tables do not exist yet: it creates them
    as on first use when a conversation is written."""
    sql = hasattr(store, "engine")
    if not sql and not (hasattr(store, "client") and hasattr(store, "prefix")):
        return []
    try:
        from .integrations.pydantic_ai import DatabaseConversationStore
    except ImportError:
        logger.debug("pydantic-ai is not installed: no conversation store")
        return []
    if sql:
        from .display import has_conversation_table

        if importing:
            return [DatabaseConversationStore(store)]
        database = DatabaseConversationStore(store, create_tables=False)
        return [database] if await has_conversation_table(database) else []
    from .integrations.pydantic_ai.conversation_redis import RedisConversationStore

    return [RedisConversationStore(store)]

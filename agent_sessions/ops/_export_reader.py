"""Reading an export file: `BackupFormatError`, numbered lines in bounded chunks, one line's
strict, depth-bounded JSON decode, the session count in the end marker (`count_export_sessions`)
and the parsed lines for inspection (`iter_export_lines`).

What the lines mean (header, scope, session, end) is `backup.py`'s; the writer is `_export_file.py`.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..codec import DEFAULT_MAX_DEPTH, nests_deeper
from ..errors import AgentSessionsError
from ._transfer import LINE_NESTING, TransferReport, max_line_bytes

__all__ = [
    "READ_CHUNK",
    "BackupFormatError",
    "ExportReader",
    "count_export_sessions",
    "end_marker_sessions",
    "is_gzip",
    "iter_export_lines",
    "parse_line",
]

#: Lines read per call of `ExportReader.chunk` (a thread hop each when importing).
READ_CHUNK = 256

#: A hop to the reader thread also ends once it holds this many bytes (long lines).
_READ_CHUNK_BYTES = 8 * 1024 * 1024
#: How much of the end of a file `end_marker_sessions` keeps while looking for the end marker.
_TAIL_BYTES = 64 * 1024


class BackupFormatError(AgentSessionsError, ValueError):
    """An export file is not valid: not JSON, wrong shape, a newer format, or truncated.

    `line` is the 1-based number of the first bad line; `report` counts what was imported
    from the lines before it (nothing after it was).
    """

    def __init__(self, line: int, message: str, report: TransferReport | None = None) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.report = report if report is not None else TransferReport()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in strict JSON")


def is_gzip(path: Path, compress: bool | None) -> bool:
    """Whether the export file at `path` is gzip: its name ends in ``.gz``, unless `compress` says."""
    return path.suffix == ".gz" if compress is None else compress


class ExportReader:
    """Numbered lines of a (possibly gzip) file, read in chunks in a worker thread.

    A line longer than `max_line` bytes is never read whole: it is a `BackupFormatError`
    naming it, after at most `max_line` bytes of it were held (a small file that expands to a
    huge line cannot exhaust memory).
    """

    def __init__(self, path: Path, max_line: int) -> None:
        self._max_line = max_line
        self._file: BinaryIO | gzip.GzipFile
        if is_gzip(path, None):
            self._file = gzip.GzipFile(path, "rb")
        else:
            self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._lineno = 0
        self._error: BackupFormatError | None = None

    def chunk(self, size: int) -> list[tuple[int, bytes]] | BackupFormatError:
        """Up to `size` (line number, line) pairs; [] at the end; a `BackupFormatError` once the
        lines before an unreadable spot have been handed out."""
        if self._error is not None:
            return self._error
        out: list[tuple[int, bytes]] = []
        held = 0
        for _ in range(size):
            try:
                line = self._file.readline(self._max_line + 1)
            except (EOFError, OSError, zlib.error) as exc:
                # A truncated or corrupt gzip stream: the line being read is the bad one.
                self._error = BackupFormatError(self._lineno + 1, f"the file cannot be read ({exc}); is it truncated?")
                self._error.__cause__ = exc
                return out if out else self._error
            if not line:
                break
            if len(line) > self._max_line:
                self._error = BackupFormatError(
                    self._lineno + 1,
                    f"the line is longer than {self._max_line} bytes: refused unread (import_sessions' "
                    "max_line_bytes, CLI --max-line-bytes, up to what the store could hold: max_session_bytes, "
                    "max_history, max_scope_bytes)",
                )
                return out if out else self._error
            self._lineno += 1
            out.append((self._lineno, line))
            held += len(line)
            if held >= _READ_CHUNK_BYTES:
                break
        return out

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def parse_line(lineno: int, raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH + LINE_NESTING) -> dict[str, Any]:
    """Line `lineno` of an export file as a JSON object: strict JSON (no NaN or Infinity), UTF-8,
    whole (ending in a newline), nesting no deeper than `max_depth`; else a `BackupFormatError`."""
    if not raw.endswith(b"\n"):
        raise BackupFormatError(lineno, "the line is cut short (no newline): the file is truncated")
    too_deep = f"the line nests lists and dicts deeper than {max_depth} levels"
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BackupFormatError(lineno, f"not valid JSON ({exc})") from exc
    except RecursionError as exc:  # the parser recurses once per level: far too deep
        raise BackupFormatError(lineno, too_deep) from exc
    # Measured (without recursion) only when the line opens more brackets than the limit.
    if raw.count(b"[") + raw.count(b"{") > max_depth and nests_deeper(obj, max_depth):
        raise BackupFormatError(lineno, too_deep)
    if not isinstance(obj, dict):
        raise BackupFormatError(lineno, "expected a JSON object")
    return obj


def _tail(path: Path) -> bytes:
    """The last bytes of the file's content (decompressed), in constant memory."""
    if is_gzip(path, None):
        tail = b""
        with gzip.GzipFile(path, "rb") as stream:
            while chunk := stream.read(1024 * 1024):
                tail = (tail + chunk)[-_TAIL_BYTES:]
        return tail
    with open(path, "rb") as plain:
        size = plain.seek(0, os.SEEK_END)
        plain.seek(max(0, size - _TAIL_BYTES))
        return plain.read()


def end_marker_sessions(path: Path) -> int | None:
    """The session count in the end marker of the export file at `path`, read from its last
    line (blocking; `count_export_sessions` runs it in a thread). None when the file has no
    readable end marker (damaged, truncated, or not an export)."""
    try:
        tail = _tail(path)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        return None  # a damaged file: the import itself says at which line
    last = tail.rstrip(b"\n").rpartition(b"\n")[2]
    try:
        obj = json.loads(last)
    except ValueError:
        return None
    sessions = obj.get("sessions") if isinstance(obj, dict) and obj.get("kind") == "end" else None
    return sessions if isinstance(sessions, int) and not isinstance(sessions, bool) and sessions >= 0 else None


def iter_export_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The parsed lines of an export file (header first), for inspection and tests."""
    reader = ExportReader(Path(path), max_line_bytes())
    try:
        while True:
            chunk = reader.chunk(READ_CHUNK)
            if isinstance(chunk, BackupFormatError):
                raise chunk
            if not chunk:
                return
            for lineno, raw in chunk:
                yield parse_line(lineno, raw)
    finally:
        reader.close()


async def count_export_sessions(path: str | os.PathLike[str]) -> int | None:
    """How many sessions an export file holds, read from its end marker (for a progress total).

    A plain file is read from its end only; a gzip one is decompressed once, in constant memory.
    None when the file has no readable end marker (truncated, or not an export): `import_sessions`
    then reports the bad line. Raises `OSError` for a file that cannot be opened.
    """
    return await asyncio.to_thread(end_marker_sessions, Path(path))

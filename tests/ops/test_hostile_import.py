"""Hostile export files (issue 12): a line nested too deep or too long for the destination store
is a `BackupFormatError` naming it, read in bounded memory; nothing after it is imported."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from agent_sessions import MemorySessionStore, Session, SessionStore
from agent_sessions.ops import (
    DEFAULT_IMPORT_LINE_BYTES,
    BackupFormatError,
    export_sessions,
    import_sessions,
    max_line_bytes,
)
from agent_sessions.ops.backup import iter_export_lines

from ..support import FakeClock


async def header_line(tmp_path: Path) -> bytes:
    """The first line of a real export (of an empty store)."""
    path = tmp_path / "empty.jsonl"
    await export_sessions(MemorySessionStore(), path)
    return path.read_bytes().splitlines(keepends=True)[0]


def session_line(state_json: str, clock: FakeClock) -> bytes:
    session = Session(created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 3600)
    data = session.model_dump(exclude={"history"})
    data["state"] = "STATE"
    text = json.dumps({"kind": "session", "session": data, "history": []}, separators=(",", ":"))
    return text.replace('"STATE"', state_json).encode() + b"\n"


@pytest.mark.parametrize("depth", [200, 100_000])
async def test_a_deeply_nested_line_is_a_format_error_with_its_line_number(
    store: SessionStore, clock: FakeClock, tmp_path: Path, depth: int
) -> None:
    good = session_line('{"k":[[1]]}', clock)
    deep = session_line('{"k":' + "[" * depth + "1" + "]" * depth + "}", clock)
    path = tmp_path / "deep.jsonl"
    path.write_bytes(await header_line(tmp_path) + good + deep + b'{"kind":"end","sessions":2}\n')
    with pytest.raises(BackupFormatError, match="line 3: .*deeper") as info:
        await import_sessions(store, path)
    assert info.value.line == 3 and info.value.report.imported == 1
    assert len([s async for s in store.iter_sessions()]) == 1
    with pytest.raises(BackupFormatError, match="line 3"):
        list(iter_export_lines(path))


async def test_an_overlong_line_is_refused_before_it_is_read_whole_and_memory_stays_flat(
    clock: FakeClock, tmp_path: Path
) -> None:
    store = MemorySessionStore(clock=clock, max_session_bytes=64 * 1024, max_history=10)
    limit = max_line_bytes(store)
    assert limit < 1024 * 1024  # about (max_history + 1) * max_session_bytes
    path = tmp_path / "bomb.jsonl.gz"
    spaces = b" " * (1024 * 1024)
    with gzip.open(path, "wb") as f:  # ~64 MiB of spaces in one line, compressed to ~64 KiB
        f.write(await header_line(tmp_path))
        f.write(b'{"kind":"session","session":')
        for _ in range(64):
            f.write(spaces)
        f.write(b"{}}\n")
    assert path.stat().st_size < 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(BackupFormatError, match=f"line 2: the line is longer than {limit} bytes") as info:
            await import_sessions(store, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.line == 2
    assert peak < 4 * limit  # the line was never held whole (64 MiB)


async def test_the_longest_line_a_store_can_hold_still_imports(clock: FakeClock, tmp_path: Path) -> None:
    options = {"clock": clock, "max_session_bytes": 16 * 1024, "max_history": 5}
    source = MemorySessionStore(**options)  # type: ignore[arg-type]
    s = Session(expiry_at=clock.now + 3600, state={"blob": "é" * 7000})  # near the record limit
    for i in range(5):
        s.add_history_entry("m", {"i": i, "text": "x" * 15_000})  # each entry near the limit
    await source.set(s)
    path = tmp_path / "full.jsonl"
    await export_sessions(source, path)
    longest = max(len(line) for line in path.read_bytes().splitlines(keepends=True))
    dst = MemorySessionStore(**options)  # type: ignore[arg-type]
    assert longest <= max_line_bytes(dst)
    report = await import_sessions(dst, path)
    assert report.imported == 1
    restored = await dst.get(s.session_id)
    assert restored is not None and restored.state == s.state and len(restored.history) == 5


async def test_a_gzip_bomb_is_refused_with_flat_memory_under_the_default_limits(
    clock: FakeClock, tmp_path: Path
) -> None:
    """The case from the field: ~1 MB of gzip expanding to 1 GiB of spaces on one line, into a
    store with the default limits (whose longest possible line is about 1 GiB): refused at
    the default `max_line_bytes` (64 MiB), never held whole."""
    store = MemorySessionStore(clock=clock)
    path = tmp_path / "bomb.jsonl.gz"
    spaces = b" " * (16 * 1024 * 1024)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(await header_line(tmp_path))
        f.write(b'{"kind":"session","session":')
        for _ in range(64):  # 1 GiB
            f.write(spaces)
        f.write(b"{}}\n")
    assert path.stat().st_size < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(BackupFormatError, match=f"line 2: the line is longer than {DEFAULT_IMPORT_LINE_BYTES}"):
            await import_sessions(store, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * DEFAULT_IMPORT_LINE_BYTES  # not the 1 GiB line
    assert [s async for s in store.iter_sessions()] == []


async def test_max_line_bytes_is_refused_below_one_and_lets_a_larger_session_in(
    clock: FakeClock, tmp_path: Path
) -> None:
    source = MemorySessionStore(clock=clock)
    s = Session(expiry_at=clock.now + 3600)
    for i in range(3):
        s.add_history_entry("m", {"i": i, "text": "x" * 2000})
    await source.set(s)
    path = tmp_path / "one.jsonl"
    await export_sessions(source, path)
    longest = max(len(line) for line in path.read_bytes().splitlines(keepends=True))
    with pytest.raises(BackupFormatError, match="line 2: the line is longer than"):
        await import_sessions(MemorySessionStore(clock=clock), path, max_line_bytes=longest - 1)
    with pytest.raises(ValueError, match="max_line_bytes"):
        await import_sessions(MemorySessionStore(clock=clock), path, max_line_bytes=0)
    report = await import_sessions(MemorySessionStore(clock=clock), path, max_line_bytes=longest)
    assert report.imported == 1

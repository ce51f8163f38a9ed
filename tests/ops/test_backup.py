"""Backup and restore: export -> import round trips on every backend, conflict policies,
auth secrets, expiry, and what a corrupt or truncated file does (and does not) import."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from agent_sessions import MemorySessionStore, Session, SessionConflict, SessionManager, SessionStore
from agent_sessions.ops import BackupFormatError, TransferReport, export_sessions, import_sessions
from agent_sessions.ops.backup import PLAIN_FORMAT_VERSION, iter_export_lines

from ..support import FakeClock
from .helpers import populate, scopes, snapshot

MakeStore = Callable[..., AbstractAsyncContextManager[SessionStore]]


@pytest.fixture
async def dst(make_store: MakeStore) -> AsyncIterator[SessionStore]:
    """A second, empty store of the backend under test (the import target)."""
    async with make_store() as s:
        yield s


@pytest.fixture
async def exported(store: SessionStore, tmp_path: Path) -> tuple[Path, list[str]]:
    ids = await populate(store, users=2, per_user=2, anonymous=1, history=3)
    path = tmp_path / "backup.jsonl"
    await export_sessions(store, path, include_auth=True)
    return path, ids


def lines_of(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return list(f)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


# ---------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", ["backup.jsonl", "backup.jsonl.gz"])
async def test_round_trip_is_equal_field_by_field_with_version_and_full_history(
    store: SessionStore, dst: SessionStore, tmp_path: Path, name: str
) -> None:
    # More history than the recent window: export must page through all of it.
    await populate(store, users=2, per_user=2, anonymous=2, history=4, long_history=store.history_window + 30)
    before = await snapshot(store)
    path = tmp_path / name

    exported = await export_sessions(store, path, include_auth=True)
    report = await import_sessions(dst, path)

    assert exported.sessions == len(before) == report.imported
    assert exported.compressed == name.endswith(".gz")
    assert report.history_entries == exported.history_entries == sum(len(s["full_history"]) for s in before.values())
    after = await snapshot(dst)
    assert after == before
    assert all(s["version"] == 3 for s in after.values())
    assert max(len(s["full_history"]) for s in after.values()) > store.history_window
    assert await scopes(dst) == await scopes(store)


async def test_gzip_file_is_really_compressed(store: SessionStore, tmp_path: Path) -> None:
    await populate(store)
    report = await export_sessions(store, tmp_path / "b.jsonl.gz")
    assert (tmp_path / "b.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert report.bytes_written == (tmp_path / "b.jsonl.gz").stat().st_size


async def test_file_has_a_self_describing_header_and_an_end_marker(
    exported: tuple[Path, list[str]],
) -> None:
    path, ids = exported
    parsed = list(iter_export_lines(path))
    header, end = parsed[0], parsed[-1]
    assert header["format"] == "agent-sessions-export"
    assert header["format_version"] == PLAIN_FORMAT_VERSION == 1  # no conversations: readable by older readers
    assert header["include_auth"] is True
    assert end == {"kind": "end", "sessions": len(ids), "scopes": 3, "history_entries": 3 * len(ids)}
    kinds = [line["kind"] for line in parsed[1:-1]]
    assert kinds == ["scope"] * 3 + ["session"] * len(ids)


async def test_scopes_are_restored_so_new_sessions_inherit_them(
    exported: tuple[Path, list[str]], dst: SessionStore
) -> None:
    path, _ = exported
    await import_sessions(dst, path)
    manager = SessionManager(dst, auto_cleanup=False)
    fresh = await manager.create_session("user-1")
    assert fresh.preferences == {"tone": "tone-user-1"}
    assert fresh.state["user:plan"] == "plan-user-1"
    assert fresh.state["app:motd"] == "hello everyone"


# ---------------------------------------------------------------- auth_info
async def test_auth_info_is_not_exported_without_the_flag(
    store: SessionStore, dst: SessionStore, tmp_path: Path
) -> None:
    await populate(store)
    path = tmp_path / "b.jsonl"
    await export_sessions(store, path)
    text = path.read_text()
    assert "secret-token" not in text
    assert json.loads(text.splitlines()[0])["include_auth"] is False
    await import_sessions(dst, path)
    assert await snapshot(dst) == await snapshot(store, with_auth=False)


async def test_auth_info_is_exported_with_the_flag(store: SessionStore, dst: SessionStore, tmp_path: Path) -> None:
    ids = await populate(store)
    path = tmp_path / "b.jsonl"
    await export_sessions(store, path, include_auth=True)
    assert "secret-token-0" in path.read_text()
    await import_sessions(dst, path)
    restored = await dst.get(ids[0])
    assert restored is not None
    assert restored.auth_info == {"token": "secret-token-0"}


# ---------------------------------------------------------------- expiry
async def test_expired_sessions_are_neither_exported_nor_resurrected(
    store: SessionStore, dst: SessionStore, clock: FakeClock, tmp_path: Path
) -> None:
    manager = SessionManager(store, session_lifetime=100, auto_cleanup=False)
    short = await manager.create_session("alice")
    clock.advance(50)
    manager.session_lifetime = 1000
    long = await manager.create_session("bob")
    clock.advance(60)  # `short` is now expired, `long` is not
    path = tmp_path / "b.jsonl"
    report = await export_sessions(store, path)
    assert report.sessions == 1
    assert short.session_id not in path.read_text()

    clock.advance(2000)  # `long` expires between export and import
    imported = await import_sessions(dst, path)
    assert (imported.imported, imported.expired) == (0, 1)
    assert await dst.get(long.session_id) is None


async def test_expiry_is_preserved(exported: tuple[Path, list[str]], store: SessionStore, dst: SessionStore) -> None:
    path, ids = exported
    await import_sessions(dst, path)
    for sid in ids:
        a, b = await store.get(sid), await dst.get(sid)
        assert a is not None and b is not None
        assert b.expiry_at == a.expiry_at is not None


# ---------------------------------------------------------------- conflicts
async def _conflicting_copy(dst: SessionStore, store: SessionStore, sid: str) -> Session:
    """Put an older, different copy of `sid` into `dst` (version 1, marker state)."""
    original = await store.get(sid)
    assert original is not None
    copy = original.model_copy(deep=True)
    copy.state = {"marker": "dst"}
    copy.version = 1
    await dst.restore(copy, [], history_seq=0)
    return copy


async def test_skip_keeps_existing_sessions_and_reimport_is_idempotent(
    exported: tuple[Path, list[str]], store: SessionStore, dst: SessionStore
) -> None:
    path, ids = exported
    await _conflicting_copy(dst, store, ids[0])
    first = await import_sessions(dst, path)
    assert (first.imported, first.skipped) == (len(ids) - 1, 1)
    kept = await dst.get(ids[0])
    assert kept is not None and kept.state.get("marker") == "dst" and "n" not in kept.state
    again = await import_sessions(dst, path)
    assert (again.imported, again.skipped, again.scopes) == (0, len(ids), 0)


async def test_overwrite_replaces_existing_sessions(
    exported: tuple[Path, list[str]], store: SessionStore, dst: SessionStore
) -> None:
    path, ids = exported
    await _conflicting_copy(dst, store, ids[0])
    report = await import_sessions(dst, path, on_conflict="overwrite")
    assert (report.imported, report.replaced) == (len(ids) - 1, 1)
    assert await snapshot(dst) == await snapshot(store)


async def test_newer_replaces_only_older_copies(
    exported: tuple[Path, list[str]], store: SessionStore, dst: SessionStore
) -> None:
    path, ids = exported
    await _conflicting_copy(dst, store, ids[0])  # version 1 < exported 3: replaced
    newer = await _conflicting_copy(dst, store, ids[1])
    await dst.delete(ids[1])
    newer.version = 9
    await dst.restore(newer, [], history_seq=0)  # version 9 > exported 3: kept
    report = await import_sessions(dst, path, on_conflict="newer")
    assert (report.replaced, report.skipped) == (1, 1)
    replaced, kept = await dst.get(ids[0]), await dst.get(ids[1])
    assert replaced is not None and replaced.version == 3 and "marker" not in replaced.state
    assert kept is not None and kept.version == 9 and kept.state["marker"] == "dst"


async def test_error_policy_raises_on_an_existing_id(
    exported: tuple[Path, list[str]], store: SessionStore, dst: SessionStore
) -> None:
    path, ids = exported
    await _conflicting_copy(dst, store, ids[-1])
    with pytest.raises(SessionConflict, match="already exists"):
        await import_sessions(dst, path, on_conflict="error")
    kept = await dst.get(ids[-1])
    assert kept is not None and kept.state.get("marker") == "dst" and "n" not in kept.state


async def test_scope_keys_follow_the_policy(exported: tuple[Path, list[str]], dst: SessionStore) -> None:
    path, _ = exported
    await dst.write_scopes("user-0", {"pref:tone": "mine"})
    await import_sessions(dst, path, on_conflict="skip")
    assert (await dst.load_scopes("user-0")).preferences == {"tone": "mine"}
    await import_sessions(dst, path, on_conflict="overwrite")
    assert (await dst.load_scopes("user-0")).preferences == {"tone": "tone-user-0"}


async def test_unknown_policy_is_rejected(exported: tuple[Path, list[str]], dst: SessionStore) -> None:
    path, _ = exported
    with pytest.raises(ValueError, match="on_conflict"):
        await import_sessions(dst, path, on_conflict="merge")  # type: ignore[arg-type]


# ---------------------------------------------------------------- corrupt and truncated files
def session_ids_in(lines: list[bytes]) -> list[str]:
    return [json.loads(x)["session"]["session_id"] for x in lines if b'"kind":"session"' in x]


async def test_corrupt_line_stops_the_import_there_and_names_the_line(
    exported: tuple[Path, list[str]], dst: SessionStore, tmp_path: Path
) -> None:
    path, _ = exported
    lines = lines_of(path)
    bad_at = 6  # 1-based: header, 3 scopes, 1 session, then the bad line
    lines[bad_at - 1] = b'{"kind": "session", "session": {not json\n'
    broken = tmp_path / "broken.jsonl"
    write_lines(broken, lines)
    with pytest.raises(BackupFormatError) as info:
        await import_sessions(dst, broken)
    assert info.value.line == bad_at
    assert "line 6" in str(info.value)
    assert info.value.report.imported == 1
    ids = session_ids_in(lines_of(path))
    assert await dst.get(ids[0]) is not None
    for sid in ids[1:]:
        assert await dst.get(sid) is None


async def test_invalid_session_line_is_not_half_written(
    exported: tuple[Path, list[str]], dst: SessionStore, tmp_path: Path
) -> None:
    path, _ = exported
    lines = lines_of(path)
    obj = json.loads(lines[4])
    obj["history"][2] = {"type": "x"}  # no timestamp
    lines[4] = json.dumps(obj).encode() + b"\n"
    broken = tmp_path / "broken.jsonl"
    write_lines(broken, lines)
    with pytest.raises(BackupFormatError, match=r"line 5: history\[2\]"):
        await import_sessions(dst, broken)
    assert await dst.get(obj["session"]["session_id"]) is None
    assert [s async for s in dst.iter_sessions()] == []


async def test_bad_session_id_in_file_is_a_format_error(
    exported: tuple[Path, list[str]], dst: SessionStore, tmp_path: Path
) -> None:
    path, _ = exported
    lines = lines_of(path)
    obj = json.loads(lines[4])
    obj["session"]["session_id"] = "../../etc/passwd"
    lines[4] = json.dumps(obj).encode() + b"\n"
    broken = tmp_path / "broken.jsonl"
    write_lines(broken, lines)
    with pytest.raises(BackupFormatError, match="line 5: invalid session id"):
        await import_sessions(dst, broken)


async def test_file_cut_mid_line_is_truncated(
    exported: tuple[Path, list[str]], dst: SessionStore, tmp_path: Path
) -> None:
    path, _ = exported
    data = path.read_bytes()
    lines = lines_of(path)
    cut = sum(len(x) for x in lines[:6]) + len(lines[6]) // 2  # half of line 7
    broken = tmp_path / "cut.jsonl"
    broken.write_bytes(data[:cut])
    with pytest.raises(BackupFormatError) as info:
        await import_sessions(dst, broken)
    assert info.value.line == 7
    assert info.value.report.imported == 2
    assert len(await snapshot(dst)) == 2


async def test_file_cut_at_a_line_boundary_is_still_detected(
    exported: tuple[Path, list[str]], dst: SessionStore, tmp_path: Path
) -> None:
    path, _ = exported
    lines = lines_of(path)
    broken = tmp_path / "cut.jsonl"
    write_lines(broken, lines[:-1])  # no end marker
    with pytest.raises(BackupFormatError, match="truncated") as info:
        await import_sessions(dst, broken)
    assert info.value.line == len(lines)


async def test_truncated_gzip_file_is_detected(store: SessionStore, dst: SessionStore, tmp_path: Path) -> None:
    await populate(store, users=20, per_user=5, history=20)
    path = tmp_path / "b.jsonl.gz"
    report = await export_sessions(store, path)
    data = path.read_bytes()
    broken = tmp_path / "cut.jsonl.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackupFormatError, match="truncated") as info:
        await import_sessions(dst, broken)
    imported = info.value.report.imported
    assert 0 < imported < report.sessions
    assert len(await snapshot(dst)) == imported


async def test_content_after_the_end_marker_is_rejected(
    exported: tuple[Path, list[str]], dst: SessionStore, tmp_path: Path
) -> None:
    path, _ = exported
    lines = lines_of(path)
    broken = tmp_path / "extra.jsonl"
    write_lines(broken, [*lines, lines[-2]])
    with pytest.raises(BackupFormatError, match="after the end marker") as info:
        await import_sessions(dst, broken)
    assert info.value.line == len(lines) + 1


async def test_end_marker_counts_must_match(
    exported: tuple[Path, list[str]], dst: SessionStore, tmp_path: Path
) -> None:
    path, _ = exported
    lines = lines_of(path)
    broken = tmp_path / "dropped.jsonl"
    write_lines(broken, [*lines[:4], *lines[5:]])  # one session line removed
    with pytest.raises(BackupFormatError, match="end marker counts"):
        await import_sessions(dst, broken)


@pytest.mark.parametrize(
    ("first_line", "message"),
    [
        (b'{"hello": "world"}\n', "not an agent-sessions export"),
        (b'{"format": "agent-sessions-export", "format_version": 99}\n', "newer than this library"),
        (b"\xff\xfe garbage\n", "not valid JSON"),
        (b'{"format": "agent-sessions-export", "format_version": NaN}\n', "not valid JSON"),
    ],
)
async def test_wrong_header_imports_nothing(dst: SessionStore, tmp_path: Path, first_line: bytes, message: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(first_line + b'{"kind": "end", "sessions": 0, "scopes": 0, "history_entries": 0}\n')
    with pytest.raises(BackupFormatError, match=message) as info:
        await import_sessions(dst, path)
    assert info.value.line == 1


async def test_empty_file_is_rejected(dst: SessionStore, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(BackupFormatError, match="empty"):
        await import_sessions(dst, path)


async def test_missing_file_raises_file_not_found(dst: SessionStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await import_sessions(dst, tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- file permissions
@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable (0o644)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
@pytest.mark.parametrize("name", ["backup.jsonl", "backup.jsonl.gz"])
async def test_export_file_is_readable_by_its_owner_only(tmp_path: Path, name: str) -> None:
    async with MemorySessionStore() as store:
        ids = await populate(store, users=1, per_user=1)
        path = tmp_path / name
        await export_sessions(store, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ids[0] in b"".join(lines_of(path)).decode()  # live ids: why the file must stay private
    assert [p.name for p in tmp_path.iterdir()] == [name]  # the temporary file was renamed, not copied


@pytest.mark.usefixtures("permissive_umask")
async def test_export_over_a_world_readable_file_leaves_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "backup.jsonl"
    path.write_text("old backup\n")
    path.chmod(0o644)
    async with MemorySessionStore() as store:
        await populate(store, users=1, per_user=1)
        await export_sessions(store, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert lines_of(path)[0].startswith(b'{"format":"agent-sessions-export"')


async def test_concurrent_exports_to_one_path_do_not_share_a_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "backup.jsonl"
    async with MemorySessionStore() as store:
        await populate(store, users=3, per_user=2, anonymous=0)
        first, second = await asyncio.gather(export_sessions(store, path), export_sessions(store, path))
    assert first.sessions == second.sessions == 6
    assert lines_of(path)[-1].startswith(b'{"kind":"end","sessions":6')
    assert [p.name for p in tmp_path.iterdir()] == ["backup.jsonl"]


# ---------------------------------------------------------------- failures during export
async def test_interrupted_export_leaves_no_file(store: SessionStore, tmp_path: Path) -> None:
    await populate(store, users=5, per_user=2)
    path = tmp_path / "b.jsonl"
    calls: list[int] = []

    def boom(report: TransferReport) -> None:
        calls.append(report.imported)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await export_sessions(store, path, batch_size=2, progress=boom)
    assert list(tmp_path.iterdir()) == []


async def test_progress_reports_running_counts(exported: tuple[Path, list[str]], dst: SessionStore) -> None:
    path, ids = exported
    seen: list[int] = []
    await import_sessions(dst, path, progress=lambda r: seen.append(r.sessions_seen))
    assert seen[-1] == len(ids)

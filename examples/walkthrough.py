"""A walkthrough of agent_sessions on the embedded SQLite default.

    python examples/walkthrough.py                 # a temporary SQLite file
    python examples/walkthrough.py --store redis://127.0.0.1:6379/0

1. create a session for a user;
2. 50 concurrent writers of different keys, and 50 concurrent counter increments: nothing lost;
3. `user:` state and preferences shared by every session of the user;
4. expiry: an idle session reads as absent once its idle timeout passes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from agent_sessions import Session, SessionManager, create_store


async def walkthrough(store_url: str) -> None:
    store = create_store(store_url)
    async with SessionManager(store, session_lifetime=3600) as manager:
        # 1. a session for alice
        session = await manager.create_session(user_id="alice", data={"plan": "pro"})
        print(f"1. created session (version {session.version}) for {session.user_id}: {session.state}")

        # 2a. concurrent writers of different keys: each loads, changes one key, saves
        async def write_key(i: int) -> None:
            copy = await manager.get_session(session.session_id)
            assert copy is not None
            await asyncio.sleep(0)  # let the other writers load the same version
            copy.set(f"note-{i}", i)
            await manager.update_session(copy)

        await asyncio.gather(*(write_key(i) for i in range(50)))
        # 2b. concurrent read-modify-write through mutate: exact counters
        await manager.mutate(session.session_id, lambda s: s.set("visits", 0))

        def visit(s: Session) -> None:
            s.set("visits", s.get("visits") + 1)

        await asyncio.gather(*(manager.mutate(session.session_id, visit) for _ in range(50)))
        loaded = await manager.get_session(session.session_id)
        assert loaded is not None
        notes = sum(1 for key in loaded.state if key.startswith("note-"))
        print(f"2. after 50 concurrent writers: {notes} of 50 keys present, visits = {loaded.get('visits')}")
        assert notes == 50 and loaded.get("visits") == 50

        # 3. user scope and preferences follow the user into a new session
        loaded.set("user:language", "fr")
        loaded.preferences["tone"] = "concise"
        await manager.update_session(loaded)
        second = await manager.create_session(user_id="alice")
        print(
            f"3. alice's new session sees user:language={second.get('user:language')!r} "
            f"and preferences={second.preferences}; per-session keys stay apart: {'plan' in second.state}"
        )
        assert second.get("user:language") == "fr" and second.preferences == {"tone": "concise"}
        sessions = await manager.get_user_sessions("alice")
        print(f"   alice has {len(sessions)} live sessions")

    # 4. expiry: a 1-second idle timeout, then wait it out
    store = create_store(store_url)
    async with SessionManager(store, session_lifetime=1, auto_cleanup=False) as short:
        brief = await short.create_session(user_id="bob")
        print(f"4. bob's session exists: {await short.get_session(brief.session_id) is not None}")
        await asyncio.sleep(1.2)
        gone = await short.get_session(brief.session_id) is None
        removed = await short.cleanup(force=True)
        print(f"   after 1.2 s idle it reads as absent: {gone}; cleanup removed {removed} expired session(s)")
        assert gone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    if args.store:
        asyncio.run(walkthrough(args.store))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(walkthrough(f"sqlite+aiosqlite:///{Path(tmp) / 'walkthrough.db'}"))


if __name__ == "__main__":
    main()

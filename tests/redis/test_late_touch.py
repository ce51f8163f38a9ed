"""The shared late-touch contract test (`/tmp/late_touch_test.py`), run here on the Redis
backends only until the database stores pass it too; then it moves to
`tests/contract/test_store_contract.py` and this module goes."""

from __future__ import annotations

import pytest

from agent_sessions import SessionManager

from ..support import FakeClock

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["redis", "redis_cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """Overrides the suite-wide `backend`: the `store` / `manager` fixtures use Redis only."""
    return str(request.param)


async def test_a_late_touch_never_shortens_the_expiry(manager: SessionManager, clock: FakeClock) -> None:
    s = await manager.create_session()
    early = clock.now + 100
    clock.advance(1000)
    await manager.refresh_session(s.session_id)
    later = (await manager.store.get(s.session_id)).expiry_at  # type: ignore[union-attr]
    assert await manager.store.touch(s.session_id, clock.now - 900, early)  # a delayed touch lands late
    stored = await manager.store.get(s.session_id)
    assert stored is not None and stored.expiry_at == later

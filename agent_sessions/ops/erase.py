"""`erase_user` and `export_user` on a store or a manager (the CLI's ``erase`` and ``export --user``).

The work is `agent_sessions.lifecycle`'s; these accept either a `SessionStore` or a
`SessionManager` (whose registered data holders, the conversation stores, are then erased too).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..lifecycle import SessionDataHolder
from ..lifecycle import erase_user as erase_user_data
from ..lifecycle import export_user as export_user_data
from ..stores.base import SessionStore
from ..stores.primitives import ErasureReport
from .backup import ExportReport

if TYPE_CHECKING:
    from ..manager import SessionManager

__all__ = ["erase_user", "export_user"]


async def erase_user(
    store_or_manager: SessionStore | SessionManager,
    user_id: str,
    *,
    holders: Iterable[SessionDataHolder] = (),
) -> ErasureReport:
    """Erase every session of `user_id`, its history and user scope, and what `holders` (and a
    manager's registered data holders) keep for it. Idempotent; see `agent_sessions.lifecycle`."""
    if isinstance(store_or_manager, SessionStore):
        return await erase_user_data(store_or_manager, user_id, holders)
    every = [*store_or_manager.data_holders, *(h for h in holders if h not in store_or_manager.data_holders)]
    return await erase_user_data(store_or_manager.store, user_id, every)


async def export_user(
    store_or_manager: SessionStore | SessionManager,
    user_id: str,
    path: str | os.PathLike[str],
    *,
    include_auth: bool = False,
    compress: bool | None = None,
) -> ExportReport:
    """Write the user's sessions (full history) and user scope to `path` in the backup format."""
    store = store_or_manager if isinstance(store_or_manager, SessionStore) else store_or_manager.store
    return await export_user_data(store, user_id, path, include_auth=include_auth, compress=compress)

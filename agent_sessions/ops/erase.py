"""`erase_user` and `export_user` on a store or a manager (the CLI's ``erase`` and ``export --user``).

The work is `agent_sessions.lifecycle`'s; these accept either a `SessionStore` or a
`SessionManager` (whose registered data holders, the conversation stores, are then erased or
exported too).
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
    return await erase_user_data(store_or_manager.store, user_id, _with_registered(store_or_manager, holders))


async def export_user(
    store_or_manager: SessionStore | SessionManager,
    user_id: str,
    path: str | os.PathLike[str],
    *,
    include_auth: bool = False,
    compress: bool | None = None,
    holders: Iterable[SessionDataHolder] = (),
) -> ExportReport:
    """Write the user's sessions (full history), user scope and what `holders` (and a
    manager's registered data holders) keep for it (their conversations) to `path` in the
    backup format; a holder that cannot export is named in the report's `not_exported`."""
    if isinstance(store_or_manager, SessionStore):
        store, every = store_or_manager, list(holders)
    else:
        store = store_or_manager.store
        every = _with_registered(store_or_manager, holders)
    return await export_user_data(store, user_id, path, include_auth=include_auth, compress=compress, holders=every)


def _with_registered(manager: SessionManager, holders: Iterable[SessionDataHolder]) -> list[SessionDataHolder]:
    """The manager's registered data holders, then those of `holders` it does not have."""
    return [*manager.data_holders, *(h for h in holders if h not in manager.data_holders)]

"""Operations on whole stores: backup to a file and restore from it, and migration between stores.

- `export_sessions(store, path)` / `import_sessions(store, path)`: JSON Lines (gzip when the
  name ends in ``.gz``), streaming in constant memory, history and scopes included;
- `migrate(src, dst)`: copy between any two stores, batched and resumable;
- `erase_user(store_or_manager, user_id)` / `export_user(store_or_manager, user_id, path)`: one
  user's data, erased or exported (`agent_sessions.lifecycle`), conversations included (a
  manager's registered data holders, or `holders=`); `import_sessions(..., holders=...)` writes
  an export's conversations back.
"""

from __future__ import annotations

from ._transfer import ON_CONFLICT_CHOICES, OnConflict, Progress, TransferReport, max_line_bytes
from .backup import (
    DEFAULT_IMPORT_LINE_BYTES,
    FORMAT_VERSION,
    BackupFormatError,
    ExportReport,
    count_export_sessions,
    export_sessions,
    failed_line,
    import_sessions,
)
from .erase import erase_user, export_user
from .migrate import count_sessions, migrate

__all__ = [
    "DEFAULT_IMPORT_LINE_BYTES",
    "FORMAT_VERSION",
    "ON_CONFLICT_CHOICES",
    "BackupFormatError",
    "ExportReport",
    "OnConflict",
    "Progress",
    "TransferReport",
    "count_export_sessions",
    "count_sessions",
    "erase_user",
    "export_sessions",
    "export_user",
    "failed_line",
    "import_sessions",
    "max_line_bytes",
    "migrate",
]

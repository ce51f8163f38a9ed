"""The export file writer: a temporary file beside the target, moved into place when complete."""

from __future__ import annotations

import gzip
import os
import secrets
from pathlib import Path
from typing import BinaryIO

__all__ = ["FILE_MODE", "ExportWriter"]

#: Export files are readable and writable by their owner only: they hold live session ids.
FILE_MODE = 0o600


class ExportWriter:
    """Writes to a temporary file beside `path`, moved into place only when complete.

    The file holds live session ids (bearer credentials), so it is created readable and writable
    by its owner only (mode 0o600, whatever the umask), exclusively (``O_EXCL``: never an existing
    file or a planted symlink), under a name no other export uses; the rename keeps that mode.
    """

    def __init__(self, path: Path, compressed: bool) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.partial")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            self._raw: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise
        self._out: BinaryIO | gzip.GzipFile = self._raw
        if compressed:
            self._out = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6)

    def write(self, lines: list[bytes]) -> None:
        self._out.writelines(lines)

    def commit(self) -> int:
        if self._out is not self._raw:
            self._out.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.tmp, self.path)
        return self.path.stat().st_size

    def abort(self) -> None:
        try:
            if self._out is not self._raw:
                self._out.close()
            self._raw.close()
        finally:
            self.tmp.unlink(missing_ok=True)

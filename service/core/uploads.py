"""Streaming upload sink: writes to a temp file under the data dir, hashing and capping on the way."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from service.core.errors import PayloadTooLarge


class HashingSpool:
    """A write-only file object that never holds the upload in memory.

    Werkzeug's multipart parser writes the file part into it chunk by chunk; the sha256 and
    size are known when the request body ends, and the cap is enforced as bytes arrive.
    """

    def __init__(self, tmp_dir: Path, max_bytes: int) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=tmp_dir)
        self._fh = os.fdopen(fd, "w+b")
        self.path = Path(name)
        self.max_bytes = max_bytes
        self.size = 0
        self._sha = hashlib.sha256()
        self.committed = False

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.max_bytes:
            self.discard()
            raise PayloadTooLarge(
                f"File is larger than the limit of {self.max_bytes} bytes (TUNELINE_MAX_UPLOAD_BYTES).",
                param="file",
            )
        self._sha.update(data)
        return self._fh.write(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    # Werkzeug's FileStorage may seek/read the stream; give it a real file's behaviour.
    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def finish(self) -> None:
        """Flush to stable storage before the file is made visible."""
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def discard(self) -> None:
        self.close()
        if not self.committed:
            self.path.unlink(missing_ok=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

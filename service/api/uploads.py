"""A request class whose multipart file parts stream into HashingSpools, never into memory."""

from __future__ import annotations

from typing import IO, Any

from flask import Flask, Request, current_app

from service.core.files import tmp_dir
from service.core.uploads import HashingSpool


class TunelineRequest(Request):
    def _get_file_stream(  # type: ignore[override]
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        settings = current_app.extensions["tuneline"].settings
        spool = HashingSpool(tmp_dir(settings.data_dir), settings.max_upload_bytes)
        self.__dict__.setdefault("_tl_spools", []).append(spool)
        return spool  # type: ignore[return-value]

    def close(self) -> None:
        """At the end of every request (Flask closes the request when its context is popped):
        anything not made visible by a use case is removed, so rejected uploads leave no bytes.
        A method rather than a teardown hook: nothing to run for the requests that upload nothing."""
        for spool in self.__dict__.get("_tl_spools", ()):
            spool.discard()
        super().close()


def spool_of(storage: Any) -> HashingSpool:
    stream = storage.stream
    if not isinstance(stream, HashingSpool):  # pragma: no cover - guarded by the request class
        raise RuntimeError("upload was not streamed through HashingSpool")
    return stream


def register(app: Flask) -> None:
    app.request_class = TunelineRequest

"""Use case: prepare an uploaded file and record its report and status."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from service.core import files
from service.core.auth import Principal
from service.core.datasets import PrepareOptions, prepare_file
from service.core.errors import Conflict
from service.core.store import Store, keys
from service.core.store.base import dumps, loads

log = logging.getLogger("tuneline.preparation")


def prepare_uploaded_file(store: Store, data_dir: Path, file_id: str) -> None:
    """Run the engine over a stored file; safe to run twice (the report is recomputed)."""
    record = files.load_file(store, file_id)
    if record is None:
        log.info("file gone before preparation", extra={"file_id": file_id})
        return
    try:
        report = prepare_file(files.blob_path(data_dir, file_id), PrepareOptions())
    except Exception:
        log.exception("preparation crashed", extra={"file_id": file_id})
        files.update_status(store, file_id, "error", "internal error while preparing the file")
        return
    store.r.set(keys.file_report(file_id), dumps(report.to_dict()))
    status = "processed" if report.usable else "error"
    files.update_status(store, file_id, status, None if report.usable else report.status_details)
    log.info("file prepared", extra={"file_id": file_id, "status": status})


def get_report(store: Store, file_id: str) -> dict[str, Any] | None:
    report: dict[str, Any] | None = loads(store.r.get(keys.file_report(file_id)))  # type: ignore[arg-type]
    return report


def report_for(store: Store, principal: Principal, file_id: str) -> dict[str, Any]:
    """The report of a file the caller may see; 409 while it is still being prepared."""
    record = files.get_file(store, principal, file_id)
    report = get_report(store, record.id)
    if report is None:
        raise Conflict(
            f"File {record.id} is still being prepared; retry shortly.",
            param="file_id",
            code="report_not_ready",
        )
    return {"object": "file.report", "file_id": record.id, **report, "status": record.status}

"""Use case: prepare an uploaded file and record its report and status."""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from service.core import files, tasknames
from service.core.auth import Principal
from service.core.datasets import PrepareOptions, prepare_file, resolve_model
from service.core.dispatch import Dispatcher
from service.core.errors import Conflict, InvalidRequest, Unprocessable
from service.core.store import Store, keys, preparing
from service.core.store.base import dumps, loads

log = logging.getLogger("tuneline.preparation")

MAX_PREPARE_STARTS = 3  # starts of one file's preparation before it ends `error` (worker deaths)
HEARTBEAT_S = 10.0  # how often a running preparation pushes its watchdog entry ahead


def prepare_uploaded_file(store: Store, data_dir: Path, file_id: str) -> None:
    """Run the engine over a file still ``uploaded`` and record its report and status.

    Safe to deliver twice: a file that already ended is left as it is. While the engine runs, the
    file's watchdog entry is pushed ahead; a file whose preparation was started
    ``MAX_PREPARE_STARTS`` times without ending (its worker died each time: a file too much for
    the worker's memory) ends ``error`` with that reason, a final answer instead of a 409 loop.
    """
    record = files.load_file(store, file_id)
    if record is None or record.status != "uploaded":
        log.info("file gone or already prepared", extra={"file_id": file_id})
        preparing.done(store, file_id)
        return
    starts = preparing.count_attempt(store, file_id)
    if starts > MAX_PREPARE_STARTS:
        log.error("preparation keeps dying; giving up", extra={"file_id": file_id, "starts": starts - 1})
        _end(
            store,
            file_id,
            "error",
            f"its preparation was interrupted {starts - 1} times (the worker preparing it died, "
            "e.g. out of memory); giving up",
        )
        return
    preparing.heartbeat(store, file_id, time.time())
    try:
        path = files.blob_path(data_dir, file_id)
        report = prepare_file(path, PrepareOptions(), progress=_Heartbeat(store, file_id))
    except Exception as exc:
        # Bad content is a finding, never an exception: this is a fault of ours or of the
        # machine. The file ends `error` without a report, and `report_for` says so for good.
        log.exception("preparation crashed", extra={"file_id": file_id})
        _end(store, file_id, "error", f"internal error while preparing the file ({type(exc).__name__})")
        return
    store.r.set(keys.file_report(file_id), dumps(report.to_dict()))
    status = "processed" if report.usable else "error"
    _end(store, file_id, status, None if report.usable else report.status_details)
    log.info("file prepared", extra={"file_id": file_id, "status": status})


def _end(store: Store, file_id: str, status: str, details: str | None) -> None:
    files.update_status(store, file_id, status, details)
    preparing.done(store, file_id)  # last: a death before it has the watchdog run it again


class _Heartbeat:
    """The engine's progress callback: the file's watchdog entry moves ahead every few seconds."""

    def __init__(self, store: Store, file_id: str) -> None:
        self.store, self.file_id = store, file_id
        self.last = time.monotonic()

    def __call__(self, consumed: int) -> None:
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_S:
            self.last = now
            preparing.heartbeat(self.store, self.file_id, time.time())


def requeue_stalled(store: Store, dispatcher: Dispatcher, now: float) -> list[str]:
    """Send the preparation task again for files whose watchdog entry fell due; their ids."""
    stalled = preparing.claim_due(store, now)
    for file_id in stalled:
        log.warning("file preparation stalled; sending its task again", extra={"file_id": file_id})
        dispatcher.enqueue(tasknames.PREPARE_FILE, file_id)
    return stalled


def get_report(store: Store, file_id: str) -> dict[str, Any] | None:
    report: dict[str, Any] | None = loads(store.r.get(keys.file_report(file_id)))  # type: ignore[arg-type]
    return report


def report_for(store: Store, principal: Principal, file_id: str) -> dict[str, Any]:
    """The report of a file the caller may see; 409 only while it is still being prepared.

    A file that ended without a report (its preparation failed) answers a final 422: retrying
    would never change the answer.
    """
    record = files.get_file(store, principal, file_id)
    report = get_report(store, record.id)
    if report is None:
        if record.status == "uploaded":
            raise Conflict(
                f"File {record.id} is still being prepared; retry shortly.",
                param="file_id",
                code="report_not_ready",
            )
        raise Unprocessable(
            f"File {record.id} has no report: {record.status_details or 'its preparation failed'}. "
            "Upload the file again to prepare it anew.",
            param="file_id",
            code="report_unavailable",
        )
    return {"object": "file.report", "file_id": record.id, **report, "status": record.status}


def prepared_content(
    store: Store, data_dir: Path, principal: Principal, file_id: str, model: str
) -> tuple[files.FileRecord, Path]:
    """The file as it would be sent to train ``model``: fixed, converted, deduplicated (DESIGN §9).

    Prepared once per (file, model) with the pipeline's default options and kept beside the
    file's other prepared outputs (deleting the file deletes them); the caller streams the path.
    Written to a private directory first and renamed into place, so concurrent first requests
    never read a half-written file.
    """
    record = files.get_file(store, principal, file_id)
    try:
        spec = resolve_model(model)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="prepared_for", code="model_not_found") from None
    if record.status != "processed":
        raise Unprocessable(
            f"File {record.id} is {record.status}; only processed files can be prepared "
            f"({record.status_details or 'still being checked'}).",
            param="file_id",
            code="file_not_ready" if record.status == "uploaded" else "invalid_file",
        )
    target = data_dir / "prepared" / record.id / "for" / re.sub(r"[^A-Za-z0-9._-]", "_", spec.name)
    train = target / "train.jsonl"
    if train.exists():
        return record, train
    scratch = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    try:
        report = prepare_file(files.blob_path(data_dir, record.id), PrepareOptions(model=spec.name), scratch)
        if not report.usable or "train" not in report.outputs:
            raise Unprocessable(
                f"File {record.id} cannot be prepared for {spec.name}: {report.status_details}",
                param="prepared_for",
                code="invalid_file",
            )
        try:
            scratch.rename(target)
        except OSError:
            if not train.exists():  # not a twin request that won the race
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return record, train

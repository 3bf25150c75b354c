"""Files: metadata in Redis, bytes under the data dir; visible only once complete."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.core import ids, tasknames
from service.core.auth import Principal
from service.core.dispatch import Dispatcher
from service.core.errors import InvalidRequest, NotFound
from service.core.store import Store, keys, preparing
from service.core.store.base import dumps, loads
from service.core.uploads import HashingSpool

PURPOSES = ("fine-tune",)
ORPHAN_GRACE_S = 3600


@dataclass
class FileRecord:
    id: str
    tenant: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    sha256: str
    status: str = "uploaded"
    status_details: str | None = None
    expires_at: int | None = None
    import_id: str | None = None  # set on a file copied from a provider account (DESIGN §15)
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        imported = {"import_id": self.import_id} if self.import_id else {}
        return {
            **imported,
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "status_details": self.status_details,
            "expires_at": self.expires_at,
            "sha256": self.sha256,
        }


def files_dir(data_dir: Path) -> Path:
    return data_dir / "files"


def tmp_dir(data_dir: Path) -> Path:
    return data_dir / "tmp"


def blob_path(data_dir: Path, file_id: str) -> Path:
    return files_dir(data_dir) / file_id


def _save(store: Store, record: FileRecord) -> None:
    store.r.set(keys.file(record.id), dumps(asdict(record)))


def save_record(store: Store, record: FileRecord) -> None:
    """Write (or overwrite) a file record and index it; for files Tuneline itself produces."""
    now_ms = time.time() * 1000
    pipe = store.r.pipeline(transaction=True)
    pipe.set(keys.file(record.id), dumps(asdict(record)))
    pipe.zadd(keys.files_by_tenant(record.tenant), {record.id: now_ms}, nx=True)
    pipe.zadd(keys.files_all(), {record.id: now_ms}, nx=True)
    pipe.execute()


def ids_by_sha256(store: Store, tenant: str) -> dict[str, str]:
    """sha256 -> id of one of the tenant's files with those bytes (reuse by content, DESIGN §15)."""
    file_ids: list[str] = store.r.zrange(keys.files_by_tenant(tenant), 0, -1)  # type: ignore[assignment]
    found: dict[str, str] = {}
    for start in range(0, len(file_ids), 500):
        batch = file_ids[start : start + 500]
        for raw in store.load_many([keys.file(f) for f in batch]):
            if raw is not None and raw.get("status") != "error":
                found.setdefault(raw["sha256"], raw["id"])
    return found


def create_file(
    store: Store,
    dispatcher: Dispatcher,
    data_dir: Path,
    principal: Principal,
    spool: HashingSpool,
    filename: str,
    purpose: str,
) -> FileRecord:
    """Make a finished upload visible: move bytes in place, then write metadata atomically.

    A crash before the metadata write leaves only an unreferenced blob, which ``sweep_orphans``
    removes; a client never sees a file whose bytes are incomplete.
    """
    if purpose not in PURPOSES:
        spool.discard()
        raise InvalidRequest(
            f"Invalid purpose {purpose!r}: Tuneline accepts {', '.join(PURPOSES)}.",
            param="purpose",
            code="invalid_purpose",
        )
    if spool.size == 0:
        spool.discard()
        raise InvalidRequest("The uploaded file is empty.", param="file", code="empty_file")
    spool.finish()
    record = FileRecord(
        id=ids.new_id("file"),
        tenant=principal.tenant,
        bytes=spool.size,
        created_at=int(time.time()),
        filename=os.path.basename(filename or "upload.jsonl")[:255],
        purpose=purpose,
        sha256=spool.sha256,
    )
    target = blob_path(data_dir, record.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(spool.path, target)
    spool.committed = True
    now_ms = time.time() * 1000
    pipe = store.r.pipeline(transaction=True)
    pipe.set(keys.file(record.id), dumps(asdict(record)))
    pipe.zadd(keys.files_by_tenant(record.tenant), {record.id: now_ms})
    pipe.zadd(keys.files_all(), {record.id: now_ms})
    preparing.queue(pipe, record.id, now_ms / 1000)  # a lost task is sent again (the watchdog)
    pipe.execute()
    dispatcher.enqueue(tasknames.PREPARE_FILE, record.id)
    return record


def load_file(store: Store, file_id: str) -> FileRecord | None:
    raw = loads(store.r.get(keys.file(file_id)))  # type: ignore[arg-type]
    return None if raw is None else FileRecord(**raw)


def get_file(store: Store, principal: Principal, file_id: str, param: str = "file_id") -> FileRecord:
    """The file if the caller may see it; another tenant's file is indistinguishable from none."""
    record = load_file(store, file_id)
    if record is None or not principal.can_read(record.tenant):
        raise NotFound(f"No such File object: {file_id}", param=param, code="file_not_found")
    return record


def list_files(
    store: Store,
    principal: Principal,
    after: str | None,
    limit: int,
    purpose: str | None = None,
) -> tuple[list[FileRecord], bool]:
    tenant = principal.scope()
    index = keys.files_all() if tenant is None else keys.files_by_tenant(tenant)

    def load_many(file_ids: list[str]) -> list[FileRecord | None]:
        return [
            None if raw is None else FileRecord(**raw)
            for raw in store.load_many([keys.file(f) for f in file_ids])
        ]

    return store.walk(
        index, after, limit, load_many, None if purpose is None else (lambda f: f.purpose == purpose)
    )


def file_content_path(
    store: Store, data_dir: Path, principal: Principal, file_id: str
) -> tuple[FileRecord, Path]:
    record = get_file(store, principal, file_id)
    return record, blob_path(data_dir, record.id)


def delete_file(store: Store, data_dir: Path, principal: Principal, file_id: str) -> FileRecord:
    """Remove metadata first (the file disappears atomically), then the bytes."""
    record = get_file(store, principal, file_id)
    pipe = store.r.pipeline(transaction=True)
    pipe.delete(keys.file(record.id), keys.file_report(record.id))
    pipe.zrem(keys.files_by_tenant(record.tenant), record.id)
    pipe.zrem(keys.files_all(), record.id)
    pipe.execute()
    blob_path(data_dir, record.id).unlink(missing_ok=True)
    prepared = data_dir / "prepared" / record.id
    if prepared.exists():
        for child in sorted(prepared.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        prepared.rmdir()
    return record


def update_status(store: Store, file_id: str, status: str, details: str | None) -> None:
    record = load_file(store, file_id)
    if record is None:
        return
    record.status = status
    record.status_details = details
    _save(store, record)


def sweep_orphans(store: Store, data_dir: Path, now: float | None = None) -> int:
    """Delete blobs without metadata and abandoned temp uploads older than the grace period."""
    now = time.time() if now is None else now
    removed = 0
    for directory, needs_record in ((tmp_dir(data_dir), False), (files_dir(data_dir), True)):
        if not directory.exists():
            continue
        for path in directory.iterdir():
            if not path.is_file() or now - path.stat().st_mtime < ORPHAN_GRACE_S:
                continue
            if needs_record and store.r.exists(keys.file(path.name)):
                continue
            path.unlink(missing_ok=True)
            removed += 1
    return removed

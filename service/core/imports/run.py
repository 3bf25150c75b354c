"""The import's worker step: read the account through the SDK and copy each ended job once.

One delivery of the task works for at most ``STEP_BUDGET_S`` (well under the broker's visibility
timeout), then asks for a fresh task. Progress is committed after every job, in the same Redis
transaction as the job's records, so a worker killed anywhere resumes at the next job without
duplicating one; a job is recorded under an id derived from its provider id, so importing an
account again only adds what is new. Only one worker runs an import at a time (a lock with a
short expiry: a killed worker's lock frees itself).
"""

from __future__ import annotations

import io
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from service.core import files, ids, tasknames
from service.core.backends.base import BackendError
from service.core.backends.registry import account_reader
from service.core.backends.remote import SDKClient, parse_result_csv
from service.core.errors import PayloadTooLarge, TunelineError
from service.core.imports import mapping
from service.core.imports.usecases import FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, ImportsContext
from service.core.jobs import retry
from service.core.store import imports as repo
from service.core.store import ratelimit
from service.core.store.base import Pipeline
from service.core.uploads import HashingSpool

log = logging.getLogger("tuneline.imports")

LOCK_S = 30  # the lock is extended after every job; a killed worker's frees itself this soon
STEP_BUDGET_S = 60.0
PAGE_SIZE = 20
SKIPPED_KEPT = 500  # entries in ``skipped``; the counters keep counting past it


def run_import(ctx: ImportsContext, import_id: str, attempt: int = 0) -> bool:
    """One step of the import; True when there is more to do (enqueue the task again).

    Raises ``retry.RetryLater`` when another worker holds the import or the provider said "later".
    """
    doc = repo.load(ctx.store, import_id)
    if doc is None or doc["status"] in TERMINAL:
        return False
    token = secrets.token_hex(8)
    if not repo.acquire_lock(ctx.store, import_id, token, LOCK_S):
        raise retry.RetryLater(LOCK_S / 3, "another worker is running this import")
    try:
        return _Step(ctx, doc, token).run(attempt)
    finally:
        repo.release_lock(ctx.store, import_id, token)


class _Step:
    def __init__(self, ctx: ImportsContext, doc: dict[str, Any], token: str) -> None:
        self.ctx, self.doc, self.token = ctx, doc, token
        self.id: str = doc["id"]
        self.tenant: str = doc["tenant"]
        self.reader: SDKClient
        self.account = ""
        self._by_sha: dict[str, str] | None = None

    # --- the loop --------------------------------------------------------------------------

    def run(self, attempt: int) -> bool:
        try:
            self.reader, self.account = self._open()
        except TunelineError as exc:
            self._finish(FAILED, {"code": exc.code or "import_not_configured", "message": exc.message})
            return False
        if self.doc["status"] == QUEUED:
            self._commit(lambda d: d.update(status=RUNNING))
            log.info("import started", extra={"import_id": self.id})
        # Well inside the visibility timeout, so the broker never hands a live step to a twin.
        budget = min(STEP_BUDGET_S, self.ctx.settings.visibility_timeout_s / 2)
        deadline = self.ctx.clock.now() + budget
        try:
            for raw in self._jobs():
                self._import_one(raw)
                repo.extend_lock(self.ctx.store, self.id, self.token, LOCK_S)
                if self.ctx.clock.now() >= deadline:
                    return True
        except BackendError as exc:
            decision = retry.decide(retry.STAGE, exc, attempt, self.ctx.jitter())
            if decision.retry:
                raise retry.RetryLater(decision.delay, decision.message) from exc
            # A refused key, a revoked one mid-import: keep what was copied, say why it stopped.
            self._finish(FAILED, {"code": decision.code, "message": decision.message})
            return False
        self._finish(SUCCEEDED, None)
        return False

    def _open(self) -> tuple[SDKClient, str]:
        sealed = repo.sealed_key(self.ctx.store, self.id)
        api_key = None
        if sealed is not None:
            try:
                api_key = self.ctx.box.decrypt(sealed)
            except RuntimeError as exc:
                raise TunelineError(str(exc), code="import_key_unreadable", status=500) from None
        return account_reader(self.ctx.settings, self.doc["source"], api_key, self.doc.get("base_url"))

    def _jobs(self) -> Any:
        """The provider jobs still to look at, from where the last commit left off."""
        wanted = self.doc.get("jobs")
        since = self.doc.get("since")
        if wanted:
            for provider_job_id in wanted[int(self.doc.get("position") or 0) :]:
                self._throttle()
                try:
                    raw = self.reader.job(provider_job_id)
                except BackendError as exc:
                    if exc.status != 404:
                        raise
                    self._skip({"id": provider_job_id}, "job_not_found", "the account has no such job")
                    continue
                if since is not None and int(raw.get("created_at") or 0) < int(since):
                    self._skip(raw, "before_since", "the job was created before `since`")
                    continue
                yield raw
            return
        while True:
            self._throttle()
            page, has_more = self.reader.jobs_page(self.doc.get("cursor"), PAGE_SIZE)
            for raw in page:
                if since is not None and int(raw.get("created_at") or 0) < int(since):
                    return  # the listing is newest first: everything after this is older still
                yield raw
            if not has_more or not page:
                return

    def _throttle(self) -> None:
        """Wait for the account's rate budget (shared with polling the same account)."""
        settings = self.ctx.settings
        ratelimit.wait_for(
            self.ctx.store,
            self.account,
            settings.poll_rate_per_s,
            settings.poll_burst,
            self.ctx.clock.now,
            self.ctx.sleep,
        )

    # --- one job -----------------------------------------------------------------------------

    def _import_one(self, raw: dict[str, Any]) -> None:
        provider_job_id = str(raw["id"])
        job_id = mapping.job_id_for(self.tenant, self.account, provider_job_id)
        if not mapping.is_finished(raw):
            self._skip(
                raw,
                "job_not_finished",
                f"the job is {raw.get('status')} at the provider; import again once it has ended",
            )
            return
        if repo.job_exists(self.ctx.store, job_id):
            self._advance(raw, lambda p: p.update(jobs_already_imported=p["jobs_already_imported"] + 1))
            return
        self._throttle()
        notes: list[dict[str, Any]] = []
        training = self._file(raw.get("training_file"), provider_job_id, notes)
        validation = self._file(raw.get("validation_file"), provider_job_id, notes)
        raw_events = self.reader.all_events(provider_job_id)
        raw_checkpoints = self.reader.all_checkpoints(provider_job_id)
        rows = self._result_rows(raw, notes) or [
            e["data"] for e in raw_events if e.get("type") == "metrics" and isinstance(e.get("data"), dict)
        ]
        now = int(self.ctx.clock.now())
        job = mapping.to_job(
            raw,
            tenant=self.tenant,
            source=self.doc["source"],
            account=self.account,
            import_id=self.id,
            training_file=training,
            validation_file=validation,
            now=now,
        )
        closing = f"Imported from {self.doc['source']} job {provider_job_id} by {self.id} (read-only)."
        events = mapping.events(job.id, raw_events, closing, now)
        job.event_count = len(events)
        checkpoints = [mapping.checkpoint(job.id, c) for c in raw_checkpoints]
        metrics = mapping.metrics_rows(rows)

        def queue(pipe: Pipeline) -> None:
            repo.queue_job(pipe, job.to_dict(), events, checkpoints, metrics)

        def counted(progress: dict[str, Any]) -> None:
            progress["jobs_imported"] += 1

        self._advance(raw, counted, queue, notes)
        log.info("job imported", extra={"import_id": self.id, "job_id": job.id})

    def _result_rows(self, raw: dict[str, Any], notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for file_id in raw.get("result_files") or []:
            buffer = io.BytesIO()
            try:
                self.reader.download(file_id, buffer.write)
            except BackendError as exc:
                if exc.kind != "permanent":
                    raise
                notes.append(_note(raw, "result_file_unavailable", f"result file {file_id}: {exc.message}"))
                continue
            rows.extend(parse_result_csv(buffer.getvalue()))
        return rows

    # --- files: each provider file downloaded once, reused by content --------------------------

    def _file(self, provider_file_id: str | None, job: str, notes: list[dict[str, Any]]) -> str | None:
        if not provider_file_id:
            return None
        known: str | None = (self.doc.get("files") or {}).get(provider_file_id)
        if known:
            return known
        earlier = repo.imported_file(self.ctx.store, self.tenant, self.account, provider_file_id)
        record = files.load_file(self.ctx.store, earlier) if earlier else None
        if record is not None and record.tenant == self.tenant:
            self._file_done(provider_file_id, record.id, None)
            return record.id
        data_dir = self.ctx.settings.data_dir
        spool = HashingSpool(files.tmp_dir(data_dir), self.ctx.settings.max_upload_bytes)
        try:
            self._throttle()
            self.reader.download(provider_file_id, spool.write)
            filename = self.reader.file_name(provider_file_id)
        except PayloadTooLarge as exc:
            spool.discard()
            notes.append(_note({"id": job}, "file_too_large", f"file {provider_file_id}: {exc.message}"))
            return None
        except BackendError as exc:
            spool.discard()
            if exc.kind != "permanent":
                raise
            notes.append(_note({"id": job}, "file_unavailable", f"file {provider_file_id}: {exc.message}"))
            return None
        same = self._files_by_sha().get(spool.sha256)
        if same is not None or spool.size == 0:
            spool.discard()
            if same is None:
                notes.append(_note({"id": job}, "empty_file", f"file {provider_file_id} is empty"))
                return None
            self._file_done(provider_file_id, same, None)
            return same
        spool.finish()
        new = files.FileRecord(
            id=ids.new_id("file"),
            tenant=self.tenant,
            bytes=spool.size,
            created_at=int(self.ctx.clock.now()),
            filename=os.path.basename(filename)[:255] or f"{provider_file_id}.jsonl",
            purpose="fine-tune",
            sha256=spool.sha256,
            import_id=self.id,
        )
        target = files.blob_path(data_dir, new.id)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Bytes first, then the record: a crash in between leaves an orphan blob the sweep removes.
        os.replace(spool.path, target)
        spool.committed = True
        self._file_done(provider_file_id, new.id, asdict(new))
        self._files_by_sha()[new.sha256] = new.id
        self.ctx.dispatcher.enqueue(tasknames.PREPARE_FILE, new.id)
        return new.id

    def _files_by_sha(self) -> dict[str, str]:
        if self._by_sha is None:
            self._by_sha = files.ids_by_sha256(self.ctx.store, self.tenant)
        return self._by_sha

    def _file_done(self, provider_file_id: str, file_id: str, created: dict[str, Any] | None) -> None:
        """Commit where a provider file went: a new file (with its record), or one the tenant had."""

        def edit(doc: dict[str, Any]) -> None:
            doc.setdefault("files", {})[provider_file_id] = file_id
            progress = doc["progress"]
            if created is None:
                progress["files_reused"] += 1
            else:
                progress["files_imported"] += 1
                doc.setdefault("files_created", []).append(file_id)

        def queue(pipe: Pipeline) -> None:
            if created is not None:
                repo.queue_file_record(pipe, created, self.ctx.clock.now() * 1000)
            repo.remember_file(pipe, self.tenant, self.account, provider_file_id, file_id)

        self._commit(edit, queue)

    # --- commits -----------------------------------------------------------------------------

    def _skip(self, raw: dict[str, Any], code: str, message: str) -> None:
        def counted(progress: dict[str, Any]) -> None:
            progress["jobs_skipped"] += 1

        self._advance(raw, counted, notes=[_note(raw, code, message)])

    def _advance(
        self,
        raw: dict[str, Any],
        count: Callable[[dict[str, Any]], None],
        queue: Callable[[Pipeline], None] | None = None,
        notes: list[dict[str, Any]] | None = None,
    ) -> None:
        """Move the cursor past ``raw`` with its counters and notes (and its records, if any)."""

        def edit(doc: dict[str, Any]) -> None:
            doc["progress"]["jobs_seen"] += 1
            count(doc["progress"])
            if doc.get("jobs"):
                doc["position"] = int(doc.get("position") or 0) + 1
            else:
                doc["cursor"] = raw["id"]
            doc["skipped"] = ((doc.get("skipped") or []) + list(notes or []))[:SKIPPED_KEPT]

        self._commit(edit, queue)

    def _commit(
        self, edit: Callable[[dict[str, Any]], None], queue: Callable[[Pipeline], None] | None = None
    ) -> None:
        def change(doc: dict[str, Any], pipe: Pipeline) -> dict[str, Any]:
            edit(doc)
            doc["updated_at"] = int(self.ctx.clock.now())
            if queue is not None:
                queue(pipe)
            return doc

        stored = repo.update(self.ctx.store, self.id, change)
        if stored is not None:
            self.doc = stored

    def _finish(self, status: str, error: dict[str, Any] | None) -> None:
        """End the import and delete its key in the same transaction."""

        def edit(doc: dict[str, Any]) -> None:
            doc.update(status=status, error=error, finished_at=int(self.ctx.clock.now()))

        self._commit(edit, lambda pipe: repo.forget_key(pipe, self.id))
        # A file whose preparation task was lost with a killed worker gets it again (idempotent).
        for file_id in self.doc.get("files_created") or []:
            record = files.load_file(self.ctx.store, file_id)
            if record is not None and record.status == "uploaded":
                self.ctx.dispatcher.enqueue(tasknames.PREPARE_FILE, file_id)
        log.info("import ended", extra={"import_id": self.id, "status": status})


def _note(raw: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    return {"job": raw.get("id"), "code": code, "message": message}

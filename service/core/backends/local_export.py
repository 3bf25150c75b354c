"""Exports of locally trained models: cached by model and format under the data directory, built
once in the background by a child ``python -m service.training.export`` on an ``infer`` worker.

Layout under ``<data_dir>/exports/<job id>/``: ``<name>.json`` (written last: the export is ready)
and ``<name>.tar``, the export directory archived: its files and model card (README.md), and for
gguf the ``.gguf`` with the Ollama ``Modelfile`` that names it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from service.core import tasknames
from service.core.backends.base import ExportRequest, ExportState
from service.core.backends.local import local_state
from service.core.backends.local_run import job_dir, model_cache_dir, output_dir
from service.core.dispatch import Dispatcher
from service.core.errors import Unprocessable
from service.core.jobs import lifecycle, record
from service.core.jobs.naming import fine_tuned_model_name
from service.core.jobs.record import Job
from service.core.store import Store, keys
from service.settings import Settings

log = logging.getLogger("tuneline.export")

FAILED_TTL_S = 600  # a failed build's reason, answered once to the next request


def export_name(request: ExportRequest) -> str:
    """``final-merged``, ``step-20-gguf-q8_0``: one cache entry per model (or checkpoint) and format."""
    where = "final" if request.step is None else f"step-{request.step}"
    return f"{where}-{request.format}" + (f"-{request.quantization}" if request.format == "gguf" else "")


def exports_dir(settings: Settings, job_id: str) -> Path:
    return settings.data_dir.resolve() / "exports" / job_id


def source_dir(settings: Settings, job: Job, model_dir: str | None, step: int | None) -> Path | None:
    """The directory to export: the final model, or the job's ``checkpoint-N``."""
    if step is None:
        return Path(model_dir) if model_dir else None
    return output_dir(settings, job.id).resolve() / "checkpoints" / f"checkpoint-{step}"


def _ready(folder: Path, name: str) -> ExportState | None:
    try:
        summary = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    file = folder / summary["file"]
    return ExportState("ready", file, summary["filename"]) if file.is_file() else None


def start(
    settings: Settings, store: Store, dispatcher: Dispatcher | None, job: Job, request: ExportRequest
) -> ExportState:
    """The built export, else enqueue its build unless one is under way (a Redis marker: built once
    however many requests arrive together); a failed build's reason is answered once (422)."""
    name = export_name(request)
    ready = _ready(exports_dir(settings, job.id), name)
    if ready is not None:
        return ready
    failed = store.r.getdel(keys.export_failed(job.id, name))
    if failed is not None:
        reason = str(failed)  # the store decodes responses
        raise Unprocessable(
            f"Exporting {request.model} as {request.format} failed: {reason} (ask again to retry).",
            param="format",
            code="export_failed",
        )
    if dispatcher is None:
        raise RuntimeError("the local backend was built without a dispatcher; it cannot build exports")
    marker = keys.export_building(job.id, name)
    if store.r.set(marker, secrets.token_hex(8), nx=True, ex=settings.export_timeout_s + 60):
        step = "" if request.step is None else str(request.step)
        dispatcher.enqueue(tasknames.INFER_EXPORT, job.id, request.format, request.quantization, step)
        log.info("export started", extra={"job_id": job.id, "export": name})
    return ExportState("building")


def build(settings: Settings, store: Store, job_id: str, fmt: str, quantization: str, step: str) -> None:
    """Build one export (the ``infer`` task): run the engine in a child process, keep its file, mark
    it ready, and record an event on the job. Never raises for a bad build: the reason is kept."""
    request = ExportRequest("", fmt, quantization, int(step) if step else None)
    name = export_name(request)
    try:
        job = record.load(store, job_id)
        if job is None or job.model_deleted:
            return
        model = fine_tuned_model_name(job.model, job.tenant, job.suffix, job.id)
        if request.step is not None:
            model += f":ckpt-step-{request.step}"
        source = source_dir(settings, job, local_state(job).model_dir, request.step)
        try:
            summary = _run_engine(settings, job, source, request, name, model)
        except ExportFailed as exc:
            store.r.set(keys.export_failed(job_id, name), exc.message[:500], ex=FAILED_TTL_S)
            lifecycle.record_event(
                store, job_id, f"Export of {model} as {name} failed: {exc.message[:300]}", level="error"
            )
            return
        latest = record.load(store, job_id)
        if latest is None or latest.model_deleted:  # deleted while it was being built
            delete(settings, job_id)
            return
        lifecycle.record_event(
            store,
            job_id,
            f"Export of {model} as {name} is ready ({summary['bytes']} bytes)",
            data={"export": name, "model": model, **summary},
        )
    finally:
        store.r.delete(keys.export_building(job_id, name))


def _evaluation_summary(job: Job) -> dict[str, Any] | None:
    """The held-out evaluation for the final model's card, when it had finished by the time the
    export was built (a job evaluates before it succeeds; an export is cached once built)."""
    evaluation = job.evaluation or {}
    if not evaluation.get("metrics"):
        return None
    keep = ("examples", "metrics", "baseline_model", "baseline")
    return {key: evaluation[key] for key in keep if evaluation.get(key) is not None}


class ExportFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _run_engine(
    settings: Settings, job: Job, source: Path | None, request: ExportRequest, name: str, model: str
) -> dict[str, Any]:
    if source is None or not source.is_dir():
        raise ExportFailed("the model's files are gone")
    folder = exports_dir(settings, job.id)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    archive = folder / f"{name}.tar"
    command = [
        settings.train_python or sys.executable,
        "-m",
        "service.training.export",
        "--model",
        str(source),
        "--format",
        request.format,
        "--gguf-type",
        request.quantization,
        "--out",
        str(out),
        "--name",
        model,
        "--cache-dir",
        str(model_cache_dir(settings).resolve()),
    ]
    spec = job_dir(settings, job.id) / "SPEC.json"
    if spec.is_file():
        command += ["--spec", str(spec)]
    evaluation = _evaluation_summary(job) if request.step is None else None
    if evaluation is not None:
        summary_file = folder / f".{name}.evaluation.json"
        summary_file.write_text(json.dumps(evaluation, ensure_ascii=False), encoding="utf-8")
        command += ["--evaluation", str(summary_file)]
    command += ["--archive", str(archive)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if settings.train_device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=settings.export_timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise ExportFailed(f"the export took longer than {settings.export_timeout_s}s") from None
    lines = done.stdout.strip().splitlines()
    try:
        summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        summary = {}
    if done.returncode != 0 or "error" in summary or "path" not in summary:
        error = summary.get("error") or {}
        message = str(error.get("message") or (done.stderr.strip().splitlines() or ["exit code"])[-1])
        log.warning("export failed", extra={"job_id": job.id, "export": name, "code": done.returncode})
        raise ExportFailed(message)
    shutil.rmtree(out, ignore_errors=True)  # the archive holds it; keep one copy on disk
    file, filename = archive, f"{job.id}-{name}.tar"
    kept = {
        "file": str(file.relative_to(folder)),
        "filename": filename,
        "bytes": file.stat().st_size,
        "seconds": summary.get("seconds"),
        "peak_rss_bytes": summary.get("peak_rss_bytes"),
    }
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(kept), encoding="utf-8")
    os.replace(tmp, folder / f"{name}.json")  # last: the export is ready
    return kept


def delete(settings: Settings, job_id: str) -> bool:
    """Remove every export of the job's model (and its checkpoints); True when there were some."""
    folder = exports_dir(settings, job_id)
    if not folder.exists():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True

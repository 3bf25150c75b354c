"""Fine-tuning job routes: create, list, retrieve, cancel, events (and SSE), checkpoints, metrics."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, request, stream_with_context
from flask.views import MethodView

from service.api.base import Blueprint, CursorArgsSchema, list_body, principal, services
from service.api.idempotent import idempotent
from service.api.jobs.schemas import (
    CheckpointListSchema,
    EventArgsSchema,
    EventListSchema,
    JobCreateSchema,
    JobListArgsSchema,
    JobListSchema,
    JobSchema,
    MetricsArgsSchema,
    MetricsSchema,
)
from service.core.jobs import create as jobs
from service.core.jobs import states
from service.core.jobs.create import JobsContext
from service.core.jobs.views import public_job
from service.core.providers.openai_provider import METRIC_COLUMNS
from service.core.store import jobs as repo

blp = Blueprint("jobs", __name__, url_prefix="/v1/fine_tuning/jobs",
                description="Fine-tuning jobs (OpenAI Fine-tuning API plus extensions).")

IDEMPOTENCY_HEADER = [{"in": "header", "name": "Idempotency-Key", "required": False,
                       "schema": {"type": "string", "maxLength": 255}}]
METADATA_RE = re.compile(r"^metadata\[(.+)\]$")
STREAM_POLL_S = 0.5
STREAM_MAX_S = 3600


def _ctx() -> JobsContext:
    svc = services()
    return JobsContext(settings=svc.settings, store=svc.store, dispatcher=svc.dispatcher)


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(JobCreateSchema)
    @blp.response(200, JobSchema)
    @blp.doc(parameters=IDEMPOTENCY_HEADER)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a fine-tuning job."""
        return idempotent({"route": "jobs.create", **body},
                          lambda: jobs.create_job(_ctx(), principal(), body))

    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(200, JobListSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """List fine-tuning jobs, newest first (filters: status, provider, metadata[key]=value)."""
        metadata = {m.group(1): v for k, v in request.args.items() if (m := METADATA_RE.match(k))}
        found, has_more = jobs.list_jobs(services().store, principal(), args.get("after"), args["limit"],
                                         {"status": args.get("status"), "provider": args.get("provider"),
                                          "metadata": metadata})
        return list_body(found, has_more)


@blp.route("/<string:job_id>")
class JobById(MethodView):
    @blp.response(200, JobSchema)
    def get(self, job_id: str) -> Any:
        """Retrieve a fine-tuning job."""
        return public_job(jobs.get_job(services().store, principal(), job_id))


@blp.route("/<string:job_id>/cancel")
class JobCancel(MethodView):
    @blp.response(200, JobSchema)
    def post(self, job_id: str) -> Any:
        """Cancel a job in any non-terminal stage."""
        return jobs.cancel_job(_ctx(), principal(), job_id)


def _sse(job_id: str) -> Iterator[str]:
    store = services().store
    sent = 0
    deadline = time.monotonic() + STREAM_MAX_S
    while time.monotonic() < deadline:
        for event in repo.events_since(store, job_id, sent):
            sent += 1
            yield f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
        job = repo.load(store, job_id)
        if job is None or job["status"] in states.TERMINAL:
            yield f"event: done\ndata: {json.dumps({'status': job['status'] if job else None})}\n\n"
            return
        yield ": keep-alive\n\n"
        time.sleep(STREAM_POLL_S)


@blp.route("/<string:job_id>/events")
class JobEvents(MethodView):
    @blp.arguments(EventArgsSchema, location="query")
    @blp.response(200, EventListSchema)
    @blp.alt_response(200, description="With stream=true: text/event-stream of events",
                      content_type="text/event-stream", success=True)
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """List a job's events, newest first; `stream=true` follows them live (SSE)."""
        job = jobs.get_job(services().store, principal(), job_id)
        if args["stream"]:
            return Response(stream_with_context(_sse(job["id"])), mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        events, has_more = repo.list_events(services().store, job["id"], args.get("after"), args["limit"])
        return list_body(events, has_more)


@blp.route("/<string:job_id>/checkpoints")
class JobCheckpoints(MethodView):
    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, CheckpointListSchema)
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """List a job's checkpoints, newest first."""
        job = jobs.get_job(services().store, principal(), job_id)
        checkpoints = repo.list_checkpoints(services().store, job["id"])
        if args.get("after"):
            ids = [c["id"] for c in checkpoints]
            checkpoints = checkpoints[ids.index(args["after"]) + 1:] if args["after"] in ids else []
        page = checkpoints[: args["limit"]]
        return list_body(page, len(checkpoints) > len(page))


@blp.route("/<string:job_id>/metrics")
class JobMetrics(MethodView):
    @blp.arguments(MetricsArgsSchema, location="query")
    @blp.response(200, MetricsSchema)
    @blp.alt_response(200, description="With format=csv: OpenAI's result-file columns",
                      content_type="text/csv", success=True)
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """Per-step training metrics (JSON, or CSV with `format=csv`)."""
        job = jobs.get_job(services().store, principal(), job_id)
        rows = repo.list_metrics(services().store, job["id"])
        if args["format"] == "csv":
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            return Response(out.getvalue(), mimetype="text/csv")
        return {"object": "list", "job_id": job["id"], "data": rows}

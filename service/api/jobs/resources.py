"""Fine-tuning job routes: create, list, retrieve, cancel, pause, resume, events, checkpoints, metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Response, jsonify, stream_with_context
from flask.views import MethodView

from service.api import examples
from service.api.base import Blueprint, CursorArgsSchema, list_body, principal, services
from service.api.idempotent import idempotent
from service.api.jobs.schemas import (
    CheckpointListSchema,
    EvaluationSchema,
    EventArgsSchema,
    EventListSchema,
    JobCreateSchema,
    JobListArgsSchema,
    JobListSchema,
    JobSchema,
    MetricsArgsSchema,
    MetricsSchema,
)
from service.core.evaluation import results as evaluation
from service.core.jobs import usecases as jobs
from service.core.jobs.usecases import JobsContext
from service.core.jobs.views import public_job

blp = Blueprint(
    "jobs",
    __name__,
    url_prefix="/v1/fine_tuning/jobs",
    description="Fine-tuning jobs (OpenAI Fine-tuning API plus extensions).",
)

IDEMPOTENCY_HEADER = [
    {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
    }
]
STREAM_POLL_S = 0.5
STREAM_MAX_S = 3600


def jobs_context() -> JobsContext:
    svc = services()
    return JobsContext(
        settings=svc.settings, store=svc.store, dispatcher=svc.dispatcher, backends=svc.backends
    )


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(JobCreateSchema, example=examples.JOB_CREATE)
    @blp.response(200, JobSchema, example=examples.JOB)
    @blp.doc(parameters=IDEMPOTENCY_HEADER)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a fine-tuning job."""
        return idempotent(
            {"route": "jobs.create", **body}, lambda: jobs.create_job(jobs_context(), principal(), body)
        )

    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(
        200,
        JobListSchema,
        example={
            "object": "list",
            "data": [examples.JOB],
            "has_more": False,
            "first_id": examples.JOB["id"],
            "last_id": examples.JOB["id"],
        },
    )
    def get(self, args: dict[str, Any]) -> Any:
        """List fine-tuning jobs, newest first (filters: status, provider, metadata[key]=value, tenant)."""
        found, has_more = jobs.list_jobs(
            services().store,
            principal(),
            args.get("after"),
            args["limit"],
            {
                "status": args.get("status"),
                "provider": args.get("provider"),
                "metadata": args.get("metadata"),
                "tenant": args.get("tenant"),
            },
        )
        return list_body(found, has_more)


@blp.route("/<string:job_id>")
class JobById(MethodView):
    @blp.response(200, JobSchema, example=examples.JOB)
    def get(self, job_id: str) -> Any:
        """Retrieve a fine-tuning job."""
        # The hottest read: public_job is already the documented shape, so it is sent as is
        # rather than dumped through JobSchema again (tests/api/test_jobs_api.py checks that the
        # dump would not change it).
        return jsonify(public_job(jobs.get_job(services().store, principal(), job_id)))


@blp.route("/<string:job_id>/cancel")
class JobCancel(MethodView):
    @blp.response(200, JobSchema, example={**examples.JOB, "status": "cancelled", "stage": "done"})
    def post(self, job_id: str) -> Any:
        """Cancel a job in any non-terminal stage."""
        return jobs.cancel_job(jobs_context(), principal(), job_id)


@blp.route("/<string:job_id>/pause")
class JobPause(MethodView):
    @blp.response(200, JobSchema, example={**examples.JOB, "status": "paused", "stage": "pausing"})
    def post(self, job_id: str) -> Any:
        """Pause a training job; it keeps its checkpoint and resumes from it (409 when not training)."""
        return jobs.pause_job(jobs_context(), principal(), job_id)


@blp.route("/<string:job_id>/resume")
class JobResume(MethodView):
    @blp.response(200, JobSchema, example={**examples.JOB, "status": "queued", "stage": "train_queued"})
    def post(self, job_id: str) -> Any:
        """Resume a paused job from where it paused (409 when it is not paused)."""
        return jobs.resume_job(jobs_context(), principal(), job_id)


def _sse(job_id: str) -> Iterator[str]:
    """Server-sent events: one per job event, a comment while waiting, ``done`` at the end."""
    for item in jobs.follow_events(services().store, job_id, STREAM_POLL_S, STREAM_MAX_S):
        if item.kind == "event":
            data = json.dumps(item.data, ensure_ascii=False)
            yield f"id: {item.data['id']}\nevent: {item.data['type']}\ndata: {data}\n\n"
        elif item.kind == "done":
            yield f"event: done\ndata: {json.dumps(item.data)}\n\n"
        else:
            yield ": keep-alive\n\n"


@blp.route("/<string:job_id>/events")
class JobEvents(MethodView):
    @blp.arguments(EventArgsSchema, location="query")
    @blp.response(200, EventListSchema, example=examples.EVENTS)
    @blp.alt_response(
        200,
        description="With stream=true: text/event-stream of events",
        content_type="text/event-stream",
        success=True,
    )
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """List a job's events, newest first; `stream=true` follows them live (SSE)."""
        if args["stream"]:
            job = jobs.get_job(services().store, principal(), job_id)
            return Response(
                stream_with_context(_sse(job["id"])),
                mimetype="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return list_body(
            *jobs.list_events(services().store, principal(), job_id, args.get("after"), args["limit"])
        )


@blp.route("/<string:job_id>/checkpoints")
class JobCheckpoints(MethodView):
    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, CheckpointListSchema, example=examples.CHECKPOINTS)
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """List a job's checkpoints, newest first."""
        return list_body(
            *jobs.list_checkpoints(services().store, principal(), job_id, args.get("after"), args["limit"])
        )


@blp.route("/<string:job_id>/metrics")
class JobMetrics(MethodView):
    @blp.arguments(MetricsArgsSchema, location="query")
    @blp.response(200, MetricsSchema, example=examples.METRICS)
    @blp.doc(
        responses={
            200: {
                "content": {
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": "step,train_loss,train_mean_token_accuracy,valid_loss,"
                        "valid_mean_token_accuracy,full_valid_loss,full_valid_mean_token_accuracy\n"
                        "1,2.1,0.41,,,,\n",
                    },
                    "image/png": {
                        "schema": {"type": "string", "format": "binary"},
                    },
                }
            }
        }
    )
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """Per-step training metrics (JSON, CSV with `format=csv`, loss-curve image with `format=png`).

        `format=csv` gives OpenAI's result-file columns; `format=png` draws train and valid loss by
        step, with token accuracy in a second panel.
        """
        if args["format"] == "csv":
            return Response(jobs.job_metrics_csv(services().store, principal(), job_id), mimetype="text/csv")
        if args["format"] == "png":
            return Response(jobs.job_metrics_png(services().store, principal(), job_id), mimetype="image/png")
        return {
            "object": "list",
            "job_id": job_id,
            "data": jobs.job_metrics(services().store, principal(), job_id),
        }


@blp.route("/<string:job_id>/evaluation")
class JobEvaluation(MethodView):
    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, EvaluationSchema, example=examples.EVALUATION)
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """Held-out evaluation: summary metrics and per-example answers next to the references."""
        return evaluation.job_evaluation(
            services().store, principal(), job_id, args.get("after"), args["limit"]
        )

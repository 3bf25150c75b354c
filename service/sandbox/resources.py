"""Sandbox routes: OpenAI's Files, Fine-tuning and completions shapes, served by Tuneline itself.

Auth is the sandbox's own key (``TUNELINE_SANDBOX_API_KEY``), not a Tuneline key. Fault
injection (every option and its bounds are defined once, in ``faults``): the ``sandbox`` object
on job create; for create itself the ``X-Sandbox-Fault`` header: ``create-500`` (nothing
created), ``create-429``, and ``create-timeout-after-create`` (the job is created, then the
answer is a 500); and account-wide faults (slow uploads) set with ``PUT /sandbox/v1/_faults``.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Response, request
from flask.views import MethodView

from service.api import base
from service.api.base import CursorArgsSchema, MetadataFilterArgsSchema, list_body, services
from service.api.files.schemas import FileListArgsSchema, FileUploadSchema
from service.api.openai_objects import CompletionSchema, OpenAIFileSchema
from service.api.streaming import completion_response
from service.api.uploads import spool_of
from service.core.errors import AuthenticationFailed
from service.sandbox.faults import Faults, SandboxAccountFaultsSchema, SandboxCreateHeadersSchema
from service.sandbox.schemas import (
    SandboxChatCompletionCreateSchema,
    SandboxCheckpointListSchema,
    SandboxCompletionCreateSchema,
    SandboxEventListSchema,
    SandboxFileListSchema,
    SandboxJobCreateSchema,
    SandboxJobListSchema,
    SandboxJobSchema,
    SandboxStatsSchema,
)
from service.sandbox.simulator import Sandbox

blp = base.Blueprint(
    "sandbox",
    __name__,
    url_prefix="/sandbox/v1",
    description="The sandbox provider: an OpenAI-compatible fine-tuning simulator (nothing is trained). "
    "Authenticate with `Authorization: Bearer <TUNELINE_SANDBOX_API_KEY>`, not a Tuneline key.",
)


@blp.before_request
def require_sandbox_key() -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _key_matches(token.strip(), services().settings.sandbox_api_key):
        raise AuthenticationFailed(
            "Incorrect API key provided for the Tuneline sandbox (use TUNELINE_SANDBOX_API_KEY).",
            code="invalid_api_key",
        )


def sandbox() -> Sandbox:
    svc = services()
    return Sandbox(svc.store, svc.settings.data_dir, svc.settings.sandbox_time_scale)


@blp.route("/files")
class SandboxFiles(MethodView):
    @blp.arguments(FileUploadSchema, location="multipart")
    @blp.response(200, OpenAIFileSchema)
    def post(self, form: dict[str, Any]) -> Any:
        """Sandbox: upload a file."""
        storage = form["file"]
        return sandbox().create_file(spool_of(storage), storage.filename or "", form["purpose"])

    @blp.arguments(FileListArgsSchema, location="query")
    @blp.response(200, SandboxFileListSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Sandbox: list files, newest first."""
        return list_body(*sandbox().list_files(args.get("after"), args["limit"], args.get("purpose")))


@blp.route("/files/<string:file_id>")
class SandboxFileById(MethodView):
    @blp.response(200, OpenAIFileSchema)
    def get(self, file_id: str) -> Any:
        """Sandbox: retrieve a file."""
        return sandbox().get_file(file_id)


@blp.route("/files/<string:file_id>/content")
class SandboxFileContent(MethodView):
    @blp.response(200, {"type": "string", "format": "binary"}, content_type="application/octet-stream")
    def get(self, file_id: str) -> Any:
        """Sandbox: download a file's bytes (result files: OpenAI's metrics CSV)."""
        return Response(sandbox().file_content(file_id), mimetype="application/octet-stream")


@blp.route("/fine_tuning/jobs")
class SandboxJobs(MethodView):
    @blp.arguments(SandboxJobCreateSchema)
    @blp.arguments(SandboxCreateHeadersSchema, location="headers")
    @blp.response(200, SandboxJobSchema)
    def post(self, body: dict[str, Any], headers: dict[str, Any]) -> Any:
        """Sandbox: create a simulated fine-tuning job."""
        faults = Faults.from_loaded(body.pop("sandbox", None))
        return sandbox().create_job(body, faults, headers.get("fault"))

    @blp.arguments(MetadataFilterArgsSchema, location="query")
    @blp.response(200, SandboxJobListSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Sandbox: list jobs, newest first; `metadata[key]=value` filters."""
        return list_body(*sandbox().list_jobs(args.get("after"), args["limit"], args.get("metadata")))


@blp.route("/fine_tuning/jobs/<string:job_id>")
class SandboxJobById(MethodView):
    @blp.response(200, SandboxJobSchema)
    def get(self, job_id: str) -> Any:
        """Sandbox: retrieve a job (its stage advances with time)."""
        return sandbox().get_job(job_id)


@blp.route("/fine_tuning/jobs/<string:job_id>/cancel")
class SandboxJobCancel(MethodView):
    @blp.response(200, SandboxJobSchema)
    def post(self, job_id: str) -> Any:
        """Sandbox: cancel a job that has not ended."""
        return sandbox().cancel_job(job_id)


@blp.route("/fine_tuning/jobs/<string:job_id>/pause")
class SandboxJobPause(MethodView):
    @blp.response(200, SandboxJobSchema)
    def post(self, job_id: str) -> Any:
        """Sandbox: pause a running job (its timeline stops until it is resumed)."""
        return sandbox().pause_job(job_id)


@blp.route("/fine_tuning/jobs/<string:job_id>/resume")
class SandboxJobResume(MethodView):
    @blp.response(200, SandboxJobSchema)
    def post(self, job_id: str) -> Any:
        """Sandbox: resume a paused job."""
        return sandbox().resume_job(job_id)


@blp.route("/fine_tuning/jobs/<string:job_id>/events")
class SandboxJobEvents(MethodView):
    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, SandboxEventListSchema)
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """Sandbox: a job's events, newest first."""
        return list_body(*sandbox().list_events(job_id, args.get("after"), args["limit"]))


@blp.route("/fine_tuning/jobs/<string:job_id>/checkpoints")
class SandboxJobCheckpoints(MethodView):
    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, SandboxCheckpointListSchema)
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """Sandbox: a job's checkpoints, newest first."""
        return list_body(*sandbox().list_checkpoints(job_id, args.get("after"), args["limit"]))


@blp.route("/chat/completions")
class SandboxChatCompletions(MethodView):
    @blp.arguments(SandboxChatCompletionCreateSchema)
    @blp.response(200, CompletionSchema)
    @blp.alt_response(
        200, description="With stream=true: chunks as SSE", content_type="text/event-stream", success=True
    )
    def post(self, body: dict[str, Any]) -> Any:
        """Sandbox: a chat answer from a sandbox-trained model (its training answer, else canned)."""
        answer = sandbox().chat_completion(
            body["model"], body["messages"], body.get("max_tokens"), _stop(body)
        )
        return completion_response(answer, body)


@blp.route("/completions")
class SandboxCompletions(MethodView):
    @blp.arguments(SandboxCompletionCreateSchema)
    @blp.response(200, CompletionSchema)
    @blp.alt_response(
        200, description="With stream=true: chunks as SSE", content_type="text/event-stream", success=True
    )
    def post(self, body: dict[str, Any]) -> Any:
        """Sandbox: a completion from a sandbox-trained model (its training answer, else canned)."""
        answer = sandbox().completion(body["model"], body["prompt"], body.get("max_tokens"), _stop(body))
        return completion_response(answer, body)


def _stop(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    items = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return [s for s in items if isinstance(s, str)] or None


@blp.route("/_stats")
class SandboxStats(MethodView):
    @blp.response(200, SandboxStatsSchema)
    def get(self) -> Any:
        """Sandbox: create counters (tests prove exactly-once) and requests held open by slowness."""
        return sandbox().stats()


@blp.route("/_faults")
class SandboxAccountFaults(MethodView):
    @blp.response(200, SandboxAccountFaultsSchema)
    def get(self) -> Any:
        """Sandbox: the account-wide fault injection in force."""
        return sandbox().account_faults()

    @blp.arguments(SandboxAccountFaultsSchema)
    @blp.response(200, SandboxAccountFaultsSchema)
    def put(self, body: dict[str, Any]) -> Any:
        """Sandbox: set account-wide fault injection (e.g. slow uploads); replaces what was set."""
        return sandbox().set_account_faults(body["upload_slow_ms"])


def _key_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of the sandbox key."""
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())

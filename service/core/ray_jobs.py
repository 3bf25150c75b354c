"""Training runs on a Ray cluster through Ray's Jobs API: submission ids, submit or re-attach,
follow (status and protocol messages), stop, and Ray's job states in Tuneline's terms (DESIGN §13).

A run is ``python -m service.training.ray_train --spec SPEC.json ...`` as a Ray job. Its driver
prints the training protocol (docs/local-trainer.md) to the job's log, each line behind
``PROTOCOL_MARK``, among whatever Ray itself logs there; ``RayRun.poll`` reads the log from an
offset and returns the new messages. Nothing here imports torch, and ``ray`` only when a client
is made (the ``ray`` extra), so the API process can import this module.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_MARK = "@tuneline "  # starts every protocol line in the driver's output
ENTRY_MODULE = "service.training.ray_train"
RAY_EXTRA_MISSING = "the ray extra is not installed on this worker: pip install 'tuneline[ray]'"

# Ray's job states (ray.job_submission.JobStatus values) -> Tuneline's job statuses (DESIGN §5).
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUS_OF_RAY = {
    "PENDING": QUEUED,  # the driver is not running yet: no node can host it now
    "RUNNING": RUNNING,  # ... but queued until the workers have started (see ``RayRun.poll``)
    "STOPPED": CANCELLED,
    "SUCCEEDED": SUCCEEDED,
    "FAILED": FAILED,
}
TERMINAL_RAY = frozenset({"STOPPED", "SUCCEEDED", "FAILED"})

# Error codes (snake_case, as the training protocol's).
RAY_UNREACHABLE = "ray_unreachable"
RAY_UNAVAILABLE = "ray_unavailable"  # the extra is missing on this worker
RAY_REQUEST_FAILED = "ray_request_failed"
TRAINING_FAILED = "training_failed"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class RayJobsError(Exception):
    """The Ray cluster could not be used; ``code`` is a stable word, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def submission_id(job_id: str, attempt: int) -> str:
    """The Ray submission id of attempt ``attempt`` of a Tuneline job: the same job and attempt
    always give the same id, so a duplicated or retried submit finds the run it started."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    return f"tuneline-{_UNSAFE.sub('_', job_id)}-{attempt}"


@dataclass(frozen=True)
class RayCompute:
    """What a run asks of the cluster: ``compute {num_workers, gpus_per_worker}`` of the job plus
    the operator's settings (storage every node reads, restarts, the cluster's interpreter)."""

    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    storage: str = ""  # Ray Train's storage_path: a shared directory or an object-store URL
    max_failures: int = 2  # lost-worker restarts, each from the last reported checkpoint
    python: str = "python"  # the interpreter on the cluster's nodes
    resource_wait_s: float = 600.0  # how long a cluster too small for the run may take to grow

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise ValueError("gpus_per_worker and cpus_per_worker must be >= 0")
        if not self.storage:
            raise ValueError("storage (TUNELINE_RAY_STORAGE) is required: a path every Ray node reads")


def entrypoint(spec_path: str, compute: RayCompute) -> str:
    """The shell command the Ray job runs (the spec is the process executor's SPEC.json)."""
    return shlex.join(
        [
            compute.python,
            "-m",
            ENTRY_MODULE,
            "--spec",
            spec_path,
            "--num-workers",
            str(compute.num_workers),
            "--gpus-per-worker",
            f"{compute.gpus_per_worker:g}",
            "--cpus-per-worker",
            f"{compute.cpus_per_worker:g}",
            "--storage",
            compute.storage,
            "--max-failures",
            str(compute.max_failures),
            "--resource-wait-s",
            f"{compute.resource_wait_s:g}",
        ]
    )


def parse_protocol(text: str) -> tuple[list[dict[str, Any]], int]:
    """Protocol messages in ``text`` (a piece of the job log) and how many characters of it were
    consumed: complete lines only, so a line still being written is read on the next poll."""
    messages: list[dict[str, Any]] = []
    end = text.rfind("\n") + 1
    for line in text[:end].splitlines():
        if not line.startswith(PROTOCOL_MARK):
            continue  # Ray's own log lines and the workers' forwarded output
        try:
            message = json.loads(line[len(PROTOCOL_MARK) :])
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("type"), str):
            messages.append(message)
    return messages, end


@dataclass(frozen=True)
class RayJob:
    """What the Jobs API says about one submission."""

    submission_id: str
    ray_status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str  # Ray's own explanation (e.g. why it is pending, why it failed)
    metadata: Mapping[str, str] = field(default_factory=dict)


class RayJobs:
    """The Jobs API client side: one cluster, reached at its dashboard URL (``TUNELINE_RAY_ADDRESS``).

    ``client_factory`` builds the SDK client (default: ``ray.job_submission.JobSubmissionClient``);
    constructing it checks that the cluster answers.
    """

    def __init__(self, address: str, client_factory: Callable[[str], Any] | None = None) -> None:
        if not address:
            raise RayJobsError(RAY_UNREACHABLE, "no Ray cluster is configured: set TUNELINE_RAY_ADDRESS")
        self.address = address
        if client_factory is None:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError:
                raise RayJobsError(RAY_UNAVAILABLE, RAY_EXTRA_MISSING) from None
            client_factory = JobSubmissionClient
        try:
            self._client = client_factory(address)
        except Exception as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> RayJobsError:
        """One place that turns the SDK's exceptions into Tuneline's."""
        text = str(exc)
        if (
            isinstance(exc, ConnectionError)
            or "Failed to connect" in text
            or "Connection" in type(exc).__name__
        ):
            return RayJobsError(
                RAY_UNREACHABLE,
                f"cannot reach the Ray cluster at {self.address} (TUNELINE_RAY_ADDRESS): {text}",
            )
        return RayJobsError(RAY_REQUEST_FAILED, f"the Ray Jobs API at {self.address} refused: {text}"[:2000])

    def get(self, sid: str) -> RayJob | None:
        """The submission, or None when the cluster has none with this id."""
        try:
            info = self._client.get_job_info(sid)
        except Exception as exc:
            if "status code 404" in str(exc):
                return None
            raise self._error(exc) from None
        status = getattr(info.status, "value", str(info.status))
        return RayJob(sid, str(status), str(info.message or ""), dict(info.metadata or {}))

    def submit(
        self,
        sid: str,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[RayJob, bool]:
        """Start ``command`` as submission ``sid``, or re-attach to it when it exists already
        (look before create, and a lost race is detected by Ray's own uniqueness check).
        Returns the job and whether this call started it."""
        existing = self.get(sid)
        if existing is not None:
            return existing, False
        try:
            self._client.submit_job(
                entrypoint=command,
                submission_id=sid,
                runtime_env={"env_vars": dict(env or {})},
                metadata=dict(metadata or {}),
                entrypoint_num_cpus=0,  # the driver only relays; the workers hold the resources
            )
        except Exception as exc:
            if "already exists" not in str(exc):
                raise self._error(exc) from None
            created = False
        else:
            created = True
        job = self.get(sid)
        if job is None:
            raise RayJobsError(RAY_REQUEST_FAILED, f"Ray accepted submission {sid} but does not know it")
        return job, created

    def stop(self, sid: str) -> bool:
        """Ask Ray to stop the submission (SIGTERM to its driver, whose workers go with it);
        False when it had already ended."""
        try:
            return bool(self._client.stop_job(sid))
        except Exception as exc:
            raise self._error(exc) from None

    def logs(self, sid: str) -> str:
        try:
            return str(self._client.get_job_logs(sid))
        except Exception as exc:
            raise self._error(exc) from None


@dataclass
class Progress:
    """One look at a run: Tuneline's status for it, why, and the protocol messages that are new."""

    ray_status: str
    status: str
    reason: str
    messages: list[dict[str, Any]]
    error: dict[str, str] | None = None  # {code, message} once the run has failed


@dataclass
class RayRun:
    """Follows one submission: ``poll`` returns its state and the messages since the last poll.

    ``offset`` (characters of the log already read) can be kept by the caller so that a follower
    on another Tuneline worker continues where this one stopped instead of replaying the run.
    """

    jobs: RayJobs
    submission_id: str
    offset: int = 0
    started: bool = False
    waiting_reason: str = ""
    finished: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def poll(self) -> Progress:
        # Status first, then the log: a job seen as ended has written all of its lines.
        job = self.jobs.get(self.submission_id)
        if job is None:
            raise RayJobsError(RAY_REQUEST_FAILED, f"the Ray cluster has no submission {self.submission_id}")
        messages: list[dict[str, Any]] = []
        if job.ray_status != "PENDING":
            text = self.jobs.logs(self.submission_id)
            messages, consumed = parse_protocol(text[self.offset :])
            self.offset += consumed
        for message in messages:
            self._note(message)
        status, reason = self.status_for(job)
        return Progress(job.ray_status, status, reason, messages, self.error if status == FAILED else None)

    def _note(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "started":
            self.started = True
        elif kind == "waiting":
            self.waiting_reason = str(message.get("reason") or "")
        elif kind == "finished":
            self.finished = message
        elif kind == "error":
            self.error = {
                "code": str(message.get("code") or TRAINING_FAILED),
                "message": str(message.get("message") or "training failed"),
            }

    def status_for(self, job: RayJob) -> tuple[str, str]:
        """Tuneline's status for the submission's Ray state, given what the run has said so far,
        and the reason (Ray's message, the driver's ``waiting`` reason, or the error)."""
        status = STATUS_OF_RAY.get(job.ray_status)
        if status is None:
            return QUEUED, f"Ray reports an unknown job state {job.ray_status!r}"
        if status == QUEUED:
            return QUEUED, job.message or "the Ray job is waiting for the cluster"
        if status == RUNNING and not self.started:
            return QUEUED, self.waiting_reason or "the Ray job is starting its training workers"
        if status == SUCCEEDED and self.finished is None:
            self.error = self.error or {
                "code": TRAINING_FAILED,
                "message": f"the Ray job {self.submission_id} ended without reporting a finished run",
            }
            return FAILED, self.error["message"]
        if status == FAILED:
            self.error = self.error or {
                "code": TRAINING_FAILED,
                "message": f"the Ray job {self.submission_id} failed: {job.message}"[:2000],
            }
            return FAILED, self.error["message"]
        return status, job.message

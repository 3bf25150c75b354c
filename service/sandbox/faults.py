"""Fault injection options: the one definition of their fields and bounds, and their parsed form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import marshmallow as ma

from service.fields import StrictInt, StrictNumber

# Base durations in seconds; every one is multiplied by the time scale (tests use 0.02).
VALIDATING_S = 2.0
QUEUED_S = 2.0
STEP_S = 1.0
DEFAULT_STEPS = 10
MAX_STEPS = 1000
MAX_SLOW_MS = 10_000
MAX_RETRY_AFTER_S = 3600
FAIL_STAGES = ("validating_files", "queued", "running")
# Header faults for create, account-wide: the caller opts in per request.
CREATE_HEADER_FAULTS = ("create-500", "create-429", "create-timeout-after-create")
FAULT_HEADER = "X-Sandbox-Fault"


_NON_NEGATIVE = ma.validate.Range(min=0)
_SLOW_MS = ma.validate.Range(min=0, max=MAX_SLOW_MS)


class _ErrorSpecSchema(ma.Schema):
    code = ma.fields.String()
    message = ma.fields.String()


class _RateLimitSchema(ma.Schema):
    count = StrictInt(required=True, validate=_NON_NEGATIVE)
    retry_after = StrictNumber(load_default=1.0, validate=ma.validate.Range(min=0, max=MAX_RETRY_AFTER_S))


class _CreateFaultSchema(ma.Schema):
    when = ma.fields.String(load_default="after", validate=ma.validate.OneOf(["before", "after"]))
    count = StrictInt(load_default=1, validate=_NON_NEGATIVE)


class SandboxFaultsSchema(ma.Schema):
    """Fault injection for one sandbox job (Tuneline extension; ignored by real providers)."""

    fail_at = ma.fields.String(
        validate=ma.validate.OneOf(FAIL_STAGES),
        metadata={"description": "End the job `failed` at this stage, with `error`."},
    )
    error = ma.fields.Nested(_ErrorSpecSchema, metadata={"description": "The job's `error` when it fails."})
    rate_limit = ma.fields.Nested(
        _RateLimitSchema,
        metadata={
            "description": "The next `count` reads of the job answer 429 with `Retry-After: retry_after`."
        },
    )
    server_errors = StrictInt(
        validate=_NON_NEGATIVE,
        metadata={"description": "The next N reads of the job (after any 429s) answer 500."},
    )
    slow_ms = StrictInt(
        validate=_SLOW_MS,
        metadata={
            "description": "Every call about the job (create, retrieve, events, checkpoints, its result "
            f"file's content) sleeps this long first (at most {MAX_SLOW_MS} ms); "
            "`_stats.slow_in_flight` counts the calls held open."
        },
    )
    result_base64 = ma.fields.Boolean(
        metadata={"description": "Serve the result file base64-wrapped, as OpenAI does."}
    )
    steps = StrictInt(
        validate=ma.validate.Range(min=1, max=MAX_STEPS),
        metadata={"description": f"Training steps (default {DEFAULT_STEPS})."},
    )
    validating_s = StrictNumber(
        validate=_NON_NEGATIVE,
        metadata={"description": "Base seconds in validating_files (default 2), times the time scale."},
    )
    queued_s = StrictNumber(
        validate=_NON_NEGATIVE,
        metadata={"description": "Base seconds in queued (default 2), times the time scale."},
    )
    step_s = StrictNumber(
        validate=_NON_NEGATIVE,
        metadata={"description": "Base seconds per step (default 1), times the time scale."},
    )
    create_fault = ma.fields.Nested(
        _CreateFaultSchema,
        metadata={
            "description": "The first `count` creates for this `metadata.tuneline_job_id` answer 500, "
            "`before` or `after` the job is created (after = an ambiguous failure)."
        },
    )


class SandboxAccountFaultsSchema(ma.Schema):
    object = ma.fields.Constant("sandbox.faults", dump_only=True)
    upload_slow_ms = StrictInt(
        validate=_SLOW_MS,
        load_default=0,
        metadata={
            "description": f"Every file upload sleeps this long first (at most {MAX_SLOW_MS} ms); "
            "0 turns it off."
        },
    )


class SandboxCreateHeadersSchema(ma.Schema):
    """The create route's fault header (other headers pass by)."""

    class Meta:
        unknown = ma.EXCLUDE

    fault = ma.fields.String(
        data_key=FAULT_HEADER,
        validate=ma.validate.OneOf(CREATE_HEADER_FAULTS),
        metadata={
            "description": "Inject a create failure: `create-500` (nothing created), `create-429`, "
            "`create-timeout-after-create` (the job is created, then 500)."
        },
    )


@dataclass(frozen=True)
class Faults:
    """A job's fault options once ``SandboxFaultsSchema`` accepted them (stored with the job)."""

    fail_at: str | None = None
    error: dict[str, str] | None = None
    rate_limit_count: int = 0
    retry_after: float = 1.0
    server_errors: int = 0
    slow_ms: int = 0
    result_base64: bool = False
    steps: int = DEFAULT_STEPS
    validating_s: float = VALIDATING_S
    queued_s: float = QUEUED_S
    step_s: float = STEP_S
    create_fault: dict[str, Any] | None = None

    @classmethod
    def from_loaded(cls, loaded: Mapping[str, Any] | None) -> Faults:
        """The options of a body the schema loaded; what was not given keeps its default."""
        given = dict(loaded or {})
        rate = given.pop("rate_limit", None) or {}
        if "error" in given:
            given["error"] = dict(given["error"])
        if "create_fault" in given:
            given["create_fault"] = dict(given["create_fault"])
        return cls(
            **given,
            rate_limit_count=rate.get("count", 0),
            retry_after=rate.get("retry_after", 1.0),
        )

    @classmethod
    def load(cls, raw: Mapping[str, Any] | None) -> Faults:
        """Validate raw options with the schema (raises ``marshmallow.ValidationError``), then parse."""
        return cls.from_loaded(SandboxFaultsSchema().load(raw or {}))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

"""Every Redis key name Tuneline uses, and nothing else (STYLE rule 3)."""

from __future__ import annotations

PREFIX = "tl"
ALL_TENANTS = "*all"  # the every-tenant scope of indexes and counters (not a valid tenant name)


def api_key(key_id: str) -> str:
    return f"{PREFIX}:apikey:{key_id}"


def api_keys_index() -> str:
    return f"{PREFIX}:apikeys"


def tenants() -> str:
    return f"{PREFIX}:tenants"


def file(file_id: str) -> str:
    return f"{PREFIX}:file:{file_id}"


def files_by_tenant(tenant: str) -> str:
    return f"{PREFIX}:files:{tenant}"


def files_all() -> str:
    return f"{PREFIX}:files:{ALL_TENANTS}"


def file_report(file_id: str) -> str:
    return f"{PREFIX}:file:{file_id}:report"


def idempotency(tenant: str, key_digest: str) -> str:
    return f"{PREFIX}:idem:{tenant}:{key_digest}"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def jobs_by_tenant(tenant: str) -> str:
    return f"{PREFIX}:jobs:{tenant}"


def jobs_all() -> str:
    return f"{PREFIX}:jobs:{ALL_TENANTS}"


def job_events(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:events"


def job_checkpoints(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:checkpoints"


def job_metrics(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:metrics"


def job_lock(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:lock"


def job_attempts(job_id: str, stage: str) -> str:
    return f"{PREFIX}:job:{job_id}:attempts:{stage}"


def stats_counts(scope: str) -> str:
    """Hash of job counts (``total``, ``status:<s>``, ``stage:<s>``, ``provider:<p>``) for a scope."""
    return f"{PREFIX}:stats:{scope}:counts"


def stats_active(scope: str, stage: str) -> str:
    """Sorted set of a scope's non-terminal jobs in ``stage``, scored by creation time."""
    return f"{PREFIX}:stats:{scope}:active:{stage}"


def stats_failures(scope: str) -> str:
    """Capped list of a scope's most recent failures, newest first."""
    return f"{PREFIX}:stats:{scope}:failures"


def broker_queue(queue: str) -> str:
    """The list kombu's Redis transport keeps a Celery queue in (named after the queue)."""
    return queue


def poll_due() -> str:
    return f"{PREFIX}:poll:due"


def provider_files(provider_account: str) -> str:
    return f"{PREFIX}:provider_files:{provider_account}"


def provider_rate(provider_account: str) -> str:
    """GCRA state of a provider account's poll budget: its theoretical arrival time (DESIGN §5)."""
    return f"{PREFIX}:provider_rate:{provider_account}"


def webhook_secret(tenant: str) -> str:
    return f"{PREFIX}:whsecret:{tenant}"


def webhook_outbox() -> str:
    return f"{PREFIX}:webhook:due"


def webhook_delivery(delivery_id: str) -> str:
    return f"{PREFIX}:delivery:{delivery_id}"


def job_deliveries(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:deliveries"


def webhook_disabled(tenant: str) -> str:
    return f"{PREFIX}:webhook:disabled:{tenant}"


def sandbox_job(job_id: str) -> str:
    return f"{PREFIX}:sandbox:job:{job_id}"


def sandbox_jobs() -> str:
    return f"{PREFIX}:sandbox:jobs"


def sandbox_file(file_id: str) -> str:
    return f"{PREFIX}:sandbox:file:{file_id}"


def sandbox_files() -> str:
    return f"{PREFIX}:sandbox:files"


def sandbox_counter(name: str) -> str:
    return f"{PREFIX}:sandbox:count:{name}"


def sandbox_read_fault(job_id: str, kind: str) -> str:
    """Remaining injected read failures (``rate_limit`` or ``server_errors``) of a sandbox job."""
    return f"{PREFIX}:sandbox:job:{job_id}:fault:{kind}"


def sandbox_slow_in_flight() -> str:
    """Hash: sandbox operation -> requests now held open by injected slowness."""
    return f"{PREFIX}:sandbox:slow_in_flight"


def sandbox_account_faults() -> str:
    """JSON: fault injection for the whole sandbox account (e.g. slow uploads)."""
    return f"{PREFIX}:sandbox:account_faults"


def sandbox_creates_by_tuneline_job() -> str:
    """Hash: Tuneline job id -> sandbox jobs created for it (tests prove exactly-once)."""
    return f"{PREFIX}:sandbox:creates_by_tuneline_job"


def sandbox_job_reads() -> str:
    """Capped list of the times the sandbox answered a job retrieve (tests check poll rates)."""
    return f"{PREFIX}:sandbox:job_reads"


def sandbox_create_attempts() -> str:
    """Hash: Tuneline job id -> create calls seen, created or not (drives ``create_fault``)."""
    return f"{PREFIX}:sandbox:create_attempts"


def job_stage_lease(job_id: str, stage: str) -> str:
    """A live worker's lease on a long stage (evaluation): the watchdog's re-enqueue backs off."""
    return f"{PREFIX}:job:{job_id}:lease:{stage}"


def job_eval_rows(job_id: str, target: str) -> str:
    """Hash: test example index -> evaluated row; ``target`` is ``model`` or ``base`` (baseline)."""
    return f"{PREFIX}:job:{job_id}:eval:{target}"


def experiment(experiment_id: str) -> str:
    return f"{PREFIX}:experiment:{experiment_id}"


def experiments_by_tenant(tenant: str) -> str:
    return f"{PREFIX}:experiments:{tenant}"


# --- local trainer: leases, device locks, inference requests ---------------------------------


def train_lease(job_id: str) -> str:
    """The token of the worker currently training a local job (expires unless refreshed)."""
    return f"{PREFIX}:train:lease:{job_id}"


def train_waiting(job_id: str) -> str:
    """Set (with a TTL) while a train task for the job waits for a busy device."""
    return f"{PREFIX}:train:waiting:{job_id}"


def train_leases() -> str:
    """Sorted set: local job id -> lease expiry (epoch seconds), scanned by beat's reaper."""
    return f"{PREFIX}:train:leases"


def train_device(device_id: str) -> str:
    """One training job per device: the lease token of the job holding it."""
    return f"{PREFIX}:train:device:{device_id}"


def infer_request(request_id: str) -> str:
    """A pending completion request's body (expires with the caller's wait)."""
    return f"{PREFIX}:infer:req:{request_id}"


def infer_result(request_id: str) -> str:
    """List the inference worker pushes its one answer onto (the caller BLPOPs it)."""
    return f"{PREFIX}:infer:res:{request_id}"

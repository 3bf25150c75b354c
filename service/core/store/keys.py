"""Every Redis key name Tuneline uses, and nothing else (STYLE rule 3); the sandbox's are its own."""

# The sandbox simulator is a separate product: its keys (under ``tl:sandbox``) are named in
# ``service.sandbox.store``, so that the domain knows nothing of it.

from __future__ import annotations

PREFIX = "tl"
ALL_TENANTS = "*all"  # the every-tenant scope of indexes and counters (not a valid tenant name)


def api_key(key_id: str) -> str:
    return f"{api_key_prefix()}{key_id}"


def api_key_prefix() -> str:
    return f"{PREFIX}:apikey:"


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


def files_preparing() -> str:
    """Sorted set: file id -> when its preparation is due to be looked at (its watchdog)."""
    return f"{PREFIX}:files:preparing"


def file_prepare_attempts(file_id: str) -> str:
    return f"{PREFIX}:file:{file_id}:prepare_attempts"


def idempotency(tenant: str, key_digest: str) -> str:
    return f"{PREFIX}:idem:{tenant}:{key_digest}"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_prefix() -> str:
    """Every key of every job (its record, events, checkpoints, ...) starts with this."""
    return f"{PREFIX}:job:"


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


def job_stage_lease(job_id: str, stage: str) -> str:
    """A live worker's lease on a long stage (evaluation): the watchdog's re-enqueue backs off."""
    return f"{PREFIX}:job:{job_id}:lease:{stage}"


def job_eval_rows(job_id: str, target: str) -> str:
    """Hash: test example index -> evaluated row; ``target`` is ``model`` or ``base`` (baseline)."""
    return f"{PREFIX}:job:{job_id}:eval:{target}"


def import_(import_id: str) -> str:
    """An import of a provider account's history (DESIGN §15): its record, progress and cursor."""
    return f"{PREFIX}:import:{import_id}"


def imports_by_tenant(tenant: str) -> str:
    return f"{PREFIX}:imports:{tenant}"


def imports_all() -> str:
    return f"{PREFIX}:imports:{ALL_TENANTS}"


def import_secret(import_id: str) -> str:
    """The account key sent with an import, Fernet-encrypted; deleted when the import ends."""
    return f"{PREFIX}:import:{import_id}:secret"


def import_lock(import_id: str) -> str:
    """The token of the worker running an import's step (a redelivered twin waits for it)."""
    return f"{PREFIX}:import:{import_id}:lock"


def distill_rows(import_id: str, job_id: str) -> str:
    """The original model's answers of one imported job's distillation, by example index."""
    return f"{PREFIX}:import:{import_id}:distill:{job_id}"


def imported_models(tenant: str) -> str:
    """Fine-tuned model name -> the imported job that made it (a provider's model name does not
    hold the Tuneline job id the way Tuneline's own names do)."""
    return f"{PREFIX}:imported_models:{tenant}"


def imported_files(tenant: str) -> str:
    """Hash: ``<account>|<provider file id>`` -> the tenant's file holding those bytes."""
    return f"{PREFIX}:imported_files:{tenant}"


def experiment(experiment_id: str) -> str:
    return f"{PREFIX}:experiment:{experiment_id}"


def experiments_by_tenant(tenant: str) -> str:
    return f"{PREFIX}:experiments:{tenant}"


# --- local trainer: leases, device locks, inference requests ---------------------------------


def train_lease(job_id: str) -> str:
    """The token of the worker currently training a local job (expires unless refreshed)."""
    return f"{PREFIX}:train:lease:{job_id}"


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
    """List the inference worker pushes its answer onto (the caller BLPOPs it): one message, or
    for a streamed request its chunks (``{"delta": ...}``) then a final one."""
    return f"{PREFIX}:infer:res:{request_id}"


def export_building(job_id: str, name: str) -> str:
    """Set (with a TTL) while one export of a job's model is being built: it is built once."""
    return f"{PREFIX}:export:building:{job_id}:{name}"


def export_failed(job_id: str, name: str) -> str:
    """Why the last build of an export failed (expires; a later request tries again)."""
    return f"{PREFIX}:export:failed:{job_id}:{name}"


# --- the train wait queue (store/train_queue.py) ----------------------------------------------


def train_queue_waiting() -> str:
    """Sorted set: every waiting local job id -> its order score (priority, then arrival)."""
    return f"{PREFIX}:trainq:waiting"


def train_waiting_by_tenant(tenant: str) -> str:
    """Sorted set: one tenant's waiting local job ids -> the same order score."""
    return f"{PREFIX}:trainq:waiting:{tenant}"


def train_waiting_tenants() -> str:
    """Sorted set: tenant with waiting jobs -> the serve ticket of its last claim (round-robin)."""
    return f"{PREFIX}:trainq:tenants"


def train_queue_jobs() -> str:
    """Hash: a queued or training job id -> its tenant (for release and remove)."""
    return f"{PREFIX}:trainq:jobs"


def train_running(tenant: str) -> str:
    """Set: the tenant's jobs that hold a training slot (claimed and not yet released)."""
    return f"{PREFIX}:trainq:running:{tenant}"


def train_queue_seq() -> str:
    """Counter: arrival order of pushes and serve tickets of claims."""
    return f"{PREFIX}:trainq:seq"


def train_queue_served() -> str:
    """Hash: tenant -> the serve ticket of its last claim (kept while its queue is empty)."""
    return f"{PREFIX}:trainq:served"


def train_wake() -> str:
    """Set (with a TTL) when beat last sent the trainers a wake-up: at most one per interval."""
    return f"{PREFIX}:trainq:wake"

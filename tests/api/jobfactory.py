"""Small factories for API tests: a job record as the pipeline leaves it, stored in real Redis."""

from __future__ import annotations

import time
from typing import Any

from service.core import ids
from service.core.jobs.naming import fine_tuned_model_name
from service.core.store import Store
from service.core.store import jobs as repo


def finished_job(store: Store, tenant: str, provider: str = "sandbox", **fields: Any) -> dict[str, Any]:
    """A succeeded job with a fine-tuned model, as finalize leaves it."""
    job_id = ids.new_id("job")
    now = time.time()
    job = {
        "id": job_id,
        "tenant": tenant,
        "created_at": int(now) - 60,
        "updated_at": int(now),
        "finished_at": int(now),
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-x",
        "validation_file": None,
        "test_file": None,
        "hyperparameters": {},
        "method": None,
        "suffix": None,
        "seed": None,
        "metadata": None,
        "provider": provider,
        "provider_fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:sandbox::abc",
        "status": "succeeded",
        "stage": "done",
        "fine_tuned_model": fine_tuned_model_name("gpt-4o-mini-2024-07-18", tenant, None, job_id),
        "result_files": [],
        "event_count": 0,
        **fields,
    }
    repo.insert(store, job, now * 1000)
    return job

"""What a remote provider is told: the seed the job answers and its W&B integration.

The real remote backend submits to the sandbox over HTTP (a live server of the app, the official
SDK as the client); the provider's own job is then read back through the same SDK.
"""

from __future__ import annotations

import time

import openai

from service.core import tasknames
from service.core.clock import ManualClock
from service.core.jobs import record
from service.core.jobs.views import public_job
from service.core.store import jobs as repo
from tests.core.jobs.fakes import new_job, run_task, stage_context
from tests.core.jobs.test_account_polls import sandbox_backends, sandbox_url  # noqa: F401 - fixture

WANDB = {"type": "wandb", "wandb": {"project": "funds", "name": "qa-run", "tags": ["qa"]}}


def test_the_provider_trains_with_the_seed_and_integrations_the_job_answers(settings, store, sandbox_url):  # noqa: F811
    backends = sandbox_backends(settings, store, sandbox_url)
    ctx = stage_context(settings, store, backends, ManualClock(time.time()))
    job_id = new_job(settings, store, backends, "sandbox", integrations=[WANDB])
    task: str | None = tasknames.JOB_PREPARE
    while task:
        task = run_task(ctx, task, job_id)
    job = record.load(store, job_id)
    assert job is not None and job.provider_job_id, job
    answered = public_job(repo.load(store, job_id) or {})
    sdk = openai.OpenAI(base_url=sandbox_url, api_key=settings.sandbox_api_key, max_retries=0, timeout=30)
    remote = sdk.fine_tuning.jobs.retrieve(job.provider_job_id)
    assert isinstance(answered["seed"], int) and remote.seed == answered["seed"]
    assert [i.model_dump(exclude_none=True) for i in remote.integrations or []] == [WANDB]
    assert answered["integrations"] == [WANDB]

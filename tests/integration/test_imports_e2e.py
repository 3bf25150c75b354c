"""Imports end to end: a sandbox account (the OpenAI stand-in, read over HTTP through the official
SDK) with finished jobs, events, checkpoints and result files is copied into another tenant via
``POST /v1/imports``; files are deduplicated, a second import adds nothing, the account key never
shows up in responses, Redis or logs, and a worker killed mid-import resumes without duplicates.
``tuneline migrate openai`` runs the whole move from the CLI: an imported job distilled (its
original model's answers as a new file) and re-trained on the tiny local model with the original
model evaluated beside it.

The deployment's configured openai provider is the sandbox account (its key and URL), as a
deployment leaving OpenAI would configure its OpenAI key: the original models answer through it."""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner
from openai import OpenAI

from service.cli.main import main as cli
from service.core.backends.remote import parse_result_csv
from service.core.store import keys
from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import Stack, make_stack
from tests.support.procs import free_port, start_worker, wait_until

pytestmark = pytest.mark.slow

QUEUES = "datasets,provider,poll,webhooks,maintenance"
SANDBOX_KEY = "sk-sandbox-" + secrets.token_hex(16)  # distinctive, so a leak is found by a search
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[Stack]:
    """A short broker visibility timeout, so a killed worker's import task comes back in seconds.

    The configured openai provider is the sandbox account; local models may load from any of the
    session's temporary directories (the tiny model is built there, only by the tests needing it).
    """
    workdir = tmp_path_factory.mktemp("imports")
    port = free_port()
    s = make_stack(
        workdir,
        secret_key,
        durable=True,
        port=port,
        TUNELINE_SANDBOX_TIME_SCALE="0.02",
        TUNELINE_SANDBOX_API_KEY=SANDBOX_KEY,
        TUNELINE_VISIBILITY_TIMEOUT_S="6",
        TUNELINE_OPENAI_API_KEY=SANDBOX_KEY,
        TUNELINE_OPENAI_BASE_URL=f"http://127.0.0.1:{port}/sandbox/v1",
        TUNELINE_DEFAULT_PROVIDER="sandbox",
        TUNELINE_LOCAL_MODEL_ROOTS=str(tmp_path_factory.getbasetemp()),
        TUNELINE_TRAIN_DEVICE="cpu",
        TUNELINE_TRAIN_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    s.start_worker(QUEUES, "a")
    yield s
    s.stop()
    s.redis.stop()


def sandbox(stack: Stack) -> OpenAI:
    """The sandbox's own account, as its owner would reach OpenAI."""
    return OpenAI(base_url=stack.base_url + "/sandbox/v1", api_key=SANDBOX_KEY, max_retries=2, timeout=30)


def tuneline(stack: Stack, token: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url + "/v1", api_key=token, max_retries=2, timeout=30)


def rows(tag: str, n: int = 12) -> bytes:
    return "".join(
        f'{{"prompt": "{tag} question {i}", "completion": "answer {i}"}}\n' for i in range(n)
    ).encode()


def upload(client: OpenAI, data: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id


def create_jobs(client: OpenAI, specs: list[tuple[str, str | None, dict[str, Any]]]) -> list[str]:
    """Sandbox jobs (training file, validation file, fault options), waited on until they end."""
    ids = []
    for training, validation, faults in specs:
        kwargs: dict[str, Any] = {"validation_file": validation} if validation else {}
        job = client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=training,
            hyperparameters={"n_epochs": 2},
            suffix="imp",
            extra_body={"sandbox": {"steps": 4, **faults}},
            **kwargs,
        )
        ids.append(job.id)
    for job_id in ids:
        wait_until(
            lambda j=job_id: client.fine_tuning.jobs.retrieve(j).status in TERMINAL, 60, 0.2, "sandbox job"
        )
    return ids


def start_import(stack: Stack, token: str, body: dict[str, Any], **headers: str) -> httpx2.Response:
    return httpx2.post(
        stack.base_url + "/v1/imports",
        json=body,
        headers={"Authorization": f"Bearer {token}", **headers},
        timeout=30,
    )


def get_import(stack: Stack, token: str, import_id: str) -> httpx2.Response:
    return httpx2.get(
        stack.base_url + f"/v1/imports/{import_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def wait_import(stack: Stack, token: str, import_id: str, timeout: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        doc = get_import(stack, token, import_id).json()
        return doc if doc["status"] in ("succeeded", "failed") else None

    try:
        return wait_until(ended, timeout, 0.3, f"import {import_id}")  # type: ignore[no-any-return]
    except TimeoutError:
        raise AssertionError(stack.logs()) from None


def redis_dump(stack: Stack) -> str:
    """Every key and value in the state store, as text (strings, hashes, lists, sets, sorted sets)."""
    r = stack.store.r
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == "string":
            value: Any = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "zset":
            value = r.zrange(key, 0, -1)
        else:
            value = ""
        out.append(f"{key}={value}")
    return "\n".join(out)


def test_an_account_is_imported_once_with_files_deduplicated(stack: Stack):
    owner = sandbox(stack)
    common = rows("common")
    held = rows("already-held")
    train_a, train_b = upload(owner, common), upload(owner, held)
    valid = upload(owner, rows("validation", 6), "valid.jsonl")
    provider_ids = create_jobs(
        owner,
        [
            (train_a, valid, {}),
            (train_a, None, {"result_base64": True}),  # the same training file, OpenAI's base64 CSV
            (train_b, None, {"fail_at": "running", "error": {"code": "server_error", "message": "boom"}}),
        ],
    )
    token = stack.key("importer")
    client = tuneline(stack, token)
    # The tenant already holds one of the account's files: the import must reuse it.
    held_id = upload(client, held, "mine.jsonl")

    refused = start_import(
        stack, token, {"source": "openai", "base_url": "http://169.254.169.254/v1", "api_key": "k"}
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unsafe_base_url", refused.text
    assert refused.json()["error"]["param"] == "base_url"
    bad = start_import(stack, token, {"source": "gcp"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "source", bad.text

    body = {"source": "openai", "base_url": stack.base_url + "/sandbox/v1", "api_key": SANDBOX_KEY}
    created = start_import(stack, token, body, **{"Idempotency-Key": "first-import"})
    assert created.status_code == 202, created.text
    first = created.json()
    assert (
        first["id"].startswith("imp-")
        and first["object"] == "import"
        and first["status"] in ("queued", "running")
    )
    replay = start_import(stack, token, body, **{"Idempotency-Key": "first-import"})
    assert replay.json()["id"] == first["id"] and replay.headers.get("Idempotent-Replayed") == "true"
    # While it runs, the key is in Redis only sealed (or already deleted).
    assert SANDBOX_KEY not in redis_dump(stack)

    done = wait_import(stack, token, first["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == {
        "jobs_seen": 3,
        "jobs_imported": 3,
        "jobs_already_imported": 0,
        "jobs_skipped": 0,
        "files_imported": 2,  # the common training file (downloaded once) and the validation file
        "files_reused": 1,  # the bytes the tenant already had
    }, done
    assert not stack.store.r.exists(keys.import_secret(first["id"]))

    imported = {j.provider_job_id: j for j in client.fine_tuning.jobs.list(limit=100).data}  # type: ignore[attr-defined]
    assert set(imported) == set(provider_ids)
    for provider_id in provider_ids:
        original = owner.fine_tuning.jobs.retrieve(provider_id)
        job = imported[provider_id]
        extra = job.model_extra or {}
        assert extra["import_id"] == first["id"] and extra["provider"] == "openai"
        assert extra["stage"] == "done" and job.status == original.status
        assert job.fine_tuned_model == original.fine_tuned_model
        assert job.model == original.model and job.seed == original.seed
        assert job.hyperparameters.n_epochs == original.hyperparameters.n_epochs
        assert job.created_at == original.created_at and job.finished_at == original.finished_at

        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        theirs = owner.fine_tuning.jobs.list_events(provider_id, limit=100).data
        assert [e.message for e in events[1:]] == [e.message for e in theirs]
        assert events[0].message.startswith("Imported from openai job")
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        their_checkpoints = owner.fine_tuning.jobs.checkpoints.list(provider_id).data
        assert [(c.step_number, c.fine_tuned_model_checkpoint) for c in checkpoints] == [
            (c.step_number, c.fine_tuned_model_checkpoint) for c in their_checkpoints
        ]
        metrics = httpx2.get(
            stack.base_url + f"/v1/fine_tuning/jobs/{job.id}/metrics",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()["data"]
        expected: list[dict[str, Any]] = []
        for result_file in original.result_files:
            expected.extend(parse_result_csv(owner.files.content(result_file).content))
        if original.status == "succeeded":
            assert expected and [m["step"] for m in metrics] == [r["step"] for r in expected]
            assert [m["train_loss"] for m in metrics] == [r.get("train_loss") for r in expected]

    succeeded = [imported[p] for p in provider_ids[:2]]
    assert succeeded[0].training_file == succeeded[1].training_file
    assert client.files.content(succeeded[0].training_file).content == common
    assert client.files.content(succeeded[0].validation_file).content == rows("validation", 6)  # type: ignore[arg-type]
    assert imported[provider_ids[2]].training_file == held_id
    assert imported[provider_ids[2]].error.code == "server_error"  # type: ignore[union-attr]
    for file_id in (succeeded[0].training_file, succeeded[0].validation_file):
        # The preparation report ran on every imported file.
        wait_until(lambda f=file_id: client.files.retrieve(f).status != "uploaded", 60, 0.2, "preparation")
        report = httpx2.get(
            stack.base_url + f"/v1/files/{file_id}/report",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert report.status_code == 200 and report.json()["object"] == "file.report", report.text
        assert (client.files.retrieve(file_id).model_extra or {})["import_id"] == first["id"]
    files_before = {f.id for f in client.files.list().data}
    assert len(files_before) == 3
    assert client.files.retrieve(succeeded[0].training_file).status == "processed"

    # Read-only: Tuneline refuses to cancel an imported job (it never acts at the provider).
    cancel = httpx2.post(
        stack.base_url + f"/v1/fine_tuning/jobs/{succeeded[0].id}/cancel",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert cancel.status_code == 409 and cancel.json()["error"]["code"] == "job_imported", cancel.text
    assert "imported" in cancel.json()["error"]["message"]

    # Another tenant sees neither the import nor its jobs.
    stranger = stack.key("stranger")
    assert get_import(stack, stranger, first["id"]).status_code == 404
    listed = httpx2.get(
        stack.base_url + "/v1/imports", headers={"Authorization": f"Bearer {stranger}"}, timeout=30
    )
    assert listed.json()["data"] == []

    # Again: nothing new, nothing duplicated.
    again = start_import(stack, token, body).json()
    rerun = wait_import(stack, token, again["id"])
    assert rerun["status"] == "succeeded"
    assert rerun["progress"] == {
        "jobs_seen": 3,
        "jobs_imported": 0,
        "jobs_already_imported": 3,
        "jobs_skipped": 0,
        "files_imported": 0,
        "files_reused": 0,
    }, rerun
    assert len(client.fine_tuning.jobs.list(limit=100).data) == 3
    assert {f.id for f in client.files.list().data} == files_before
    mine = httpx2.get(
        stack.base_url + "/v1/imports", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()
    assert [d["id"] for d in mine["data"]] == [again["id"], first["id"]]

    # Chosen jobs only, into a third tenant: an unknown id is skipped and says why.
    picker = stack.key("picker")
    chosen = start_import(stack, picker, {**body, "jobs": [provider_ids[0], "ftjob-nosuchjob"]}).json()
    picked = wait_import(stack, picker, chosen["id"])
    assert picked["status"] == "succeeded"
    assert picked["progress"]["jobs_imported"] == 1 and picked["progress"]["jobs_skipped"] == 1, picked
    assert [(s["job"], s["code"]) for s in picked["skipped"]] == [("ftjob-nosuchjob", "job_not_found")]
    assert [j.provider_job_id for j in tuneline(stack, picker).fine_tuning.jobs.list().data] == [
        provider_ids[0]
    ]  # type: ignore[attr-defined]

    # The key: in no response, nowhere in Redis, in no log.
    for response in (created, replay, listed):
        assert SANDBOX_KEY not in response.text
    assert SANDBOX_KEY not in str(done) + str(rerun) + str(mine) + str(picked)
    assert SANDBOX_KEY not in redis_dump(stack)
    for log in stack.workdir.glob("*.log"):
        assert SANDBOX_KEY not in log.read_text(errors="replace"), log.name


def test_a_worker_killed_mid_import_resumes_without_duplicates(stack: Stack):
    owner = sandbox(stack)
    time.sleep(1.1)  # `since` is in whole seconds: leave the previous test's jobs behind
    since = int(time.time())
    files = [upload(owner, rows(f"kill-{i}")) for i in range(3)]
    # The third job answers every call slowly: the worker is killed while it reads that job.
    slow = {"slow_ms": 3000}
    specs = [(files[i % 3], None, slow if i == 3 else {}) for i in range(6)]
    provider_ids = create_jobs(owner, specs)
    token = stack.key("killed")
    body = {
        "source": "openai",
        "base_url": stack.base_url + "/sandbox/v1",
        "api_key": SANDBOX_KEY,
        "since": since,
    }
    started = start_import(stack, token, body)
    assert started.status_code == 202, started.text
    import_id = started.json()["id"]

    def inside_slow_job() -> bool:
        stats = httpx2.get(
            stack.base_url + "/sandbox/v1/_stats",
            headers={"Authorization": f"Bearer {SANDBOX_KEY}"},
            timeout=10,
        ).json()
        progress = get_import(stack, token, import_id).json()["progress"]
        return progress["jobs_imported"] >= 1 and sum(stats["slow_in_flight"].values()) > 0

    wait_until(inside_slow_job, 60, 0.05, "the import inside the slow job")
    stack.workers[-1].kill9()
    cut = get_import(stack, token, import_id).json()
    assert cut["status"] == "running" and cut["progress"]["jobs_imported"] < 6, cut
    stack.start_worker(QUEUES, f"k{len(stack.workers)}")

    done = wait_import(stack, token, import_id, timeout=180)
    assert done["status"] == "succeeded", done
    assert done["progress"]["jobs_seen"] == 6 and done["progress"]["jobs_imported"] == 6, done
    assert done["progress"]["files_imported"] == 3 and done["progress"]["files_reused"] == 0, done
    client = tuneline(stack, token)
    jobs = client.fine_tuning.jobs.list(limit=100).data
    assert sorted(j.model_extra["provider_job_id"] for j in jobs) == sorted(provider_ids)  # type: ignore[index]
    assert len(client.files.list().data) == 3
    for job in jobs:
        provider_id = (job.model_extra or {})["provider_job_id"]
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        theirs = owner.fine_tuning.jobs.list_events(provider_id, limit=100).data
        assert len(events) == len(theirs) + 1  # no event twice, one closing event


def funds_rows(n: int) -> bytes:
    """Chinese Q&A rows (prompt/completion), the data the tiny local model's tokenizer knows; one
    row per prompt, so that a model recalling its training answers has one answer to each."""
    seen: dict[str, bytes] = {}
    for line in (SAMPLE_DATA / "funds_qa.jsonl").read_bytes().splitlines():
        seen.setdefault(json.loads(line)["prompt"].strip(), line)
        if len(seen) == n:
            break
    return b"\n".join(seen.values()) + b"\n"


def call(stack: Stack, token: str, method: str, path: str, **kwargs: Any) -> httpx2.Response:
    return httpx2.request(
        method, stack.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kwargs
    )


def local_workers(stack: Stack) -> None:
    """A train worker and an infer worker, started once for the module's tests that need them."""
    if not any(p.log.name.startswith("worker-train") for p in stack.workers):
        stack.start_train_worker()
        stack.workers.append(
            start_worker(stack.env, stack.workdir / "worker-infer.log", "infer", "infer", concurrency=1)
        )


@pytest.mark.timeout(600)
def test_migrate_openai_imports_distills_and_retrains(stack: Stack, local_base_model: Path):
    """``tuneline migrate openai --retrain local:<tiny model> --distill``: the account imported; the
    original model's answers to its training prompts a new, prepared file; its succeeded job
    re-trained into an experiment whose table holds the original model's held-out scores beside the
    local candidate's; run again, nothing is imported, distilled or re-trained twice."""
    owner = sandbox(stack)
    time.sleep(1.1)  # `since` is in whole seconds: leave the other tests' jobs behind
    since = int(time.time())
    failed = {"fail_at": "running", "error": {"code": "server_error", "message": "boom"}}
    good, bad = create_jobs(
        owner, [(upload(owner, funds_rows(40)), None, {}), (upload(owner, rows("failed")), None, failed)]
    )
    local_workers(stack)
    token = stack.key("migrator")
    # No key in the CLI's environment: the server's configured openai provider reads the account.
    env = {
        "TUNELINE_BASE_URL": stack.base_url,
        "TUNELINE_API_KEY": token,
        "TUNELINE_OPENAI_API_KEY": None,
        "OPENAI_API_KEY": None,
    }
    local = f"local:{local_base_model}:n_epochs=1,batch_size=8,lora_rank=8"
    args = ["migrate", "openai", "--since", str(since), "--retrain", local, "--test-split", "0.2"]
    distill = ["--distill", "--max-cost-usd", "1"]
    first = CliRunner().invoke(cli, [*args, *distill, "--json"], env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    doc, retrained = out["import"], out["retrain"]
    assert doc["status"] == "succeeded" and out["warnings"] == [], out
    assert doc["progress"]["jobs_imported"] == 2 and doc["progress"]["files_imported"] == 2, doc
    jobs = {j["provider_job_id"]: j for j in call(stack, token, "GET", "/v1/fine_tuning/jobs").json()["data"]}
    (entry,) = retrained["data"]
    imported = jobs[good]
    assert entry["job_id"] == imported["id"] and entry["test_set"] == "split"
    assert entry["fine_tuned_model"] == imported["fine_tuned_model"]
    assert [(s["job_id"], s["code"]) for s in retrained["skipped"]] == [
        (jobs[bad]["id"], "job_not_succeeded")
    ]
    # The same request over HTTP: the same experiment; another request: 409.
    path = f"/v1/imports/{doc['id']}/retrain"
    body = {
        "candidates": [
            {
                "provider": "local",
                "model": str(local_base_model),
                "hyperparameters": {"n_epochs": 1, "batch_size": 8, "lora_rank": 8},
            }
        ],
        "split": {"test": 0.2},
    }
    again = call(stack, token, "POST", path, json=body)
    assert again.status_code == 200 and again.json() == retrained, again.text
    other = call(stack, token, "POST", path, json={**body, "split": {"test": 0.3}})
    assert other.status_code == 409 and other.json()["error"]["code"] == "import_already_retrained"

    try:
        exp = wait_until(
            lambda: (
                (
                    e := call(
                        stack, token, "GET", f"/v1/experiments/{entry['experiment_id']}?limit=100"
                    ).json()
                )["status"]
                == "completed"
                and e
            ),
            540,
            1,
            "the experiment",
        )
    except TimeoutError:
        raise AssertionError(stack.logs()) from None
    print(json.dumps(exp["candidates"], ensure_ascii=False, indent=1))
    mine, original = exp["candidates"]
    assert (mine["status"], original["status"]) == ("succeeded", "succeeded"), stack.logs()
    assert (mine["evaluate_only"], original["evaluate_only"]) == (False, True)
    assert original["provider"] == "openai" and original["model"] == imported["fine_tuned_model"]
    for row in (mine, original):
        assert row["evaluation_status"] == "completed" and row["metrics"]["errors"] == 0
    n = original["metrics"]["answered"]
    assert n >= 3 and mine["metrics"]["answered"] == n == len(exp["examples"])
    # The sandbox's model answers a prompt it was trained on with its training answer: the held-out
    # rows came from the file the original model trained on (``test_set: split``), so it recalls
    # every reference. The tiny model, one epoch from random weights, recalls none of them.
    assert original["metrics"]["exact_match"] == 1.0, original
    assert mine["metrics"]["exact_match"] < 1.0, mine
    for example in exp["examples"]:
        ours, theirs = example["answers"]
        assert ours["answer"] is not None and theirs["exact_match"] == 1.0
    # The evaluate-only job trained nothing and names the model it evaluated.
    job = call(stack, token, "GET", f"/v1/fine_tuning/jobs/{original['job_id']}").json()
    assert job["evaluated_model"] == imported["fine_tuned_model"] and job["trained_tokens"] is None
    assert job["evaluation"]["metrics"] == original["metrics"]

    # Again, for a person: nothing new, so nothing re-trained; a summary table.
    second = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    lines = second.stdout.splitlines()
    assert lines[0].startswith("Import imp-") and lines[0].endswith("from openai: succeeded")
    assert lines[1].split() == ["imported", "already", "imported", "skipped"]
    assert lines[2].split() == ["jobs", "0", "2", "0"] and lines[3].split() == ["files", "0", "0"]
    assert "warning: nothing new was imported, so nothing was re-trained" in second.stdout
    # Not a terminal: progress as plain lines on stderr; the key nowhere.
    assert "2 already imported" in second.stderr
    assert SANDBOX_KEY not in first.output + second.output

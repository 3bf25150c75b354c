"""The sandbox simulator: lifecycle by clock, events, checkpoints, results and faults."""

from __future__ import annotations

import base64
import itertools
from pathlib import Path

import pytest

from service.core.clock import ManualClock
from service.core.errors import InvalidRequest, NotFound, RateLimited
from service.core.uploads import HashingSpool
from service.sandbox.faults import Faults
from service.sandbox.simulator import Sandbox, SandboxServerError
from service.sandbox.timeline import ORGANIZATION, RESULT_COLUMNS, result_file_id

TRAIN = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n' * 10


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def sb(store, tmp_path: Path, clock: ManualClock, sleeps: list[float]) -> Sandbox:
    # Time scale 1: the base durations (2 s validating, 2 s queued, 10 steps of 1 s).
    return Sandbox(store, tmp_path, time_scale=1.0, clock=clock, sleep=sleeps.append)


def upload(sb: Sandbox, tmp_path: Path, data: bytes = TRAIN, purpose: str = "fine-tune") -> str:
    spool = HashingSpool(tmp_path / "tmp", 1 << 20)
    spool.write(data)
    return str(sb.create_file(spool, "train.jsonl", purpose)["id"])


def create(sb: Sandbox, tmp_path: Path, sandbox: dict | None = None, **extra) -> dict:
    """Create a job; ``sandbox`` options go through the schema, as on every HTTP path."""
    body = {"model": "gpt-4o-mini-2024-07-18", "training_file": upload(sb, tmp_path), **extra}
    return sb.create_job(body, Faults.load(sandbox))


def test_lifecycle_follows_the_clock(sb, clock, tmp_path):
    job = create(sb, tmp_path, suffix="funds", metadata={"tuneline_job_id": "ftjob-t1"})
    assert job["status"] == "validating_files" and job["organization_id"] == ORGANIZATION
    assert job["hyperparameters"] == {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 2.0}
    assert job["fine_tuned_model"] is None and job["result_files"] == [] and job["trained_tokens"] is None
    seen = []
    for _ in range(16):
        seen.append(sb.get_job(job["id"])["status"])
        clock.advance(1.0)
    assert seen[:2] == ["validating_files"] * 2 and seen[2:4] == ["queued"] * 2
    assert seen[4:14] == ["running"] * 10 and seen[14:] == ["succeeded"] * 2
    done = sb.get_job(job["id"])
    short = job["id"].removeprefix("ftjob-")
    assert done["fine_tuned_model"] == f"ft:gpt-4o-mini-2024-07-18:sandbox:funds:{short}"
    assert done["finished_at"] == done["created_at"] + 14
    assert done["trained_tokens"] == len(TRAIN) // 4 * 3
    assert done["result_files"] == [result_file_id(job["id"])]


def test_events_newest_first_with_metrics_and_sandbox_prefix(sb, clock, tmp_path):
    job = create(sb, tmp_path)
    clock.advance(4.0 + 3.0)  # three steps into running
    events, has_more = sb.list_events(job["id"], None, 100)
    assert not has_more and all(e["message"].startswith("[sandbox]") for e in events)
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [m["data"]["step"] for m in metrics] == [3, 2, 1]
    assert set(metrics[0]["data"]) == {"step", "train_loss", "train_mean_token_accuracy", "total_steps"}
    assert events[-1]["message"].startswith("[sandbox] Created fine-tuning job")
    clock.advance(100)
    events, _ = sb.list_events(job["id"], None, 100)
    assert events[0]["message"] == "[sandbox] The job has successfully completed"
    losses = [e["data"]["train_loss"] for e in reversed(events) if e["type"] == "metrics"]
    assert len(losses) == 10 and all(a > b for a, b in itertools.pairwise(losses))
    # Cursor paging walks the same list.
    page1, more1 = sb.list_events(job["id"], None, 5)
    page2, _ = sb.list_events(job["id"], page1[-1]["id"], 5)
    assert more1 and [e["id"] for e in page1 + page2] == [e["id"] for e in events[:10]]


def test_loss_curve_is_deterministic_per_job(sb, clock, tmp_path, store):
    job = create(sb, tmp_path, validation_file=None)
    clock.advance(100)
    first = sb.list_events(job["id"], None, 100)[0]
    again = Sandbox(store, tmp_path, 1.0, clock).list_events(job["id"], None, 100)[0]
    assert first == again


def test_checkpoints_and_result_file(sb, clock, tmp_path):
    job = create(sb, tmp_path, validation_file=upload(sb, tmp_path))
    clock.advance(4.0 + 4.0)
    ckpts, _ = sb.list_checkpoints(job["id"], None, 10)
    assert [c["step_number"] for c in ckpts] == [3]
    clock.advance(100)
    ckpts, _ = sb.list_checkpoints(job["id"], None, 10)
    assert [c["step_number"] for c in ckpts] == [10, 7, 3]
    assert ckpts[0]["fine_tuned_model_checkpoint"].endswith(":ckpt-step-10")
    assert {"valid_loss", "full_valid_loss", "full_valid_mean_token_accuracy"} <= set(ckpts[0]["metrics"])
    done = sb.get_job(job["id"])
    result = sb.get_file(done["result_files"][0])
    assert result["purpose"] == "fine-tune-results" and result["filename"] == "step_metrics.csv"
    csv = sb.file_content(result["id"]).decode()
    lines = csv.splitlines()
    assert lines[0] == ",".join(RESULT_COLUMNS) and len(lines) == 11
    assert result["bytes"] == len(csv.encode())
    assert lines[-1].split(",")[0] == "10" and lines[-1].split(",")[6] != ""


def test_result_file_base64_when_asked(sb, clock, tmp_path):
    job = create(sb, tmp_path, sandbox={"result_base64": True})
    clock.advance(100)
    raw = sb.file_content(sb.get_job(job["id"])["result_files"][0])
    assert base64.b64decode(raw).decode().startswith("step,train_loss,train_accuracy,")


@pytest.mark.parametrize(
    "stage,at,last_ok",
    [("validating_files", 2.0, "validating_files"), ("queued", 4.0, "queued"), ("running", 9.0, "running")],
)
def test_fail_at_stage(sb, clock, tmp_path, stage, at, last_ok):
    job = create(sb, tmp_path, sandbox={"fail_at": stage, "error": {"code": "boom", "message": "it broke"}})
    clock.advance(at - 0.01)
    assert sb.get_job(job["id"])["status"] == last_ok
    clock.advance(0.02)
    failed = sb.get_job(job["id"])
    assert failed["status"] == "failed" and failed["fine_tuned_model"] is None
    assert failed["error"]["code"] == "boom" and failed["error"]["message"] == "[sandbox] it broke"
    clock.advance(100)
    assert sb.get_job(job["id"])["status"] == "failed"
    events, _ = sb.list_events(job["id"], None, 100)
    assert events[0]["level"] == "error" and "it broke" in events[0]["message"]


def test_cancel_running_and_terminal(sb, clock, tmp_path):
    job = create(sb, tmp_path)
    clock.advance(6.5)
    cancelled = sb.cancel_job(job["id"])
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    clock.advance(100)
    assert sb.get_job(job["id"])["status"] == "cancelled"
    events, _ = sb.list_events(job["id"], None, 100)
    assert events[0]["message"] == "[sandbox] Job cancelled."
    assert max(e["data"]["step"] for e in events if e["type"] == "metrics") == 2
    assert sb.list_checkpoints(job["id"], None, 10)[0] == []
    done = create(sb, tmp_path)
    clock.advance(100)
    assert sb.cancel_job(done["id"])["status"] == "succeeded"


def test_read_faults_then_recovery(sb, clock, tmp_path, sleeps):
    job = create(
        sb,
        tmp_path,
        sandbox={"rate_limit": {"count": 2, "retry_after": 3}, "server_errors": 1, "slow_ms": 10_000},
    )
    for _ in range(2):
        with pytest.raises(RateLimited) as err:
            sb.get_job(job["id"])
        assert err.value.headers == {"Retry-After": "3"}
    with pytest.raises(SandboxServerError):
        sb.list_events(job["id"], None, 10)
    assert sb.get_job(job["id"])["status"] == "validating_files"
    assert sleeps == [10.0] * 5  # the create and four reads


def test_create_faults_and_stats(sb, tmp_path):
    train = upload(sb, tmp_path)
    body = {"model": "gpt-4o-mini-2024-07-18", "training_file": train, "metadata": {"tuneline_job_id": "j1"}}
    with pytest.raises(SandboxServerError):
        sb.create_job(body, header_fault="create-500")
    assert sb.stats() == {
        "creates": 0,
        "creates_by_tuneline_job": {},
        "job_reads": [],
        "calls": {},
        "slow_in_flight": {},
    }
    with pytest.raises(SandboxServerError):
        sb.create_job(body, header_fault="create-timeout-after-create")
    found, _ = sb.list_jobs(None, 10, {"tuneline_job_id": "j1"})
    assert len(found) == 1  # the ambiguous create did create: look before creating again
    assert sb.stats() == {
        "creates": 1,
        "creates_by_tuneline_job": {"j1": 1},
        "job_reads": [],
        "calls": {},  # a filtered list is a look-before-create, not a poll's read
        "slow_in_flight": {},
    }

    ambiguous = {**body, "metadata": {"tuneline_job_id": "j2"}}
    after_once = Faults.load({"create_fault": {"when": "after", "count": 1}})
    with pytest.raises(SandboxServerError):
        sb.create_job(ambiguous, after_once)
    assert sb.create_job(ambiguous, after_once)["status"] == "validating_files"  # the second succeeds
    refused = {**body, "metadata": {"tuneline_job_id": "j3"}}
    before_twice = Faults.load({"create_fault": {"when": "before", "count": 2}})
    for _ in range(2):
        with pytest.raises(SandboxServerError):
            sb.create_job(refused, before_twice)
    sb.create_job(refused, before_twice)
    assert sb.stats()["creates_by_tuneline_job"] == {"j1": 1, "j2": 2, "j3": 1}


def test_list_jobs_filters_and_pages(sb, clock, tmp_path):
    made = []
    for i in range(5):
        meta = {"tuneline_job_id": f"j{i}", "team": "a" if i % 2 else "b"}
        made.append(create(sb, tmp_path, metadata=meta))
        clock.advance(0.01)
    page, more = sb.list_jobs(None, 2)
    assert [j["id"] for j in page] == [made[4]["id"], made[3]["id"]] and more
    page2, _ = sb.list_jobs(page[-1]["id"], 2)
    assert [j["id"] for j in page2] == [made[2]["id"], made[1]["id"]]
    only, more = sb.list_jobs(None, 10, {"team": "a"})
    assert [j["id"] for j in only] == [made[3]["id"], made[1]["id"]] and not more
    assert [j["id"] for j in sb.list_jobs(None, 10, {"tuneline_job_id": "j2"})[0]] == [made[2]["id"]]
    assert sb.list_jobs(None, 10, {"tuneline_job_id": "nope"})[0] == []
    assert sb.stats()["calls"] == {"jobs.list": 2}  # the two unfiltered pages a poll would read


def test_bad_creates(sb, tmp_path):
    train = upload(sb, tmp_path)
    cases = [
        ({"model": "gpt-9", "training_file": train}, "model", "model_not_found"),
        ({"model": "gpt-4o-mini-2024-07-18", "training_file": "file-nope"}, "training_file", None),
        (
            {"model": "gpt-4o-mini-2024-07-18", "training_file": train, "validation_file": "file-x"},
            "validation_file",
            None,
        ),
        (
            {"model": "gpt-4o-mini-2024-07-18", "training_file": train, "hyperparameters": {"n_epochs": 500}},
            "hyperparameters.n_epochs",
            "invalid_hyperparameter",
        ),
        (
            {
                "model": "gpt-4o-mini-2024-07-18",
                "training_file": train,
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0}}},
            },
            "method.supervised.hyperparameters.batch_size",
            "invalid_hyperparameter",
        ),
    ]
    for body, param, code in cases:
        with pytest.raises(InvalidRequest) as err:
            sb.create_job(body)
        assert err.value.param == param
        if code:
            assert err.value.code == code
    with pytest.raises(NotFound):
        sb.get_job("ftjob-missing")


def test_completions_only_for_trained_models(sb, clock, tmp_path):
    job = create(sb, tmp_path, suffix="qa")
    model = f"ft:gpt-4o-mini-2024-07-18:sandbox:qa:{job['id'].removeprefix('ftjob-')}"
    with pytest.raises(NotFound) as err:
        sb.chat_completion(model, [{"role": "user", "content": "基金是什么？"}])
    assert err.value.code == "model_not_found"
    clock.advance(100)
    answer = sb.chat_completion(model, [{"role": "user", "content": "基金是什么？"}])
    text = answer["choices"][0]["message"]["content"]
    assert text.startswith("[sandbox]") and "基金是什么？" in text
    assert answer == sb.chat_completion(model, [{"role": "user", "content": "基金是什么？"}])
    assert sb.completion(model, "hello")["choices"][0]["text"].endswith('"hello"')
    ckpt = sb.list_checkpoints(job["id"], None, 1)[0][0]["fine_tuned_model_checkpoint"]
    assert sb.completion(ckpt, ["a", "b"])["choices"][1]["index"] == 1
    for bad in ("gpt-4o-mini-2024-07-18", model + "x", "ft:x:sandbox::nope"):
        with pytest.raises(NotFound):
            sb.completion(bad, "hi")


def test_slow_calls_are_counted_in_flight_while_held_open(store, tmp_path, clock):
    """slow_ms holds create, reads and the result file open; _stats shows each call while it sleeps."""
    seen: list[dict[str, int]] = []
    sb = Sandbox(
        store,
        tmp_path,
        time_scale=1.0,
        clock=clock,
        sleep=lambda s: seen.append(sb.stats()["slow_in_flight"]),
    )
    job = create(sb, tmp_path, sandbox={"slow_ms": 2000, "steps": 2})
    sb.get_job(job["id"])
    sb.list_events(job["id"], None, 10)
    sb.list_checkpoints(job["id"], None, 10)
    clock.advance(100)
    done = sb.get_job(job["id"])
    sb.file_content(done["result_files"][0])
    assert seen == [
        {"jobs.create": 1},
        {"jobs.retrieve": 1},
        {"jobs.events": 1},
        {"jobs.checkpoints": 1},
        {"jobs.retrieve": 1},
        {"files.content": 1},
    ]
    assert sb.stats()["slow_in_flight"] == {}  # released after each call


def test_account_wide_slow_uploads(sb, tmp_path, sleeps):
    assert sb.account_faults() == {"object": "sandbox.faults", "upload_slow_ms": 0}
    upload(sb, tmp_path)
    assert sleeps == []
    assert sb.set_account_faults(2500)["upload_slow_ms"] == 2500
    upload(sb, tmp_path)
    assert sleeps == [2.5]
    sb.set_account_faults(0)
    upload(sb, tmp_path)
    assert sleeps == [2.5]


def test_terminal_at_is_when_the_simulated_job_ended(sb, clock, tmp_path):
    job = create(sb, tmp_path, sandbox={"steps": 3})
    created = clock.now()
    assert job["terminal_at"] is None
    clock.advance(2.5)
    assert sb.get_job(job["id"])["terminal_at"] is None
    clock.advance(100)
    # 2 s validating + 2 s queued + 3 steps of 1 s, whenever it is read afterwards.
    assert sb.get_job(job["id"])["terminal_at"] == pytest.approx(created + 7.0, abs=1e-3)
    cancelled = create(sb, tmp_path)
    clock.advance(1.25)
    assert sb.cancel_job(cancelled["id"])["terminal_at"] == pytest.approx(clock.now(), abs=1e-3)

"""The ``tuneline`` CLI against a live app (real HTTP server, real Redis): one client, one error
path, ``--json`` everywhere, width-aware tables; and start-up that imports only what it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import wcwidth
from click.testing import CliRunner, Result

from service.cli.client import clip, table
from service.cli.main import COMMANDS, main
from service.core import auth
from service.core.store import Store
from service.core.store import jobs as repo
from service.settings import Settings
from tests.bench.job_get import job_record
from tests.support.procs import free_port

HEAVY = ("openai", "httpx2", "flask", "celery", "torch", "transformers", "matplotlib")


@pytest.fixture
def live(live_base_url: str) -> str:
    return live_base_url


def run(base_url: str, token: str, *args: str) -> Result:
    env = {"TUNELINE_BASE_URL": base_url, "TUNELINE_API_KEY": token}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def stored_job(store: Store, tenant: str, **fields: Any) -> dict[str, Any]:
    job = {**job_record(tenant), **fields}
    repo.insert(store, job, job["created_at"] * 1000)
    return job


def columns_of(line: str, cells: list[str]) -> list[int]:
    """The terminal column where each cell starts on ``line``."""
    out, at = [], 0
    for value in cells:
        at = line.index(value, at)
        out.append(wcwidth.width(line[:at]))
        at += len(value)
    return out


def test_tables_align_chinese_cells_by_terminal_width() -> None:
    rows = [["基金定投", "是什么", 1], ["ETF", "指数基金的一种", 22], ["混合 mixed", "x", 333]]
    lines = table(["问题", "answer", "n"], rows).splitlines()
    assert len(lines) == 4
    starts = [columns_of(line, [str(c) for c in row]) for line, row in zip(lines[1:], rows, strict=True)]
    assert starts[0] == starts[1] == starts[2]
    assert columns_of(lines[0], ["问题", "answer", "n"]) == starts[0]
    assert clip("手里的军工基金亏了49%", 9) == "手里的军…" and wcwidth.width(clip("手里的军工基金", 9)) <= 9


def test_every_command_takes_json() -> None:
    ctx = click.Context(main)

    def leaves(command: click.Command, name: str) -> Iterator[tuple[str, click.Command]]:
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                found = command.get_command(ctx, sub)
                assert found is not None
                yield from leaves(found, f"{name} {sub}")
        else:
            yield name, command

    found = dict(leaves(main, "tuneline"))
    assert len(found) >= len(COMMANDS)
    missing = [name for name, cmd in found.items() if not any(p.name == "as_json" for p in cmd.params)]
    assert missing == []


def test_jobs_get_list_cancel_follow_and_metrics_against_a_live_app(live, make_key, store) -> None:
    token = make_key("acme")
    job = stored_job(store, "acme", metadata={"team": "基金"})
    shown = run(live, token, "jobs", "get", job["id"])
    assert shown.exit_code == 0 and f"id:               {job['id']}" in shown.stdout
    as_json = json.loads(run(live, token, "jobs", "get", job["id"], "--json").stdout)
    assert as_json["id"] == job["id"] and as_json["metadata"] == {"team": "基金"}

    listed = run(live, token, "jobs", "list", "--metadata", "team=基金", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)["data"]] == [job["id"]]
    assert json.loads(run(live, token, "jobs", "list", "--metadata", "team=x", "--json").stdout)["data"] == []
    human = run(live, token, "jobs", "list").stdout.splitlines()
    assert human[0].split() == ["ID", "STATUS", "STAGE", "PROVIDER", "MODEL", "TENANT", "CREATED_AT"]
    assert human[1].startswith(job["id"])

    metrics = run(live, token, "jobs", "metrics", job["id"])
    assert metrics.exit_code == 0 and metrics.stdout.strip() == "No metrics yet."
    assert json.loads(run(live, token, "jobs", "metrics", job["id"], "--json").stdout)["data"] == []

    cancelled = run(live, token, "jobs", "cancel", job["id"], "--json")
    assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    followed = run(live, token, "jobs", "follow", job["id"], "--json")
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    assert followed.exit_code == 1 and lines[-1] == {"object": "follow.done", "status": "cancelled"}
    assert any("cancelled" in (e.get("message") or "") for e in lines[:-1])


def test_eval_shows_a_dpo_jobs_preference_accuracy_beside_its_base(live, make_key, store) -> None:
    from service.core.store import evaluations

    token = make_key("acme")
    generation = {"examples": 1, "answered": 1, "errors": 0, "exact_match": 0.0, "char_f1": 0.5}
    job = stored_job(
        store,
        "acme",
        status="succeeded",
        stage="done",
        fine_tuned_model="ft:tiny:acme::x",
        method={"type": "dpo", "dpo": {"hyperparameters": {}}},
        prepare={"split": {"test": 0.2}},
        evaluation={
            "status": "completed",
            "examples": 1,
            "metrics": {**generation, "rouge_l": 0.5, "bleu": 9.0, "preference_accuracy": 0.875},
            "baseline": {**generation, "rouge_l": 0.4, "bleu": 3.0, "preference_accuracy": 0.625},
            "baseline_model": "ft:tiny:acme::sft",
        },
    )
    row = {
        "index": 0,
        "prompt": "问",
        "reference": "答",
        "non_preferred": "别的",
        "answer": "答",
        "char_f1": 0.5,
    }
    evaluations.put_row(
        store, job["id"], "model", 0, {**row, "preferred_logprob": -2.0, "non_preferred_logprob": -5.5}
    )
    shown = run(live, token, "eval", job["id"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    _, tuned, base = next(line for line in lines if line.startswith("preference_accuracy")).split()
    assert (float(tuned), float(base)) == (0.875, 0.625)
    assert "base (ft:tiny:acme::sft)" in shown.stdout
    # The example's margin: log p(preferred) - log p(non-preferred).
    assert lines[-2].split()[-1] == "margin" and float(lines[-1].split()[-1]) == 3.5


def test_an_api_error_is_one_line_with_status_type_and_code(live, make_key, store) -> None:
    token = make_key("acme")
    job = stored_job(store, "acme")
    run(live, token, "jobs", "cancel", job["id"])
    again = run(live, token, "jobs", "cancel", job["id"])
    assert again.exit_code == 1 and again.stdout == ""
    assert again.stderr.startswith("Error: HTTP 409 conflict_error (job_not_cancellable): Job ")

    for args in (
        ["jobs", "get", "ftjob-nope"],
        ["eval", "ftjob-nope"],
        ["experiments", "get", "exp-nope", "--json"],
    ):
        missing = run(live, token, *args)
        assert missing.exit_code == 1 and missing.stderr.startswith("Error: HTTP 404 not_found_error"), args
    bad = run(live, token, "jobs", "create", "--model", "gpt-4o-mini-2024-07-18", "--training-file", "file-x")
    assert bad.exit_code == 1 and bad.stderr.startswith(
        "Error: HTTP 400 invalid_request_error (file_not_found; param training_file): "
    )
    refused = run(live, "tl-nope-nope", "jobs", "list")
    assert refused.exit_code == 1 and "HTTP 401 authentication_error (invalid_api_key)" in refused.stderr
    unreachable = run(f"http://127.0.0.1:{free_port()}", token, "jobs", "list", "--json")
    assert unreachable.exit_code == 1 and "cannot reach Tuneline at http://127.0.0.1:" in unreachable.stderr
    no_key = CliRunner().invoke(main, ["jobs", "list"], env={"TUNELINE_API_KEY": ""})
    assert no_key.exit_code == 2 and "TUNELINE_API_KEY" in no_key.stderr


def test_keys_table_and_json_share_the_client_output(settings: Settings, store: Store) -> None:
    env = {"TUNELINE_ENV": "test", "TUNELINE_REDIS_URL": settings.redis_url}
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "--tenant", "acme", "--name", "基金团队"], env=env)
    assert created.exit_code == 0 and created.stdout.strip().startswith("tl-")
    token = created.stdout.strip().splitlines()[-1]
    assert auth.authenticate(store, token).tenant == "acme"
    runner.invoke(main, ["keys", "create", "--tenant", "ops", "--role", "ops", "--name", "ops"], env=env)
    lines = runner.invoke(main, ["keys", "list"], env=env).stdout.splitlines()
    assert lines[0].split() == ["KEY", "ID", "TENANT", "ROLE", "NAME", "CREATED", "REVOKED"]
    names = [line for line in lines[1:] if "基金团队" in line or " ops " in line]
    assert len(names) == 2
    # The column after NAME starts at the same terminal column in both rows.
    created_at = [columns_of(line, [line.split()[-1]])[0] for line in names]
    assert created_at[0] == created_at[1]
    listed = json.loads(runner.invoke(main, ["keys", "list", "--json"], env=env).stdout)
    assert {k["name"] for k in listed} == {"基金团队", "ops"}
    missing = runner.invoke(main, ["keys", "revoke", "nope"], env=env)
    assert missing.exit_code == 1 and missing.stderr == (
        "Error: not_found_error (not_found; param key_id): No API key with id 'nope'\n"
    )


def _imported(args: list[str], cwd: Path, **env: str) -> tuple[int, list[str], str]:
    """Run ``tuneline ARGS`` in a fresh interpreter; its exit code and the heavy modules it loaded."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['tuneline', *{args!r}]\n"
        "status = 0\n"
        "try:\n"
        "    runpy.run_module('service.cli', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    status = exc.code or 0\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
        env={**os.environ, **env},
    )
    heavy = next(line for line in done.stderr.splitlines() if line.startswith("HEAVY="))
    return done.returncode, [m for m in heavy.removeprefix("HEAVY=").split(",") if m], done.stdout


def test_prepare_starts_without_the_http_client_or_ml_libraries(sample_data: Path, tmp_path: Path) -> None:
    status, heavy, out = _imported(["prepare", "--help"], tmp_path)
    assert (status, heavy) == (0, []) and "--model" in out
    data = str(sample_data / "funds_qa.jsonl")
    status, heavy, out = _imported(["prepare", data, "--out", str(tmp_path / "out"), "--json"], tmp_path)
    assert (status, heavy) == (0, [])
    assert json.loads(out)["counts"]["kept"] > 0 and any((tmp_path / "out").iterdir())
    # The check can fail: a command that does use the HTTP client shows it.
    unreachable = {"TUNELINE_BASE_URL": f"http://127.0.0.1:{free_port()}", "TUNELINE_API_KEY": "tl-a-b"}
    status, heavy, _ = _imported(["jobs", "list"], tmp_path, **unreachable)
    assert (status, heavy) == (1, ["httpx2"])


def test_jobs_create_dpo_with_integrations_then_pause_and_resume(
    live, client, make_key, store, settings
) -> None:
    from service.core import preparation
    from service.core.jobs import lifecycle, states
    from tests.api.test_files import upload
    from tests.api.test_jobs_local_api import PREFERENCE

    token = make_key("acme")
    file_id = upload(client, token, PREFERENCE).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
    args = ["jobs", "create", "--model", "smollm2-135m", "--provider", "local", "--training-file", file_id]
    dpo = ["--method", "dpo", "--beta", "0.3", "--n-epochs", "2", "--batch-size", "4"]
    created = run(live, token, *args, *dpo, "--mlflow-experiment", "funds", "--wandb-project", "qa", "--json")
    assert created.exit_code == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["method"] == {
        "type": "dpo",
        "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "beta": 0.3}},
    }
    assert job["hyperparameters"]["beta"] == 0.3 and isinstance(job["seed"], int)
    assert job["integrations"] == [
        {"type": "wandb", "wandb": {"project": "qa"}},
        {"type": "mlflow", "mlflow": {"experiment_name": "funds"}},
    ]
    human = run(live, token, *args, "--method", "dpo", "--seed", "5")
    assert human.exit_code == 0 and human.stdout.startswith("Created ftjob-") and "seed 5)" in human.stdout
    shown = run(live, token, "jobs", "get", job["id"]).stdout
    assert f"seed:             {job['seed']}" in shown and "method:           dpo" in shown
    assert 'integration:      mlflow {"experiment_name": "funds"}' in shown
    no_dpo = run(live, token, *args, "--beta", "0.3")
    assert no_dpo.exit_code == 2 and "--beta" in no_dpo.stderr and "--method dpo" in no_dpo.stderr

    not_yet = run(live, token, "jobs", "pause", job["id"])
    assert not_yet.exit_code == 1 and "HTTP 409 conflict_error (job_not_pausable)" in not_yet.stderr
    training = stored_job(store, "acme", provider="local", status=states.RUNNING, stage="training")
    paused = run(live, token, "jobs", "pause", training["id"], "--json")
    assert paused.exit_code == 0, paused.stderr
    assert (json.loads(paused.stdout)["status"], json.loads(paused.stdout)["stage"]) == states.PAUSING_STATE
    lifecycle.transition(store, training["id"], *states.PAUSED_STATE, "the run saved its checkpoint")
    resumed = run(live, token, "jobs", "resume", training["id"])
    assert resumed.exit_code == 0 and resumed.stdout == f"{training['id']} is queued (train_queued).\n"
    again = run(live, token, "jobs", "resume", training["id"], "--json")
    assert again.exit_code == 1 and "(job_not_resumable)" in again.stderr

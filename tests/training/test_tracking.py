"""The spec's ``integrations`` and the tracker runs a job opens: parsed strictly, one MLflow run per
job across the runs of a paused or restarted job (a real SQLite store, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.training.errors import TrainingError
from service.training.spec import TrainSpec
from service.training.tracking import Integrations, MlflowTarget, WandbTarget

BASE = {"job_id": "ftjob-1", "base_model": "smollm2-135m", "train_file": "t.jsonl", "output_dir": "out"}


def test_a_spec_without_integrations_reports_nowhere() -> None:
    for raw in (BASE, {**BASE, "integrations": None}, {**BASE, "integrations": {}}):
        spec = TrainSpec.from_dict(raw)
        assert spec.integrations == Integrations() and spec.integrations.report_to == []


def test_integrations_parse_into_targets() -> None:
    spec = TrainSpec.from_dict(
        {
            **BASE,
            "integrations": {
                "wandb": {"project": "p", "entity": "e", "tags": ["a"], "mode": "online", "base_url": None},
                "mlflow": {"tracking_uri": "sqlite:///x.db", "experiment_name": "x"},
                "tags": {"tuneline.job_id": "ftjob-1"},
            },
        }
    )
    got = spec.integrations
    assert got.wandb == WandbTarget(project="p", entity="e", tags=("a",), mode="online")
    assert got.mlflow == MlflowTarget(tracking_uri="sqlite:///x.db", experiment_name="x")
    assert got.report_to == ["wandb", "mlflow"] and got.tags == {"tuneline.job_id": "ftjob-1"}


@pytest.mark.parametrize(
    ("integrations", "message"),
    [
        ([], "integrations must be an object"),
        ({"comet": {}}, "unknown integration 'comet'"),
        ({"wandb": {"name": "n"}}, "integrations.wandb.project"),
        ({"wandb": {"project": "p", "mode": "disabled"}}, "integrations.wandb.mode"),
        ({"wandb": {"project": "p", "tags": "a"}}, "integrations.wandb.tags"),
        ({"mlflow": {"experiment_name": "x"}}, "integrations.mlflow.tracking_uri"),
        ({"mlflow": {"tracking_uri": "u", "run_name": 3}}, "integrations.mlflow.run_name"),
        ({"tags": ["x"]}, "integrations.tags"),
    ],
)
def test_bad_integrations_fail_the_spec_naming_the_field(integrations, message) -> None:
    with pytest.raises(TrainingError, match=message):
        TrainSpec.from_dict({**BASE, "integrations": integrations})


@pytest.mark.slow  # MLflow creates its SQLite schema (about 40 migrations) first
def test_one_mlflow_run_per_job_across_its_runs(tmp_path: Path, monkeypatch) -> None:
    """A paused job's next run reopens its MLflow run (steps go on), ended KILLED while paused and
    FINISHED at the end; another job gets its own run, named after it."""
    pytest.importorskip("torch")
    mlflow = pytest.importorskip("mlflow")
    from service.training import tracking

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    target = Integrations(
        mlflow=MlflowTarget(tracking_uri=uri, artifact_location=str(tmp_path / "artifacts")),
        tags={"tuneline.tenant": "acme"},
    )
    hyper = {"seed": 7, "beta": 0.1}

    with tracking.reporting(target, "ftjob-a", tmp_path, hyper) as runs:
        mlflow.log_metric("loss", 0.9, step=1)
        runs.outcome = "paused"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    (paused,) = client.search_runs([experiment.experiment_id])
    assert paused.info.status == "KILLED" and paused.info.run_name == "ftjob-a"
    assert experiment.artifact_location == (tmp_path / "artifacts").as_uri()

    with tracking.reporting(target, "ftjob-a", tmp_path, hyper):
        mlflow.log_metric("loss", 0.5, step=2)
    with pytest.raises(RuntimeError), tracking.reporting(target, "ftjob-b", tmp_path, hyper):
        raise RuntimeError("the training broke")

    runs_by_job = {r.data.tags["tuneline.job_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs_by_job) == ["ftjob-a", "ftjob-b"]
    done = runs_by_job["ftjob-a"]
    assert done.info.run_id == paused.info.run_id and done.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(done.info.run_id, "loss")] == [
        (1, 0.9),
        (2, 0.5),
    ]
    assert done.data.params == {"tuneline.seed": "7", "tuneline.beta": "0.1"}
    assert done.data.tags["tuneline.tenant"] == "acme"
    assert (
        runs_by_job["ftjob-b"].info.status == "FAILED" and runs_by_job["ftjob-b"].info.run_name == "ftjob-b"
    )
    assert mlflow.active_run() is None


def test_a_tracker_that_cannot_start_fails_the_run_naming_it(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("mlflow")
    from service.training import tracking

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    target = Integrations(mlflow=MlflowTarget(tracking_uri="nosuchscheme://x"))
    with pytest.raises(TrainingError, match="integrations mlflow"):
        tracking.start(target, "ftjob-c", tmp_path, {})


def test_a_wandb_key_file_that_cannot_be_read_fails_the_run_naming_it(tmp_path: Path, monkeypatch) -> None:
    """A run on Ray reads the W&B key from the file its spec names (never the key itself)."""
    pytest.importorskip("torch")
    from service.training import tracking

    for name in ("CONFIG", "CACHE", "DATA", "ARTIFACT"):
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / name))
    spec = TrainSpec.from_dict(
        {**BASE, "integrations": {"wandb": {"project": "p", "api_key_file": str(tmp_path / "missing")}}}
    )
    assert spec.integrations.wandb is not None
    assert spec.integrations.wandb.api_key_file == str(tmp_path / "missing")
    with pytest.raises(TrainingError, match=r"cannot read the W&B key file .*missing"):
        tracking.start(spec.integrations, "ftjob-k", tmp_path, {})
    (tmp_path / "empty").write_text("\n")
    empty = Integrations(wandb=WandbTarget(project="p", api_key_file=str(tmp_path / "empty")))
    with pytest.raises(TrainingError, match=r"W&B key file .*empty is empty"):
        tracking.start(empty, "ftjob-k", tmp_path, {})

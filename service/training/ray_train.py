"""A training run on Ray: ``python -m service.training.ray_train --spec SPEC.json --num-workers N ...``,
the entry point of a Ray job (submitted by ``service.core.ray_jobs``).

The driver runs the same engine as the child process (``service.training.engine.train``, same
SPEC.json) in ``num_workers`` data-parallel workers under Ray Train's ``TorchTrainer`` (DDP; gloo
on CPU, NCCL on GPU). Each worker checkpoints into its own local directory and
``RayTrainReportCallback`` hands every checkpoint to Ray Train, which persists it under
``--storage`` (``RunConfig(storage_path=...)``: a shared directory or an object-store URL) in a run
named after the Tuneline job; after a lost worker (``FailureConfig(max_failures)``), or in a later
submission for the same job, every worker resumes from the newest persisted checkpoint. Rank 0
also copies each checkpoint's model to the job's own checkpoints (``RunHooks.publish_to``), where
the job's checkpoint models are served and exported from, as for a child's run.

Progress: the rank-0 worker's protocol messages travel through a Ray queue to the driver, which
prints them to its stdout behind ``PROTOCOL_MARK``; that stdout is the Ray job's log, which the
Jobs API serves and ``service.core.ray_jobs.RayRun`` reads. Besides the child's messages
(docs/local-trainer.md) the driver may print ``{"type": "waiting", "reason": ...}`` while the
cluster cannot yet host the workers. Exit code 0 after ``finished``, 1 after ``error``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from service.core.ray_jobs import PROTOCOL_MARK
from service.training.errors import TRAINING_FAILED, TrainingError
from service.training.protocol import Emitter

log = logging.getLogger("tuneline.ray_train")

INSUFFICIENT_RESOURCES = "insufficient_resources"
RESTORED = "restored"  # under a worker's local directory: the checkpoint Ray Train handed back
RAY_CHECKPOINT_NAME = "checkpoint"  # RayTrainReportCallback's subdirectory in a Ray checkpoint
RELAY_POLL_S = 0.2
RESOURCE_POLL_S = 2.0


class QueueEmitter(Emitter):
    """The rank-0 worker's emitter: messages go to the driver through a Ray queue."""

    def __init__(self, queue: Any) -> None:
        super().__init__(sys.stderr)
        self._queue = queue

    def emit(self, kind: str, **fields: Any) -> None:
        self._queue.put({"type": kind, **fields})  # the driver's emitter cleans and encodes


class SilentEmitter(Emitter):
    """The other workers' emitter: rank 0 speaks for the run."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, kind: str, **fields: Any) -> None:
        return None


# --- inside each Ray Train worker ---------------------------------------------------------------


def _restore(checkpoint: Any, into: Path) -> Path:
    """Copy Ray Train's checkpoint to ``into/checkpoint-<step>`` (the name the engine reads the
    step from) and return that directory."""
    shutil.rmtree(into, ignore_errors=True)
    checkpoint.to_directory(str(into / "download"))
    source = into / "download" / RAY_CHECKPOINT_NAME
    state = json.loads((source / "trainer_state.json").read_text(encoding="utf-8"))
    target = into / f"checkpoint-{int(state['global_step'])}"
    os.replace(source, target)
    shutil.rmtree(into / "download", ignore_errors=True)
    return target


def _add_ray(trainer: Any) -> Any:
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    trainer.add_callback(RayTrainReportCallback())
    return prepare_trainer(trainer)


def train_worker(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: the engine in one data-parallel worker."""
    import ray.train

    from service.training.engine import RunHooks, train
    from service.training.spec import TrainSpec

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rank = ray.train.get_context().get_world_rank()
    # A fresh directory per worker process: RayTrainReportCallback reports the highest-numbered
    # checkpoint in it, so one that a previous attempt left must never be there.
    local = Path(tempfile.mkdtemp(prefix=f"{config['run_name']}-rank{rank}-"))
    emitter: Emitter = QueueEmitter(config["queue"]) if rank == 0 else SilentEmitter()
    try:
        spec = TrainSpec.from_dict(config["spec"])
        checkpoint = ray.train.get_checkpoint()
        resume_from = _restore(checkpoint, local / RESTORED) if checkpoint else None
        hooks = RunHooks(
            checkpoints_dir=local / "checkpoints",
            resume_from=resume_from,
            wrap_trainer=_add_ray,
            # Rank 0 copies each checkpoint's model to the job's checkpoints (on the shared data
            # directory), where completions and exports of ``ft:...:ckpt-step-N`` find it.
            publish_to=spec.checkpoints_dir if rank == 0 else None,
        )
        train(spec, emitter, hooks=hooks)
    except TrainingError as exc:
        # A refusal of the data or model is not a lost worker: report it and end, no restart.
        emitter.emit("error", code=exc.code, message=exc.message)
    finally:
        shutil.rmtree(local, ignore_errors=True)  # Ray Train's storage holds the checkpoints


# --- the driver ---------------------------------------------------------------------------------


def _shortfall(need: dict[str, float], have: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in need.items() if v > 0 and have.get(k, 0.0) + 1e-9 < v}


def _describe(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "nothing"


def wait_for_resources(args: argparse.Namespace, emitter: Emitter) -> None:
    """Say ``waiting`` while the cluster cannot host the workers; fail with
    ``insufficient_resources`` when it is too small and does not grow within ``resource_wait_s``.

    A cluster that is big enough but busy is waited for without limit (Ray Train queues the
    workers' placement group); that is only announced here.
    """
    import ray

    need = {"CPU": args.num_workers * args.cpus_per_worker, "GPU": args.num_workers * args.gpus_per_worker}
    deadline = time.monotonic() + args.resource_wait_s
    said = ""
    while True:
        total = _shortfall(need, ray.cluster_resources())
        if not total:
            break
        reason = (
            f"the Ray cluster is too small for {args.num_workers} workers: they need {_describe(need)}, "
            f"it has {_describe({k: ray.cluster_resources().get(k, 0.0) for k in need})}"
        )
        if time.monotonic() >= deadline:
            raise TrainingError(
                INSUFFICIENT_RESOURCES, f"{reason}; waited {args.resource_wait_s:g} s for nodes"
            )
        if reason != said:
            emitter.emit("waiting", reason=f"{reason}; waiting up to {args.resource_wait_s:g} s for nodes")
            said = reason
        time.sleep(RESOURCE_POLL_S)
    busy = _shortfall(need, ray.available_resources())
    if busy:
        emitter.emit(
            "waiting",
            reason=f"the Ray cluster is busy: the workers need {_describe(need)}, "
            f"{_describe({k: ray.available_resources().get(k, 0.0) for k in need})} free now",
        )


class Relay:
    """Moves the rank-0 worker's messages from the Ray queue to the driver's stdout.

    It takes what is queued without waiting inside the queue actor: a timed ``get`` there is an
    ``asyncio.wait_for``, which on Python 3.11 can drop an item that arrives as it times out.
    """

    def __init__(self, queue: Any, emitter: Emitter) -> None:
        self.queue = queue
        self.emitter = emitter
        self.kinds: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="protocol-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._drain():
                self._stop.wait(RELAY_POLL_S)

    def _drain(self) -> int:
        count = self.queue.qsize()  # this thread is the only consumer: that many are there
        for message in self.queue.get_nowait_batch(count) if count else []:
            kind = message.pop("type")
            self.kinds.add(kind)
            self.emitter.emit(kind, **message)
        return int(count)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()


def run(args: argparse.Namespace, emitter: Emitter) -> int:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from service.training.spec import TrainSpec

    raw = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    spec = TrainSpec.from_dict(raw)  # a bad spec fails here, before any worker starts
    ray.init(log_to_driver=True)  # the cluster this job was submitted to (RAY_ADDRESS)
    wait_for_resources(args, emitter)
    run_name = "tuneline-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in spec.job_id or "run")
    queue = Queue(actor_options={"num_cpus": 0})
    relay = Relay(queue, emitter)
    resources = {"CPU": args.cpus_per_worker}
    if args.gpus_per_worker:
        resources["GPU"] = args.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"spec": raw, "queue": queue, "run_name": run_name},
        scaling_config=ScalingConfig(
            num_workers=args.num_workers, use_gpu=args.gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=args.storage,
            failure_config=FailureConfig(max_failures=args.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=3),
        ),
    )
    try:
        trainer.fit()
    finally:
        relay.close()
    if "error" in relay.kinds:
        return 1
    if "finished" not in relay.kinds:
        raise TrainingError(TRAINING_FAILED, "the training workers ended without finishing the run")
    return 0


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tuneline training run on Ray Train")
    parser.add_argument("--spec", required=True, help="path of SPEC.json (on storage every node reads)")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--storage", required=True, help="Ray Train storage_path: shared dir or URL")
    parser.add_argument("--max-failures", type=int, default=2)
    parser.add_argument("--resource-wait-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.num_workers < 1 or not math.isfinite(args.resource_wait_s):
        parser.error("--num-workers must be >= 1 and --resource-wait-s finite")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    emitter = Emitter(sys.stdout, prefix=PROTOCOL_MARK)
    try:
        return run(args, emitter)
    except TrainingError as exc:
        emitter.emit("error", code=exc.code, message=exc.message)
    except Exception as exc:  # Ray Train gave up (restarts exhausted), or the cluster went away
        traceback.print_exc(file=sys.stderr)
        emitter.emit("error", code=TRAINING_FAILED, message=f"{type(exc).__name__}: {exc}"[:2000])
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""Webhook delivery (issue 5): delay from a job's terminal transition to the receiver's 200, and
deliveries per second to 50 receivers.

    .venv/bin/python -m tests.bench.webhooks --jobs 200 --deliveries 2000

Part 1 runs real sandbox jobs, each with a webhook to one of 50 local receivers, and takes each
job's ``stage_changed_at`` at its terminal transition (the moment the outbox row is written, in
the same transaction) and the receiver's clock when its 200 went out. Part 2 writes a burst of
deliveries into the outbox at once (the same ``queue_webhook`` the transition uses) and times
how fast the worker drains it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from service.core.webhooks.outbox import queue_webhook
from tests.bench.common import Options, median
from tests.bench.job_get import job_record
from tests.bench.pipeline import training_data
from tests.bench.stack import bench_stack, pct
from tests.support.procs import wait_until
from tests.support.receivers import HookReceiver

RECEIVERS = 50
EVENT = "fine_tuning.job.succeeded"


def run(opts: Options, jobs: int | None = None, deliveries: int | None = None) -> str:
    n_jobs = jobs or (50 if opts.quick else 200)
    n_burst = deliveries or (500 if opts.quick else 2000)
    receivers = [HookReceiver().start() for _ in range(RECEIVERS)]
    started = time.monotonic()
    try:
        with bench_stack(
            opts.workdir / "webhooks",
            concurrency=4,
            # Loopback receivers need the test-only setting, which production refuses.
            TUNELINE_ENV="test",
            TUNELINE_WEBHOOK_ALLOW_LOOPBACK="1",
            TUNELINE_POLL_INTERVAL_S="0.5",
            TUNELINE_POLL_RATE_PER_S="0",  # jobs finish sooner; deliveries do not depend on it
            TUNELINE_SANDBOX_TIME_SCALE="0.05",
        ) as stack:
            file_id = stack.upload(training_data())
            bodies = [
                {
                    "model": "gpt-4o-mini-2024-07-18",
                    "training_file": file_id,
                    "provider": "sandbox",
                    "webhook": {"url": receivers[i % RECEIVERS].url},
                }
                for i in range(n_jobs)
            ]
            job_ids = stack.create_jobs(bodies)
            records = stack.wait_terminal(job_ids, timeout=max(300.0, n_jobs * 2.0))

            def answered() -> list:  # type: ignore[type-arg]
                return [h for r in receivers for h in r.answered()]

            wait_until(lambda: len(answered()) >= n_jobs, 300, interval=0.5, what="job webhooks")
            delays = []
            for hit in answered():
                job = records.get(json.loads(hit.body)["data"]["id"])
                if job is not None and hit.answered_at is not None:
                    delays.append(hit.answered_at - float(job["stage_changed_at"]))
            before = len(answered())

            # Part 2: a burst written into the outbox at once.
            pipe = stack.store.r.pipeline(transaction=False)
            t_queue = time.time()
            for i in range(n_burst):
                job = job_record("bench")
                job["webhook"] = {"url": receivers[i % RECEIVERS].url, "events": [EVENT]}
                queue_webhook(pipe, job, EVENT, t_queue, {**job, "object": "fine_tuning.job"})
            pipe.execute()
            wait_until(
                lambda: len(answered()) >= before + n_burst,
                max(300.0, n_burst / 5),
                interval=0.5,
                what="burst delivered",
            )
            burst = sorted(h.answered_at or 0.0 for h in answered())[before:]
            load = os.getloadavg()
    finally:
        for r in receivers:
            r.stop()
    ids = [json.loads(h.body)["id"] for r in receivers for h in r.hits]
    drain_s = burst[-1] - t_queue
    # Steady rate: the middle 80 % of the burst, leaving out start-up and the tail.
    lo, hi = burst[len(burst) // 10], burst[(len(burst) * 9) // 10]
    steady = (len(burst) * 0.8) / (hi - lo) if hi > lo else float("nan")
    return "\n".join(
        [
            "## Webhook delivery (issue 5)",
            "",
            f"Command: `.venv/bin/python -m tests.bench.webhooks --jobs {n_jobs} --deliveries {n_burst}`. "
            f"{RECEIVERS} local HTTP receivers (threaded `http.server`s in the benchmark process, answering "
            "200 at once); one API (gunicorn 2 × 4), one Celery worker (prefork, concurrency 4) on every "
            "short queue, beat (outbox scan every 1 s, up to 200 due deliveries a scan), one redis-server; "
            "`TUNELINE_ENV=test` because loopback webhook URLs are refused in production. Sandbox "
            f"time scale 0.05, poll interval 0.5 s. Load average at the end: {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f}; bench wall time {time.monotonic() - started:.0f} s.",
            "",
            "| what | value |",
            "|---|---:|",
            f"| jobs (each with one `{EVENT}` webhook) | {n_jobs}, {len(delays)} deliveries matched |",
            f"| terminal transition → receiver's 200, median | {median(delays) * 1000:.0f} ms |",
            f"| terminal transition → receiver's 200, p99 | {pct(delays, 0.99) * 1000:.0f} ms |",
            f"| terminal transition → receiver's 200, max | {max(delays) * 1000:.0f} ms |",
            f"| burst written to the outbox at once | {n_burst} deliveries to {RECEIVERS} receivers |",
            f"| burst drained in | {drain_s:.1f} s ({n_burst / drain_s:.0f} deliveries/s overall) |",
            f"| steady rate (middle 80 % of the burst) | {steady:.0f} deliveries/s |",
            f"| requests received / distinct event ids | {len(ids)} / {len(set(ids))} |",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--deliveries", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneline-bench-") as tmp:
        print(run(Options(quick=False, workdir=Path(tmp)), jobs=args.jobs, deliveries=args.deliveries))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Job GET throughput (issue 4): ``GET /v1/fine_tuning/jobs/{id}`` vs a bare Flask JSON route.

Both apps run under gunicorn with identical arguments (2 workers, gthread 4 threads, access log
on); the load generator (``wrk`` when installed, else a Python thread pool) runs for a fixed time
at concurrency 16 against each target in turn, alternating the order every repetition; the table
reports medians. Tuneline's ``/healthz`` (same app, no auth, no Redis) is measured too, to split
framework/middleware cost from auth + Redis + schema cost.

``BENCH_BEFORE_TREE=/path/to/other/checkout`` adds that checkout's Tuneline as a fourth target in
the same run (same Redis, job and key; its own gunicorn with ``--chdir`` there), so an
optimisation is measured side by side with the code before it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from service.core import auth, ids
from service.core.jobs import record, states
from service.core.store import Store
from service.core.store import jobs as repo
from tests.bench.common import Options, cpu_seconds, median, service_env, start_gunicorn, worker_pids
from tests.support.procs import Proc, RedisServer, base_env, free_port

CONCURRENCY = 16
GOAL_RATIO = 0.6


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_req: float = float("nan")


def job_record(tenant: str) -> dict[str, Any]:
    """A job shaped like ``service.core.jobs.usecases.create_job`` writes it (same field list)."""
    now = time.time()
    job_id = ids.new_id("job")
    return {
        "id": job_id,
        "tenant": tenant,
        "created_at": int(now),
        "updated_at": int(now),
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": ids.new_id("file"),
        "validation_file": ids.new_id("file"),
        "test_file": None,
        "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": "auto"},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        "suffix": "bench",
        "seed": 42,
        "metadata": {"team": "research", "run": "bench-1"},
        "provider": "sandbox",
        "webhook": {
            "url": "https://hooks.example.com/tuneline",
            "events": ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"],
        },
        "max_cost_usd": 25.0,
        "estimate": {"n_epochs": 3, "billed_tokens": 1_234_567, "price_per_million": 3.0, "cost_usd": 3.7037},
        "prepare": None,
        "sandbox": None,
        "status": states.VALIDATING,
        "stage": "preparing",
        "provider_status": None,
        "provider_job_id": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "trained_tokens": None,
        "error": None,
        "result_files": [],
        "estimated_finish": None,
        "event_count": 0,
        "stage_changed_at": now,
    }


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsed wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def load_wrk(url: str, headers: dict[str, str], seconds: float) -> Result:
    args = ["wrk", "-t2", f"-c{CONCURRENCY}", f"-d{int(seconds)}s", "--latency", "--timeout", "5s"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(
        [*args, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Result(rps, p50, p99, errors)


def load_python(url: str, headers: dict[str, str], seconds: float) -> Result:
    """Fallback generator: 16 threads, each with a keep-alive httpx2 client (GIL-bound: it
    measures less than wrk would, but the same way for both targets)."""
    latencies: list[list[float]] = [[] for _ in range(CONCURRENCY)]
    errors = [0] * CONCURRENCY
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        with httpx2.Client(headers=headers, timeout=5) as client:
            while (t := time.perf_counter()) < deadline:
                try:
                    ok = client.get(url).status_code == 200
                except httpx2.HTTPError:
                    ok = False
                latencies[i].append((time.perf_counter() - t) * 1000)
                errors[i] += not ok

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    flat = sorted(x for lat in latencies for x in lat)
    if not flat:  # nothing finished in time (a warm-up on a loaded machine)
        return Result(0.0, float("nan"), float("nan"), sum(errors))
    return Result(
        len(flat) / elapsed,
        flat[len(flat) // 2],
        flat[min(len(flat) - 1, int(len(flat) * 0.99))],
        sum(errors),
    )


def in_process_cpu(reps: int, requests: int) -> dict[str, list[dict[str, Any]]]:
    """``profile_job_get.py`` figures for this checkout and, with BENCH_BEFORE_TREE, that one,
    alternating, each in a fresh interpreter."""
    script = Path(__file__).with_name("profile_job_get.py")
    trees = {"now": None, "before": os.environ.get("BENCH_BEFORE_TREE")}
    out: dict[str, list[dict[str, Any]]] = {}
    for _ in range(reps):
        for name, tree in trees.items():
            if name == "before" and not tree:
                continue
            env = {**os.environ, "PYTHONPATH": tree} if tree else dict(os.environ)
            proc = subprocess.run(
                [sys.executable, str(script), "--requests", str(requests)],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
                check=True,
            )
            out.setdefault(name, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


@contextlib.contextmanager
def rewriting(store: Store, job_id: str, every_s: float) -> Iterator[None]:
    """Rewrite a job's record (a new ``estimated_finish``) every ``every_s`` while the block runs."""
    stop = threading.Event()

    def touch(job: Any) -> None:
        job.estimated_finish = int(time.time())

    def loop() -> None:
        while not stop.wait(every_s):
            record.modify(store, job_id, touch)

    writer = threading.Thread(target=loop, daemon=True)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()


def run(opts: Options) -> str:
    seconds = 3.0 if opts.quick else 10.0
    reps = 3
    use_wrk = shutil.which("wrk") is not None
    load: Callable[[str, dict[str, str], float], Result] = load_wrk if use_wrk else load_python
    work = opts.workdir / "job_get"
    work.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(work / "redis").start()
    procs: list[Proc] = []
    try:
        store = Store.from_url(redis.url)
        _, token = auth.create_key(store, "bench", name="bench")
        job = job_record("bench")
        repo.insert(store, job, job["created_at"] * 1000)

        port = free_port()
        env = service_env(redis, work / "data", TUNELINE_PORT=str(port))
        procs.append(start_gunicorn("service.wsgi:app", env, port, work / "api.log", workers=2))
        tl = f"http://127.0.0.1:{port}"
        auth_h = {"Authorization": f"Bearer {token}"}
        resp = httpx2.get(f"{tl}/v1/fine_tuning/jobs/{job['id']}", headers=auth_h)
        resp.raise_for_status()
        body_file = work / "job.json"
        body_file.write_bytes(resp.content)

        bare_port = free_port()
        bare_env = base_env({"BENCH_BARE_JSON": str(body_file)})
        procs.append(
            start_gunicorn("tests.bench.bare_app:app", bare_env, bare_port, work / "bare.log", workers=2)
        )
        bare = f"http://127.0.0.1:{bare_port}"
        bare_resp = httpx2.get(f"{bare}/v1/fine_tuning/jobs/{job['id']}")
        bare_resp.raise_for_status()

        # The same checkout with both per-process caches off: every request reads the key and the
        # job from Redis.
        nocache_port = free_port()
        nocache_env = {
            **env,
            "TUNELINE_PORT": str(nocache_port),
            "TUNELINE_AUTH_CACHE_S": "0",
            "TUNELINE_READ_CACHE_S": "0",
        }
        procs.append(
            start_gunicorn("service.wsgi:app", nocache_env, nocache_port, work / "nocache.log", workers=2)
        )
        nocache = f"http://127.0.0.1:{nocache_port}"

        # A second job whose record another client rewrites ten times a second while it is read
        # (a worker syncing it): the reads that follow each change go to Redis.
        churned = job_record("bench")
        repo.insert(store, churned, churned["created_at"] * 1000)
        targets = {
            "tuneline": (f"{tl}/v1/fine_tuning/jobs/{job['id']}", auth_h),
            "churn": (f"{tl}/v1/fine_tuning/jobs/{churned['id']}", auth_h),
            "bare": (f"{bare}/v1/fine_tuning/jobs/{job['id']}", {"Authorization": auth_h["Authorization"]}),
            "healthz": (f"{tl}/healthz", {}),
            "nocache": (f"{nocache}/v1/fine_tuning/jobs/{job['id']}", auth_h),
        }
        before_tree = os.environ.get("BENCH_BEFORE_TREE")
        if before_tree:
            before_port = free_port()
            before_env = {**env, "TUNELINE_PORT": str(before_port), "PYTHONPATH": before_tree}
            procs.append(
                start_gunicorn(
                    "service.wsgi:app",
                    before_env,
                    before_port,
                    work / "before.log",
                    workers=2,
                    chdir=Path(before_tree),
                )
            )
            before_url = f"http://127.0.0.1:{before_port}/v1/fine_tuning/jobs/{job['id']}"
            httpx2.get(before_url, headers=auth_h).raise_for_status()
            targets["before"] = (before_url, auth_h)
        for url, headers in targets.values():  # warm every worker and connection path
            load(url, headers, 1.0)
        # Server CPU per request (gunicorn processes + redis-server): unlike req/s, it hardly
        # depends on what else the shared machine is doing.
        servers = {
            "tuneline": procs[0],
            "churn": procs[0],
            "bare": procs[1],
            "nocache": procs[2],
            "healthz": procs[0],
        }
        if "before" in targets:
            servers["before"] = procs[3]
        results: dict[str, list[Result]] = {name: [] for name in targets}
        order = list(targets)
        for rep in range(reps):
            for name in order[rep % len(order) :] + order[: rep % len(order)]:
                url, headers = targets[name]
                pids = [servers[name].pid, *worker_pids(servers[name].pid)]
                if redis.proc is not None:
                    pids.append(redis.proc.pid)
                cpu = cpu_seconds(pids)
                with rewriting(store, churned["id"], 0.1) if name == "churn" else contextlib.nullcontext():
                    result = load(url, headers, seconds)
                result.cpu_ms_per_req = (cpu_seconds(pids) - cpu) * 1000 / max(1.0, result.rps * seconds)
                results[name].append(result)
    finally:
        for proc in procs:
            proc.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    def med(name: str, attr: str) -> float:
        return median(getattr(r, attr) for r in results[name])

    ratio = med("tuneline", "rps") / med("bare", "rps")
    # Paired: each repetition's two runs are adjacent in time, so their ratio cancels slow drifts
    # in the machine's load; the median of those is the headline figure.
    paired = [t.rps / b.rps for t, b in zip(results["tuneline"], results["bare"], strict=True)]
    paired_ratio = median(paired)
    verdict = "met" if paired_ratio >= GOAL_RATIO else "**NOT met**"
    gen = (
        f"`wrk -t2 -c{CONCURRENCY} -d{int(seconds)}s --latency`"
        if use_wrk
        else f"a Python thread pool ({CONCURRENCY} threads, keep-alive `httpx2` clients; `wrk` not installed)"
    )
    labels = {
        "tuneline": "Tuneline `GET /v1/fine_tuning/jobs/{id}` (auth hook, key cache on, job record from "
        "tracked reads: no Redis round trip while it is unchanged; request log)",
        "churn": "the same route, the job's record rewritten 10 times a second by another client "
        "during the run",
        "nocache": "the same route with `TUNELINE_AUTH_CACHE_S=0 TUNELINE_READ_CACHE_S=0` (two Redis "
        "reads: the key, then the job)",
        "bare": "bare Flask route, same JSON body, same gunicorn arguments",
        "healthz": "Tuneline `GET /healthz` (same app; no auth, no Redis)",
    }
    if "before" in results:
        labels["before"] = f"the same route served by `{os.environ.get('BENCH_BEFORE_TREE')}` (before)"
    out = [
        "## Job GET throughput (issues 4, 12, 15)",
        "",
        f"gunicorn `--workers 2 --threads 4` (gthread) and access log on, for both apps; production "
        f"settings (INFO JSON request log). Load: {gen}, {seconds:.0f} s per run, concurrency "
        f"{CONCURRENCY}, {reps} repetitions alternating the order of targets, after a 1 s warm-up each; "
        f"medians shown. The load generator shares the machine's CPUs with the server. "
        f"Response body {len(resp.content)} bytes (Tuneline) vs {len(bare_resp.content)} bytes (bare).",
        "",
        "| target | req/s (median) | p50 ms | p99 ms | ratio to bare | runs req/s | errors "
        "| server CPU ms/req |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    bare_rps = med("bare", "rps")
    for name, label in labels.items():
        runs = ", ".join(f"{r.rps:.0f}" for r in results[name])
        errs = sum(r.errors for r in results[name])
        out.append(
            f"| {label} | {med(name, 'rps'):.0f} | {med(name, 'p50_ms'):.2f} | "
            f"{med(name, 'p99_ms'):.2f} | {med(name, 'rps') / bare_rps:.2f} | {runs} | {errs} | "
            f"{med(name, 'cpu_ms_per_req'):.2f} |"
        )
    if "before" in results:
        before_paired = [t.rps / b.rps for t, b in zip(results["before"], results["bare"], strict=True)]
        out += [
            "",
            f"Before (same run): median per-repetition ratio to bare **{median(before_paired):.2f}** "
            f"(runs: {', '.join(f'{x:.2f}' for x in before_paired)}); p99 {med('before', 'p99_ms'):.2f} ms "
            f"before vs {med('tuneline', 'p99_ms'):.2f} ms now.",
        ]
    cpu_line = (
        f"Server CPU per request (gunicorn master + workers + redis-server, user + system, median): "
        f"Tuneline {med('tuneline', 'cpu_ms_per_req'):.2f} ms, bare {med('bare', 'cpu_ms_per_req'):.2f} ms: "
        f"CPU ratio bare/Tuneline **{med('bare', 'cpu_ms_per_req') / med('tuneline', 'cpu_ms_per_req'):.2f}**"
    )
    if "before" in results:
        cpu_line += (
            f"; before {med('before', 'cpu_ms_per_req'):.2f} ms (ratio "
            f"{med('bare', 'cpu_ms_per_req') / med('before', 'cpu_ms_per_req'):.2f})"
        )
    out += ["", cpu_line + ". Less sensitive to the machine's other load than req/s."]
    cpu = in_process_cpu(3, 1000 if opts.quick else 3000)
    out += [
        "",
        "In-process CPU per request (`tests/bench/profile_job_get.py`: Flask test client, no sockets to the "
        "client, this process's CPU time + redis-server's; 3 fresh interpreters per checkout, alternating; "
        "medians):",
        "",
        "| checkout | job GET µs | job GET, cache off µs | /healthz µs | bare Flask µs | bare / job GET |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in cpu.items():
        job_us = median(r["job_get_us"] for r in runs)
        bare_us = median(r["bare_us"] for r in runs)
        label = "this checkout" if name == "now" else f"`{os.environ.get('BENCH_BEFORE_TREE')}` (before)"
        nocache = [r["job_get_nocache_us"] for r in runs if "job_get_nocache_us" in r]
        out.append(
            f"| {label} (hiredis {'on' if runs[0].get('hiredis') else 'off'}) | {job_us:.0f} | "
            f"{f'{median(nocache):.0f}' if nocache else '—'} | "
            f"{median(r['healthz_us'] for r in runs):.0f} | {bare_us:.0f} | {bare_us / job_us:.2f} |"
        )
    out += [
        "",
        f"Job GET / bare Flask throughput ratio, median of the per-repetition ratios: **{paired_ratio:.2f}** "
        f"(runs: {', '.join(f'{x:.2f}' for x in paired)}; ratio of the medians: {ratio:.2f}); "
        f"goal ≥ {GOAL_RATIO}: {verdict}.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover - manual use
    print(json.dumps(job_record("bench"), indent=1))

"""Upload benchmark (issue 2): a big multipart ``POST /v1/files`` must stream to disk.

Measures the gunicorn worker's RSS while a large file is uploaded (sampled every 20 ms; the goal
is growth under 64 MB, whatever the file size) and the upload throughput as a ratio to ``cp`` of
the same file on the same filesystem, median of several alternating repetitions.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import psutil

from service.core import auth
from service.core.store import Store
from tests.bench.common import MB, MIB, Options, RssSampler, median, service_env, worker_pids
from tests.support.procs import RedisServer, free_port, start_api

GOAL_GROWTH_MB = 64
CHUNK = 1 * MIB


def make_dataset(path: Path, size: int, seed: int = 2) -> None:
    """A JSONL file of ``size`` bytes: a few MB of varied rows repeated (content is irrelevant
    to the upload path, but realistic lines keep the multipart parser's work realistic)."""
    rng = random.Random(seed)
    words = [
        "fund",
        "index",
        "bond",
        "equity",
        "market",
        "risk",
        "return",
        "yield",
        "portfolio",
        "基金",
        "指数",
        "债券",
        "股票",
        "风险",
        "收益",
        "配置",
        "分红",
        "波动",
        "通胀",
    ]
    rows = []
    for i in range(20_000):
        prompt = f"Q{i}: " + " ".join(rng.choices(words, k=rng.randint(5, 25)))
        completion = " ".join(rng.choices(words, k=rng.randint(10, 60)))
        rows.append(json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False))
    block = ("\n".join(rows) + "\n").encode()
    with path.open("wb") as f:
        written = 0
        while written < size:
            part = block[: size - written]
            f.write(part)
            written += len(part)


def multipart(path: Path, size: int, boundary: str) -> tuple[Iterator[bytes], int]:
    """A streamed multipart body (purpose + file) and its exact length: the client never holds
    more than one chunk of the file."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
        yield tail

    return body(), len(head) + size + len(tail)


def upload(client: httpx2.Client, base: str, token: str, path: Path) -> tuple[float, str]:
    size = path.stat().st_size
    boundary = secrets.token_hex(16)
    body, length = multipart(path, size, boundary)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Length": str(length),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    t = time.perf_counter()
    resp = client.post(f"{base}/v1/files", content=body, headers=headers)
    dt = time.perf_counter() - t
    if resp.status_code != 200:
        raise RuntimeError(f"upload failed: {resp.status_code} {resp.text[:300]}")
    record = resp.json()
    if record["bytes"] != size:
        raise RuntimeError(f"server stored {record['bytes']} bytes, sent {size}")
    return dt, record["id"]


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - t


def run(opts: Options) -> str:
    size = (64 if opts.quick else 300) * MB
    reps = 3
    work = opts.workdir / "upload"
    work.mkdir(parents=True, exist_ok=True)
    src = work / "bench-upload.jsonl"
    data_dir = work / "data"  # same filesystem as the source file, like the cp baseline
    make_dataset(src, size)
    os.sync()  # the generator's dirty pages must not be flushed inside a timed copy
    redis = RedisServer(work / "redis").start()
    api = None
    try:
        port = free_port()
        env = service_env(redis, data_dir, TUNELINE_MAX_UPLOAD_BYTES=str(size * 2), TUNELINE_PORT=str(port))
        api = start_api(env, port, work / "api.log", workers=1)
        base = f"http://127.0.0.1:{port}"
        _, token = auth.create_key(Store.from_url(redis.url), "bench", name="bench")
        pids = worker_pids(api.pid)
        if len(pids) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {pids}")
        me = psutil.Process()
        rows = []
        cp_s: list[float] = []
        cp_sync_s: list[float] = []
        up_s: list[float] = []
        with httpx2.Client(timeout=600) as client:
            # Warm-up: import and exercise the upload path once with a small file.
            small = work / "warm.jsonl"
            make_dataset(small, 2 * MB)
            _, fid = upload(client, base, token, small)
            client.delete(f"{base}/v1/files/{fid}", headers={"Authorization": f"Bearer {token}"})
            first_baseline = None
            for rep in range(reps):
                dst = work / "cp-copy.jsonl"
                cp_s.append(timed(["cp", str(src), str(dst)]))
                dst.unlink()
                cp_sync_s.append(timed(["sh", "-c", f"cp '{src}' '{dst}' && sync '{dst}'"]))
                dst.unlink()
                with RssSampler(lambda: pids) as idle:
                    time.sleep(0.5)
                baseline = idle.median
                first_baseline = first_baseline or baseline
                client_before = me.memory_info().rss
                worker = psutil.Process(pids[0])
                cpu0, my_cpu0 = sum(worker.cpu_times()[:2]), sum(me.cpu_times()[:2])
                with RssSampler(lambda: pids) as during, RssSampler(lambda: [me.pid]) as client_rss:
                    dt, fid = upload(client, base, token, src)
                worker_cpu = sum(worker.cpu_times()[:2]) - cpu0
                client_cpu = sum(me.cpu_times()[:2]) - my_cpu0
                up_s.append(dt)
                rows.append(
                    {
                        "rep": rep + 1,
                        "baseline": baseline,
                        "peak": during.peak,
                        "growth": during.peak - baseline,
                        "samples": len(during.samples),
                        "seconds": dt,
                        "client_growth": client_rss.peak - client_before,
                        "worker_cpu": worker_cpu,
                        "client_cpu": client_cpu,
                    }
                )
                resp = client.delete(f"{base}/v1/files/{fid}", headers={"Authorization": f"Bearer {token}"})
                resp.raise_for_status()
        leftovers = list((data_dir / "tmp").glob("*")) if (data_dir / "tmp").exists() else []
    finally:
        if api is not None:
            api.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    size_mb = size / MB
    up_med, cp_med, cps_med = median(up_s), median(cp_s), median(cp_sync_s)
    up_rate, cp_rate, cps_rate = size_mb / up_med, size_mb / cp_med, size_mb / cps_med
    max_growth = max(r["growth"] for r in rows) / MIB
    out = [
        "## Upload: `POST /v1/files` of a large file (issue 2)",
        "",
        f"{size_mb:.0f} MB JSONL file, multipart body streamed from disk by an `httpx2` client with an "
        "exact `Content-Length`; gunicorn with **1 worker** (gthread, 4 threads), production settings, "
        "`TUNELINE_DATA_DIR` on the same filesystem as the source file. Worker RSS sampled every 20 ms "
        f"by psutil; baseline = median RSS over 0.5 s idle just before each upload. {reps} repetitions, "
        "alternating `cp`, `cp && sync FILE` and the upload.",
        "",
        "| rep | worker RSS baseline MiB | peak MiB | growth MiB | samples | upload s "
        "| worker CPU s | client CPU s | client RSS growth MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['rep']} | {r['baseline'] / MIB:.1f} | {r['peak'] / MIB:.1f} | "
            f"{r['growth'] / MIB:.1f} | {r['samples']} | {r['seconds']:.2f} | {r['worker_cpu']:.2f} | "
            f"{r['client_cpu']:.2f} | {r['client_growth'] / MIB:.1f} |"
        )
    verdict = "met" if max_growth < GOAL_GROWTH_MB else "**NOT met**"
    out += [
        "",
        f"Peak worker RSS growth: **{max_growth:.1f} MiB** (worst repetition; goal < {GOAL_GROWTH_MB} MB: "
        f"{verdict}). Peak over the first baseline: "
        f"{(max(r['peak'] for r in rows) - (first_baseline or 0)) / MIB:.1f} MiB.",
        "",
        "| what (median of 3) | seconds | MB/s | ratio to `cp` |",
        "|---|---:|---:|---:|",
        f"| `cp` same file, same disk (page cache, no fsync) | {cp_med:.2f} | {cp_rate:.0f} | 1.00 |",
        f"| `cp && sync FILE` (data on disk) | {cps_med:.2f} | {cps_rate:.0f} | {cps_rate / cp_rate:.2f} |",
        f"| upload via HTTP (parse multipart, sha256, write, fsync, rename) | {up_med:.2f} | {up_rate:.0f} | "
        f"**{up_rate / cp_rate:.2f}** |",
        "",
        f"Upload throughput vs `cp && sync`: **{up_rate / cps_rate:.2f}**. The worker's CPU time "
        "(user + system) next to the upload's wall time shows whether the worker process is the "
        "bottleneck. "
        f"Spool files left in the data dir's tmp/ after the run: {len(leftovers)}.",
        "",
    ]
    return "\n".join(out)

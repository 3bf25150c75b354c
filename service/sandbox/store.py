"""The sandbox's state in Redis: its key names and every read and write of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from service.core.store import Store
from service.core.store import keys as tuneline_keys
from service.core.store.base import Change, Pipeline, dumps, loads

# The sandbox keeps its keys apart from Tuneline's, under one prefix (benchmarks size them by it).
PREFIX = f"{tuneline_keys.PREFIX}:sandbox"
JOB_READS_KEPT = 10_000


def _job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def _jobs() -> str:
    return f"{PREFIX}:jobs"


def _file(file_id: str) -> str:
    return f"{PREFIX}:file:{file_id}"


def _files() -> str:
    return f"{PREFIX}:files"


def _creates() -> str:
    return f"{PREFIX}:count:creates"


def _read_fault(job_id: str, kind: str) -> str:
    """Remaining injected read failures (``rate_limit`` or ``server_errors``) of a job."""
    return f"{PREFIX}:job:{job_id}:fault:{kind}"


def _slow_in_flight() -> str:
    """Hash: operation -> requests now held open by injected slowness."""
    return f"{PREFIX}:slow_in_flight"


def _account_faults() -> str:
    """JSON: fault injection for the whole sandbox account (e.g. slow uploads)."""
    return f"{PREFIX}:account_faults"


def _creates_by_tuneline_job() -> str:
    """Hash: Tuneline job id -> sandbox jobs created for it (tests prove exactly-once)."""
    return f"{PREFIX}:creates_by_tuneline_job"


def _job_reads() -> str:
    """Capped list of the times the sandbox answered a poll's read (tests check poll rates)."""
    return f"{PREFIX}:job_reads"


def _calls() -> str:
    """Hash: operation (``jobs.list``, ``jobs.retrieve``, ...) -> calls answered (tests count them)."""
    return f"{PREFIX}:count:calls"


def _create_attempts() -> str:
    """Hash: Tuneline job id -> create calls seen, created or not (drives ``create_fault``)."""
    return f"{PREFIX}:create_attempts"


class SandboxStore:
    """Files, jobs, fault counters and statistics of the simulated account."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.r = store.r

    # ---- files -----------------------------------------------------------------------------

    def save_file(self, record: dict[str, Any], created_ms: float) -> None:
        pipe = self.r.pipeline(transaction=True)
        self.queue_file(pipe, record, created_ms)
        pipe.execute()

    @staticmethod
    def queue_file(pipe: Pipeline, record: dict[str, Any], created_ms: float) -> None:
        """Add a file inside a caller's MULTI; a file already there is kept as it is."""
        pipe.set(_file(record["id"]), dumps(record), nx=True)
        pipe.zadd(_files(), {record["id"]: created_ms}, nx=True)

    def load_file(self, file_id: str) -> dict[str, Any] | None:
        return loads(self.r.get(_file(file_id)))  # type: ignore[arg-type, no-any-return]

    def walk_files(
        self, after: str | None, limit: int, keep: Callable[[dict[str, Any]], bool] | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of files, newest first."""
        return self.store.walk(
            _files(), after, limit, lambda ids: self.store.load_many([_file(i) for i in ids]), keep
        )

    # ---- jobs ------------------------------------------------------------------------------

    def insert_job(self, job: dict[str, Any], tuneline_job: str | None, read_faults: dict[str, int]) -> None:
        """Store a new job, count its create, and arm its read faults, in one MULTI."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(_job(job["id"]), dumps(job))
        pipe.zadd(_jobs(), {job["id"]: job["created_at_f"] * 1000})
        pipe.incr(_creates())
        if tuneline_job:
            pipe.hincrby(_creates_by_tuneline_job(), tuneline_job, 1)
        for kind, count in read_faults.items():
            if count:
                pipe.set(_read_fault(job["id"], kind), count)
        pipe.execute()

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        return loads(self.r.get(_job(job_id)))  # type: ignore[arg-type, no-any-return]

    def load_jobs(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        """Jobs in one round trip (None where there is no such job)."""
        return self.store.load_many([_job(j) for j in job_ids])

    def update_job(self, job_id: str, change: Change) -> dict[str, Any] | None:
        """Read-modify-write of a job (see ``Store.update_json``); None when there is no such job."""
        return self.store.update_json(_job(job_id), change)

    def walk_jobs(
        self,
        after: str | None,
        limit: int,
        load_many: Callable[[list[str]], list[Any]],
        keep: Callable[[dict[str, Any]], bool],
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of jobs, newest first, each read through ``load_many``."""
        return self.store.walk(_jobs(), after, limit, load_many, keep)

    def take_read_fault(self, job_id: str, kind: str) -> bool:
        """Use up one injected read failure of ``kind``; False once none is left."""
        return int(self.r.decr(_read_fault(job_id, kind))) >= 0  # type: ignore[arg-type]

    def count_create_attempt(self, tuneline_job: str) -> int:
        """The number of this create call among those for the same Tuneline job (1 = first)."""
        return int(self.r.hincrby(_create_attempts(), tuneline_job, 1))  # type: ignore[arg-type]

    def record_job_read(self, at: float, operation: str) -> None:
        """Count a read a poll makes (a job retrieve, list, events or checkpoints) and keep its time."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(_calls(), operation, 1)
        pipe.lpush(_job_reads(), repr(at))
        pipe.ltrim(_job_reads(), 0, JOB_READS_KEPT - 1)
        pipe.execute()

    # ---- account-wide faults and statistics ------------------------------------------------

    def account_faults(self) -> dict[str, Any]:
        return loads(self.r.get(_account_faults())) or {}  # type: ignore[arg-type]

    def set_account_faults(self, faults: dict[str, Any]) -> None:
        self.r.set(_account_faults(), dumps(faults))

    def hold(self, operation: str, delta: int) -> None:
        """Count a request of ``operation`` held open by slowness (+1) or released (-1)."""
        self.r.hincrby(_slow_in_flight(), operation, delta)

    def stats(self) -> dict[str, Any]:
        pipe = self.r.pipeline(transaction=False)
        pipe.get(_creates())
        pipe.hgetall(_creates_by_tuneline_job())
        pipe.lrange(_job_reads(), 0, -1)
        pipe.hgetall(_slow_in_flight())
        pipe.hgetall(_calls())
        creates, by_job, reads, in_flight, calls = pipe.execute()
        return {
            "creates": int(creates or 0),
            "creates_by_tuneline_job": _ints(by_job.items()),
            # Wall-clock times of the latest reads polls make (retrieve, list, events, checkpoints),
            # oldest first; ``calls`` counts them by operation.
            "job_reads": [float(t) for t in reversed(reads)],
            "calls": _ints(calls.items()),
            "slow_in_flight": {k: v for k, v in _ints(in_flight.items()).items() if v},
        }


def _ints(pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    return {k: int(v) for k, v in pairs}

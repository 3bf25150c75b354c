"""Typed settings read from ``TUNELINE_*`` environment variables, failing fast."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROVIDERS = ("openai", "azure", "sandbox", "local")
TRAIN_DEVICES = ("auto", "cpu", "cuda")
TRAIN_EXECUTORS = ("process", "ray")  # how a local job trains (DESIGN §13; docs/ray.md)
ENVIRONMENTS = ("production", "development", "test")
DEFAULT_DATA_DIR = Path("./var/data")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _word(name: str, raw: str) -> str:
    return raw.strip().lower()


def _paths(name: str, raw: str) -> tuple[Path, ...]:
    return tuple(Path(part) for part in raw.split(os.pathsep) if part.strip())


# How a raw variable becomes a value, by the type of the field's default (bool before int).
_PARSERS: dict[type, Callable[[str, str], Any]] = {
    bool: _bool,
    int: _int,
    float: _float,
    str: lambda name, raw: raw,
    Path: lambda name, raw: Path(raw),
    tuple: _paths,
}


def setting(
    default: Any,
    *,
    parse: Callable[[str, str], Any] | None = None,
    minimum: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
    fallback: str | None = None,
) -> Any:
    """Declare one setting: its default and how ``TUNELINE_<FIELD>`` is parsed and bounded.

    ``minimum`` / ``above`` are inclusive / exclusive lower bounds; ``choices`` the allowed
    values (an empty default means optional); ``secret`` masks it in ``repr`` and
    ``safe_dict``; ``fallback`` names a variable read when ``TUNELINE_<FIELD>`` is unset or empty.
    """
    spec = {
        "parse": parse or next(fn for kind, fn in _PARSERS.items() if isinstance(default, kind)),
        "minimum": minimum,
        "above": above,
        "choices": choices,
        "fallback": fallback,
    }
    return field(default=default, repr=not secret, metadata=spec)


def variable(name: str) -> str:
    """The environment variable of the field ``name``."""
    return f"TUNELINE_{name.upper()}"


@dataclass(frozen=True)
class Settings:
    """Everything the service and workers read from the environment, in one typed object.

    Each field is ``TUNELINE_<FIELD NAME>``; ``from_env`` and ``validated`` loop over the fields.
    """

    env: str = setting("production", parse=_word, choices=ENVIRONMENTS)
    redis_url: str = setting("redis://127.0.0.1:6379/0")
    broker_url: str = setting("")
    data_dir: Path = setting(DEFAULT_DATA_DIR)  # noqa: RUF009 - setting() returns a field()
    port: int = setting(8000, minimum=1)
    secret_key: str = setting("", secret=True)
    default_provider: str = setting("", parse=_word, choices=PROVIDERS)
    sandbox_url: str = setting("")
    sandbox_api_key: str = setting("sandbox-key", secret=True)
    sandbox_time_scale: float = setting(1.0)
    webhook_allow_loopback: bool = setting(False)
    max_upload_bytes: int = setting(512 * 1024 * 1024, minimum=1)
    metrics_enabled: bool = setting(False)
    log_level: str = setting("INFO")
    poll_interval_s: float = setting(10.0)
    # How long a poll holds its job's lock: longer than one poll's provider calls; it bounds how
    # long a job waits after the worker polling it was killed.
    poll_lock_s: int = setting(90, minimum=1)
    # Provider calls of polls per second per provider account (0: unlimited).
    poll_rate_per_s: float = setting(10.0, minimum=0)
    # A running job's events and checkpoints are read this often when its status did not change
    # (the account's list cannot tell that they grew); a status change reads them at once.
    poll_detail_interval_s: float = setting(60.0, minimum=0)
    # The broker's redelivery delay for an unacknowledged message: the longest short task (a
    # provider upload of a large file) must finish well inside it; training acknowledges early
    # and holds its own lease instead (DESIGN §5).
    visibility_timeout_s: int = setting(3600, minimum=1)
    # How long an API process may trust a key it looked up (0: every request reads Redis). With
    # tracked reads a revoke is seen at once and this bounds only a tracking failure; without,
    # a revoked key stops working within this many seconds.
    auth_cache_s: float = setting(1.0, minimum=0)
    # How long an API process may serve a job record it read while Redis reports no change to it
    # (server-assisted tracking of job records and API keys, ``service/core/store/tracked.py``;
    # 0: tracking off, every job read goes to Redis).
    read_cache_s: float = setting(5.0, minimum=0)
    eval_concurrency: int = setting(4, minimum=1)  # parallel completions while evaluating one job
    eval_rate_per_s: float = setting(10.0, above=0)  # completions started per second, one job
    openai_api_key: str = setting("", secret=True, fallback="OPENAI_API_KEY")
    openai_base_url: str = setting("")
    azure_openai_endpoint: str = setting("")
    azure_openai_api_key: str = setting("", secret=True)
    azure_openai_api_version: str = setting("2024-10-21")
    # Local trainer (DESIGN §6): the training worker's lease, restarts and device.
    train_lease_s: int = setting(60, minimum=2)
    train_max_restarts: int = setting(3, minimum=0)
    train_max_per_tenant: int = setting(0, minimum=0)  # concurrent trainings per tenant (0: no limit)
    train_device: str = setting("auto", parse=_word)
    train_threads: int = setting(0, minimum=0)  # 0: the library's default
    train_python: str = setting("")  # interpreter for the training child; default: the worker's own
    # The executor of local jobs that do not choose one (their ``compute.executor``).
    train_executor: str = setting("process", parse=_word, choices=TRAIN_EXECUTORS)
    ray_address: str = setting("")  # the Ray head's dashboard URL (its Jobs API), for executor ray
    # Ray Train's checkpoint storage: a directory every Ray node mounts, or an object-store URL;
    # empty means ``<data_dir>/ray`` (see ``ray_storage_path``).
    ray_storage: str = setting("")
    infer_timeout_s: int = setting(120, minimum=1)
    infer_cache_models: int = setting(2, minimum=1)  # models an infer worker keeps loaded (LRU)
    export_timeout_s: int = setting(3600, minimum=10)  # one export build (merged or GGUF)
    # Experiment trackers of local jobs (``integrations``, docs/local-trainer.md). W&B runs log
    # offline (files under the job's output directory) unless a key is set; the key reaches only
    # the training child's environment. MLflow: empty means a SQLite store under ``<data_dir>/mlflow``.
    wandb_api_key: str = setting("", secret=True)
    wandb_base_url: str = setting("")  # a W&B server of your own; empty: W&B's default
    mlflow_tracking_uri: str = setting("")
    # Directories a local job may name as its base model; empty means ``<data_dir>/models``.
    local_model_roots: tuple[Path, ...] = setting(())
    # Python graders run the caller's code (sandboxed, docs/graders.md): off unless the operator says so.
    python_grader_enabled: bool = setting(False)
    python_grader_timeout_s: float = setting(30.0, above=0)
    python_grader_memory_mb: int = setting(2048, minimum=64)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``TUNELINE_*`` variables; raise SettingsError on bad values."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = variable(f.name)
            raw = env.get(name)
            if not raw and f.metadata["fallback"]:
                # The provider's own convention, honoured so existing deployments just work.
                raw = env.get(f.metadata["fallback"]) or raw
            if raw is not None:
                values[f.name] = f.metadata["parse"](name, raw)
        return cls(**values).validated()

    @property
    def model_roots(self) -> tuple[Path, ...]:
        """Where local base models may live (absolute, resolved)."""
        roots = self.local_model_roots or (self.data_dir / "models",)
        return tuple(root.resolve() for root in roots)

    @property
    def ray_storage_path(self) -> str:
        """Ray Train's ``storage_path`` for the ray executor: absolute, or the URL as given."""
        if "://" in self.ray_storage:
            return self.ray_storage
        return str(Path(self.ray_storage or self.data_dir / "ray").resolve())

    def validated(self) -> Settings:
        """Return self after checking bounds and cross-field rules; raise SettingsError naming
        the variable."""
        for f in fields(self):
            self._check(f.name, getattr(self, f.name), f.default, f.metadata)
        if self.train_device not in TRAIN_DEVICES and not re.fullmatch(r"cuda:\d+", self.train_device):
            raise SettingsError(
                f"TUNELINE_TRAIN_DEVICE must be auto, cpu, cuda or cuda:N, got {self.train_device!r}"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"TUNELINE_REDIS_URL must be a redis:// URL, got {self.redis_url!r}")
        if self.ray_address and not self.ray_address.startswith(("http://", "https://")):
            raise SettingsError(
                "TUNELINE_RAY_ADDRESS must be the Ray dashboard's URL (its Jobs API), "
                f"e.g. http://ray-head:8265, got {self.ray_address!r}"
            )
        if self.env == "production" and not self.secret_key:
            raise SettingsError(
                "TUNELINE_SECRET_KEY is required in production (a Fernet key: "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            )
        if self.secret_key:
            from cryptography.fernet import Fernet

            try:
                Fernet(self.secret_key.encode())
            except ValueError:
                raise SettingsError(
                    "TUNELINE_SECRET_KEY must be a urlsafe-base64 32-byte Fernet key"
                ) from None
        if self.webhook_allow_loopback and self.env == "production":
            raise SettingsError("TUNELINE_WEBHOOK_ALLOW_LOOPBACK is for development and tests only")
        return self

    @staticmethod
    def _check(name: str, value: Any, default: Any, spec: Mapping[str, Any]) -> None:
        var = variable(name)
        unset = value == default == ""  # an optional choice left empty
        if spec["choices"] and not unset and value not in spec["choices"]:
            raise SettingsError(f"{var} must be one of {', '.join(spec['choices'])}, got {value!r}")
        if spec["minimum"] is not None and value < spec["minimum"]:
            raise SettingsError(f"{var} must be >= {spec['minimum']}, got {value}")
        if spec["above"] is not None and value <= spec["above"]:
            raise SettingsError(f"{var} must be > {spec['above']}, got {value}")

    @property
    def effective_mlflow_tracking_uri(self) -> str:
        """Where local jobs' MLflow runs go: the setting, else a SQLite store in the data directory."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def poll_burst(self) -> int:
        """Provider calls an idle account may make at once: one second's worth of its rate."""
        return max(1, int(self.poll_rate_per_s))

    @property
    def effective_sandbox_url(self) -> str:
        return self.sandbox_url or f"http://127.0.0.1:{self.port}/sandbox/v1"

    @property
    def provider_default(self) -> str:
        """DESIGN §9: the configured default, else openai when a key is set, else sandbox."""
        if self.default_provider:
            return self.default_provider
        return "openai" if self.openai_api_key else "sandbox"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes).validated()

    def safe_dict(self) -> dict[str, Any]:
        """Settings for logs and diagnostics, secrets masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "***" if value else ""
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

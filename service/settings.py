"""Typed settings read from ``TUNELINE_*`` environment variables, failing fast."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROVIDERS = ("openai", "azure", "sandbox", "local")
TRAIN_DEVICES = ("auto", "cpu", "cuda")
ENVIRONMENTS = ("production", "development", "test")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """Everything the service and workers read from the environment, in one typed object."""

    env: str = "production"
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""
    data_dir: Path = Path("./var/data")
    port: int = 8000
    secret_key: str = field(default="", repr=False)
    default_provider: str = ""
    sandbox_url: str = ""
    sandbox_api_key: str = field(default="sandbox-key", repr=False)
    sandbox_time_scale: float = 1.0
    webhook_allow_loopback: bool = False
    max_upload_bytes: int = 512 * 1024 * 1024
    metrics_enabled: bool = False
    log_level: str = "INFO"
    poll_interval_s: float = 10.0
    poll_rate_per_s: float = 10.0  # polls per second per provider account (0: unlimited)
    visibility_timeout_s: int = 3600
    stuck_after_s: int = 900
    eval_concurrency: int = 4  # parallel completions while evaluating one job
    eval_rate_per_s: float = 10.0  # completions started per second while evaluating one job
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    azure_openai_endpoint: str = ""
    azure_openai_api_key: str = field(default="", repr=False)
    azure_openai_api_version: str = "2024-10-21"
    # Local trainer (DESIGN §6): the training worker's lease, restarts and device.
    train_lease_s: int = 60
    train_max_restarts: int = 3
    train_device: str = "auto"
    train_threads: int = 0  # 0: the library's default
    train_python: str = ""  # interpreter for the training child; default: the worker's own
    infer_timeout_s: int = 120
    # Directories a local job may name as its base model; empty means ``<data_dir>/models``.
    local_model_roots: tuple[Path, ...] = ()
    # Python graders run the caller's code (sandboxed, docs/graders.md): off unless the operator says so.
    python_grader_enabled: bool = False
    python_grader_timeout_s: float = 30.0
    python_grader_memory_mb: int = 2048

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``TUNELINE_*`` variables; raise SettingsError on bad values."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            return env.get(f"TUNELINE_{name}", default)

        values: dict[str, Any] = {}
        if "TUNELINE_ENV" in env:
            values["env"] = get("ENV").strip().lower()
        for name in (
            "REDIS_URL",
            "BROKER_URL",
            "SECRET_KEY",
            "SANDBOX_URL",
            "SANDBOX_API_KEY",
            "OPENAI_BASE_URL",
            "AZURE_OPENAI_ENDPOINT",
            "AZURE_OPENAI_API_KEY",
            "AZURE_OPENAI_API_VERSION",
            "LOG_LEVEL",
        ):
            if f"TUNELINE_{name}" in env:
                values[name.lower()] = get(name)
        if "TUNELINE_DEFAULT_PROVIDER" in env:
            values["default_provider"] = get("DEFAULT_PROVIDER").strip().lower()
        if "TUNELINE_DATA_DIR" in env:
            values["data_dir"] = Path(get("DATA_DIR"))
        if "TUNELINE_PORT" in env:
            values["port"] = _int("TUNELINE_PORT", get("PORT"), 1)
        if "TUNELINE_MAX_UPLOAD_BYTES" in env:
            values["max_upload_bytes"] = _int("TUNELINE_MAX_UPLOAD_BYTES", get("MAX_UPLOAD_BYTES"), 1)
        if "TUNELINE_VISIBILITY_TIMEOUT_S" in env:
            values["visibility_timeout_s"] = _int(
                "TUNELINE_VISIBILITY_TIMEOUT_S", get("VISIBILITY_TIMEOUT_S"), 1
            )
        for name, minimum in (
            ("TRAIN_LEASE_S", 2),
            ("TRAIN_MAX_RESTARTS", 0),
            ("TRAIN_THREADS", 0),
            ("INFER_TIMEOUT_S", 1),
        ):
            if f"TUNELINE_{name}" in env:
                values[name.lower()] = _int(f"TUNELINE_{name}", get(name), minimum)
        if "TUNELINE_TRAIN_DEVICE" in env:
            values["train_device"] = get("TRAIN_DEVICE").strip().lower()
        if "TUNELINE_TRAIN_PYTHON" in env:
            values["train_python"] = get("TRAIN_PYTHON")
        if "TUNELINE_LOCAL_MODEL_ROOTS" in env:
            values["local_model_roots"] = tuple(
                Path(part) for part in get("LOCAL_MODEL_ROOTS").split(os.pathsep) if part.strip()
            )
        if "TUNELINE_STUCK_AFTER_S" in env:
            values["stuck_after_s"] = _int("TUNELINE_STUCK_AFTER_S", get("STUCK_AFTER_S"), 1)
        if "TUNELINE_EVAL_CONCURRENCY" in env:
            values["eval_concurrency"] = _int("TUNELINE_EVAL_CONCURRENCY", get("EVAL_CONCURRENCY"), 1)
        if "TUNELINE_PYTHON_GRADER_MEMORY_MB" in env:
            values["python_grader_memory_mb"] = _int(
                "TUNELINE_PYTHON_GRADER_MEMORY_MB", get("PYTHON_GRADER_MEMORY_MB"), 64
            )
        for name in ("WEBHOOK_ALLOW_LOOPBACK", "METRICS_ENABLED", "PYTHON_GRADER_ENABLED"):
            if f"TUNELINE_{name}" in env:
                values[name.lower()] = _bool(f"TUNELINE_{name}", get(name))
        for name in (
            "SANDBOX_TIME_SCALE",
            "POLL_INTERVAL_S",
            "POLL_RATE_PER_S",
            "EVAL_RATE_PER_S",
            "PYTHON_GRADER_TIMEOUT_S",
        ):
            if f"TUNELINE_{name}" in env:
                values[name.lower()] = _float(f"TUNELINE_{name}", get(name))
        # The OpenAI convention is honoured as a fallback so existing deployments just work.
        openai_key = env.get("TUNELINE_OPENAI_API_KEY") or env.get("OPENAI_API_KEY") or ""
        if openai_key:
            values["openai_api_key"] = openai_key
        return cls(**values).validated()

    @property
    def model_roots(self) -> tuple[Path, ...]:
        """Where local base models may live (absolute, resolved)."""
        roots = self.local_model_roots or (self.data_dir / "models",)
        return tuple(root.resolve() for root in roots)

    def validated(self) -> Settings:
        """Return self after checking cross-field rules; raise SettingsError naming the variable."""
        if self.env not in ENVIRONMENTS:
            raise SettingsError(f"TUNELINE_ENV must be one of {', '.join(ENVIRONMENTS)}, got {self.env!r}")
        if self.default_provider and self.default_provider not in PROVIDERS:
            raise SettingsError(
                f"TUNELINE_DEFAULT_PROVIDER must be one of {', '.join(PROVIDERS)}, "
                f"got {self.default_provider!r}"
            )
        if self.eval_rate_per_s <= 0:
            raise SettingsError(f"TUNELINE_EVAL_RATE_PER_S must be > 0, got {self.eval_rate_per_s}")
        if self.train_device not in TRAIN_DEVICES and not re.fullmatch(r"cuda:\d+", self.train_device):
            raise SettingsError(
                f"TUNELINE_TRAIN_DEVICE must be auto, cpu, cuda or cuda:N, got {self.train_device!r}"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"TUNELINE_REDIS_URL must be a redis:// URL, got {self.redis_url!r}")
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
        if self.python_grader_timeout_s <= 0:
            raise SettingsError(
                f"TUNELINE_PYTHON_GRADER_TIMEOUT_S must be > 0, got {self.python_grader_timeout_s}"
            )
        if self.poll_rate_per_s < 0:
            raise SettingsError(f"TUNELINE_POLL_RATE_PER_S must be >= 0, got {self.poll_rate_per_s}")
        if self.webhook_allow_loopback and self.env == "production":
            raise SettingsError("TUNELINE_WEBHOOK_ALLOW_LOOPBACK is for development and tests only")
        return self

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def poll_burst(self) -> int:
        """Polls an idle account may make at once: one second's worth of its rate."""
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

"""Use cases at the API edge: start an import, read one, list them (DESIGN §15)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.core import ids, tasknames
from service.core.auth import Principal
from service.core.backends import registry
from service.core.clock import Clock, SystemClock
from service.core.dispatch import Dispatcher
from service.core.errors import NotFound, Unprocessable
from service.core.secrets_box import SecretBox
from service.core.store import Store
from service.core.store import imports as repo
from service.core.webhooks.ssrf import UnsafeWebhookURL, check_url
from service.settings import Settings

SOURCES = ("openai", "azure")
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
TERMINAL = frozenset({SUCCEEDED, FAILED})
PROGRESS_FIELDS = (
    "jobs_seen",  # jobs the listing (or the ``jobs`` filter) produced
    "jobs_imported",  # recorded by this import
    "jobs_already_imported",  # recorded by an earlier import: left as they are
    "jobs_skipped",  # not recorded: each has an entry in ``skipped`` saying why
    "files_imported",  # new Tuneline files
    "files_reused",  # provider files whose bytes the tenant already had
)
DISTILL_FIELDS = ("status", "max_cost_usd", "estimated_cost_usd", "spent_usd", "jobs", "skipped", "error")
PUBLIC_FIELDS = (
    "id",
    "object",
    "source",
    "base_url",
    "since",
    "jobs",
    "status",
    "progress",
    "skipped",
    "error",
    "created_at",
    "updated_at",
    "finished_at",
    "tenant",
)


@dataclass
class ImportsContext:
    settings: Settings
    store: Store
    dispatcher: Dispatcher
    box: SecretBox
    clock: Clock = field(default_factory=SystemClock)
    jitter: Callable[[], float] = random.random  # in [0, 1): spreads retry delays
    sleep: Callable[[float], None] = time.sleep  # waits for the account's rate budget


def public_import(doc: dict[str, Any]) -> dict[str, Any]:
    """What a client sees: never the key, nor the internal cursor and file map."""
    out = {name: doc.get(name) for name in PUBLIC_FIELDS}
    retrain = doc.get("retrain")  # set by imports.retrain: the experiments re-training it
    out["retrain"] = None if retrain is None else {"data": retrain["data"], "skipped": retrain["skipped"]}
    distill = doc.get("distill")  # set by imports.distill: the original models' answers as files
    out["distill"] = None if distill is None else {k: distill[k] for k in DISTILL_FIELDS}
    return out


def _check_base_url(settings: Settings, base_url: str) -> str:
    """A caller-chosen URL gets the webhook SSRF guard, unless the operator configured it."""
    url = base_url.rstrip("/")
    if url in registry.configured_urls(settings):
        return url
    try:
        check_url(url, allow_loopback=settings.webhook_allow_loopback)
    except UnsafeWebhookURL as exc:
        reason = str(exc).removeprefix("webhook URL refused: ")
        raise Unprocessable(f"base_url refused: {reason}", param="base_url", code="unsafe_base_url") from None
    return url


def create_import(ctx: ImportsContext, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """Record the import (the key sealed beside it) and start its task; the task gets the id only."""
    source = params["source"]
    api_key = params.get("api_key")
    base_url = _check_base_url(ctx.settings, params["base_url"]) if params.get("base_url") else None
    # Build the client now: an unconfigured provider is refused here, not in a worker.
    registry.account_reader(ctx.settings, source, api_key, base_url)
    now = time.time()
    doc = {
        "id": ids.new_id("import"),
        "object": "import",
        "tenant": principal.tenant,
        "source": source,
        "base_url": base_url,
        "since": params.get("since"),
        "jobs": params.get("jobs"),
        "status": QUEUED,
        "progress": dict.fromkeys(PROGRESS_FIELDS, 0),
        "skipped": [],
        "error": None,
        "created_at": int(now),
        "updated_at": int(now),
        "finished_at": None,
        # Internal: where the listing resumes, and provider file id -> Tuneline file id.
        "cursor": None,
        "position": 0,
        "files": {},
        "files_created": [],
    }
    sealed = ctx.box.encrypt(api_key) if api_key else None
    repo.insert(ctx.store, doc, now * 1000, sealed)
    ctx.dispatcher.enqueue(tasknames.IMPORT_RUN, doc["id"])
    return public_import(doc)


def get_import(store: Store, principal: Principal, import_id: str) -> dict[str, Any]:
    doc = repo.load(store, import_id)
    if doc is None or not principal.can_read(doc["tenant"]):
        raise NotFound(f"No such import: {import_id}", param="import_id", code="import_not_found")
    return public_import(doc)


def list_imports(
    store: Store, principal: Principal, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    found, has_more = repo.walk(store, principal.scope(), after, limit)
    return [public_import(d) for d in found], has_more

"""Tenants and API keys: salted-hash storage, shown once, roles ``member`` and ``ops``."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from service.core.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from service.core.store import Store, keys
from service.core.store.base import dumps, loads

ROLES = ("member", "ops")
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TOKEN_PREFIX = "tl"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant their data belongs to, and their role."""

    tenant: str
    role: str
    key_id: str

    @property
    def is_ops(self) -> bool:
        return self.role == "ops"

    def can_read(self, owner: str) -> bool:
        """The one tenant-visibility rule: ops read every tenant, members only their own."""
        return self.is_ops or owner == self.tenant

    def scope(self, requested: str | None = None) -> str | None:
        """The tenant a list or count is limited to; None means every tenant (ops only).

        Members are always limited to their own tenant; asking for another one is a 403
        (a list filter is not a lookup, so there is nothing to hide behind a 404).
        """
        if requested is not None and not self.can_read(requested):
            raise PermissionDenied(
                "Only ops keys may read other tenants.", param="tenant", code="tenant_not_allowed"
            )
        if self.is_ops:
            return requested
        return self.tenant


# The service itself reading across tenants (the metrics scrape); never the result of a key.
INTERNAL = Principal(tenant="", role="ops", key_id="")


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    role: str
    created_at: int
    salt: str
    digest: str
    revoked_at: int | None = None
    name: str = ""

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "api_key",
            "tenant": self.tenant,
            "role": self.role,
            "name": self.name,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def _digest(salt: str, secret: str) -> str:
    # The secret is 256 random bits, so one salted SHA-256 is as strong as a slow KDF here
    # and keeps per-request authentication cheap.
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def validate_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise InvalidRequest(
            "tenant must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
            param="tenant",
            code="invalid_tenant",
        )
    return tenant


def create_key(store: Store, tenant: str, role: str = "member", name: str = "") -> tuple[ApiKey, str]:
    """Create a key; returns the record and the plaintext token, which is never stored."""
    validate_tenant(tenant)
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role", code="invalid_role")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    record = ApiKey(
        id=key_id,
        tenant=tenant,
        role=role,
        created_at=int(time.time()),
        salt=salt,
        digest=_digest(salt, secret),
        name=name,
    )
    pipe = store.r.pipeline(transaction=True)
    pipe.set(keys.api_key(key_id), dumps(asdict(record)))
    pipe.zadd(keys.api_keys_index(), {key_id: record.created_at})
    pipe.sadd(keys.tenants(), tenant)
    pipe.execute()
    return record, f"{TOKEN_PREFIX}-{key_id}-{secret}"


def get_key(store: Store, key_id: str) -> ApiKey | None:
    raw = loads(store.r.get(keys.api_key(key_id)))  # type: ignore[arg-type]
    return None if raw is None else ApiKey(**raw)


def _token_parts(token: str | None) -> tuple[str, str]:
    """(key id, secret) of a well-formed token; 401 otherwise."""
    if not token:
        raise AuthenticationFailed(
            "Missing API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    parts = token.split("-", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise AuthenticationFailed("Incorrect API key provided.")
    return parts[1], parts[2]


def _verified(record: ApiKey | None, secret: str) -> Principal:
    if record is None or record.revoked_at is not None:
        raise AuthenticationFailed("Incorrect API key provided.")
    if not hmac.compare_digest(record.digest, _digest(record.salt, secret)):
        raise AuthenticationFailed("Incorrect API key provided.")
    return Principal(tenant=record.tenant, role=record.role, key_id=record.id)


class KeyCache:
    """Key records one process read recently, trusted for at most ``ttl_s`` seconds.

    An entry's age counts from before its Redis read, so a key revoked at time t is refused by
    every process from t + ``ttl_s`` on. Only valid keys are kept (a miss costs what it did
    without a cache), the secret is still checked on every request, and the cache forgets
    everything when full (key ids are random: a flood of unknown ones never fills it).
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.size = size
        self._entries: dict[str, tuple[float, ApiKey]] = {}

    def lookup(self, store: Store, key_id: str) -> ApiKey | None:
        """The key's record: from the cache while fresh, else from Redis.

        Where the process tracks keys (``Store.tracked``) a revoke is seen by the next lookup,
        and ``ttl_s`` only bounds how long a record is kept should tracking fail unnoticed.
        """
        if self.ttl_s <= 0:
            return get_key(store, key_id)
        if store.tracked is not None:
            raw = store.tracked.get(keys.api_key(key_id), max_age_s=self.ttl_s)
            return None if raw is None else ApiKey(**loads(raw))
        now = self.clock()
        entry = self._entries.get(key_id)
        if entry is not None and now - entry[0] < self.ttl_s:
            return entry[1]
        record = get_key(store, key_id)
        if record is None or record.revoked_at is not None:
            self._entries.pop(key_id, None)
        else:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key_id] = (now, record)
        return record


def authenticate(store: Store, token: str | None, cache: KeyCache | None = None) -> Principal:
    """Resolve a bearer token to a principal, or raise 401 without saying which part was wrong."""
    key_id, secret = _token_parts(token)
    record = cache.lookup(store, key_id) if cache is not None else get_key(store, key_id)
    return _verified(record, secret)


def scrape_principal(store: Store, token: str | None) -> Principal:
    """Who may read ``/metrics``: anyone without a key (an internal scrape port), or an ops key.

    A key that is sent must be valid (401) and belong to ops (403): a member key never sees the
    every-tenant figures the exposition carries.
    """
    if token is None:
        return INTERNAL
    caller = authenticate(store, token)
    if not caller.is_ops:
        raise PermissionDenied("/metrics needs an ops key (or no key at all).", code="ops_key_required")
    return caller


def list_keys(store: Store, tenant: str | None = None) -> list[ApiKey]:
    ids: list[str] = store.r.zrange(keys.api_keys_index(), 0, -1)  # type: ignore[assignment]
    found = [get_key(store, key_id) for key_id in ids]
    return [k for k in found if k is not None and (tenant is None or k.tenant == tenant)]


def revoke_key(store: Store, key_id: str) -> ApiKey:
    record = get_key(store, key_id)
    if record is None:
        raise NotFound(f"No API key with id {key_id!r}", param="key_id")
    if record.revoked_at is None:
        data = asdict(record) | {"revoked_at": int(time.time())}
        store.r.set(keys.api_key(key_id), dumps(data))
        record = ApiKey(**data)
    return record

"""The per-process key cache: a revoked key is refused once the bound has passed, never later."""

from __future__ import annotations

import pytest

from service.core import auth
from service.core.errors import AuthenticationFailed
from service.core.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_revoked_key_is_refused_once_the_bound_has_passed(store: Store) -> None:
    clock = Clock()
    cache = auth.KeyCache(5.0, clock=clock)
    record, token = auth.create_key(store, "acme")
    assert auth.authenticate(store, token, cache).tenant == "acme"  # read at t=1000, cached
    auth.revoke_key(store, record.id)
    clock.now += 4.9
    # Within the bound the process may still trust what it read (the documented staleness)...
    assert auth.authenticate(store, token, cache).key_id == record.id
    clock.now += 0.1
    # ...and from the bound on it reads Redis again and refuses, at every later time.
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(store, token, cache)
        clock.now += 10.0


def test_without_a_cache_or_with_zero_a_revoke_counts_at_once(store: Store) -> None:
    record, token = auth.create_key(store, "acme")
    cache = auth.KeyCache(0.0, clock=Clock())
    assert auth.authenticate(store, token, cache).tenant == "acme"
    auth.revoke_key(store, record.id)
    for candidate in (cache, None):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(store, token, candidate)


def test_a_cached_key_still_checks_the_secret(store: Store) -> None:
    cache = auth.KeyCache(60.0, clock=Clock())
    _, token = auth.create_key(store, "acme")
    auth.authenticate(store, token, cache)
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(store, token[:-3] + "xyz", cache)


def test_unknown_keys_are_not_kept_and_a_full_cache_starts_over(store: Store) -> None:
    cache = auth.KeyCache(60.0, clock=Clock(), size=2)
    for n in range(5):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(store, f"tl-unknown{n}-secret", cache)
    assert cache._entries == {}
    tokens = [auth.create_key(store, "acme")[1] for _ in range(3)]
    for token in tokens:
        auth.authenticate(store, token, cache)
    assert len(cache._entries) == 1  # the third key cleared the two before it


def test_the_api_refuses_a_revoked_key_at_once_where_it_tracks_keys(settings, store) -> None:
    """Through the HTTP hook, with tracked reads (``TUNELINE_READ_CACHE_S`` > 0): a checked key is
    served from memory, and a revoke written by another process is refused by the next request."""
    from service.app import create_app
    from service.core.dispatch import RecordingDispatcher

    app = create_app(
        settings.with_overrides(auth_cache_s=5.0, read_cache_s=5.0), dispatcher=RecordingDispatcher()
    )
    tracked = app.extensions["tuneline"].store.tracked
    client = app.test_client()
    record, token = auth.create_key(store, "acme")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/files", headers=headers).status_code == 200
    hits = tracked.stats["hits"]
    assert client.get("/v1/files", headers=headers).status_code == 200
    assert tracked.stats["hits"] == hits + 1  # the key came from memory
    auth.revoke_key(Store.from_url(settings.redis_url), record.id)  # another process's connection
    assert client.get("/v1/files", headers=headers).status_code == 401


def test_without_tracking_the_api_cache_is_bounded_by_the_setting(settings, store) -> None:
    """Through the HTTP hook, tracked reads off: with TUNELINE_AUTH_CACHE_S=5 a revoked key
    answers 401 after 5 s."""
    from service.api.auth import KEY_CACHE
    from service.app import create_app
    from service.core.dispatch import RecordingDispatcher

    app = create_app(
        settings.with_overrides(auth_cache_s=5.0, read_cache_s=0.0), dispatcher=RecordingDispatcher()
    )
    clock = Clock()
    app.extensions[KEY_CACHE].clock = clock
    client = app.test_client()
    record, token = auth.create_key(store, "acme")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/files", headers=headers).status_code == 200
    auth.revoke_key(store, record.id)
    clock.now += 4.0
    assert client.get("/v1/files", headers=headers).status_code == 200
    clock.now += 1.0
    assert client.get("/v1/files", headers=headers).status_code == 401

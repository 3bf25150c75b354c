"""Provider name -> backend: the only place that compares provider names (DESIGN §8, §11).

Credentials come only from Settings. Adding a backend is its module plus one entry here (or a
call to ``register`` for one defined elsewhere, e.g. in tests).
"""

from __future__ import annotations

from collections.abc import Callable

import openai

from service.core.backends.base import Backend
from service.core.backends.local import LocalBackend, LocalState
from service.core.backends.remote import RemoteBackend, RemoteState, SDKClient
from service.core.dispatch import Dispatcher
from service.core.errors import Unprocessable
from service.core.jobs.record import register_extension, register_legacy_kind
from service.core.store import Store
from service.settings import Settings

TIMEOUT_S = 60.0
SANDBOX_EXTENSIONS = ("sandbox",)
OPENAI_BASE_URL = "https://api.openai.com/v1"

Factory = Callable[[Settings, Store, Dispatcher | None], Backend]


def _openai(settings: Settings, store: Store, dispatcher: Dispatcher | None) -> Backend:
    # An explicit base URL: the SDK would otherwise read OPENAI_BASE_URL from the environment.
    base_url = settings.openai_base_url or OPENAI_BASE_URL
    client = openai.OpenAI(
        api_key=settings.openai_api_key, base_url=base_url, timeout=TIMEOUT_S, max_retries=2
    )
    return RemoteBackend("openai", client, f"openai:{base_url}", store)


def _azure(settings: Settings, store: Store, dispatcher: Dispatcher | None) -> Backend:
    client = openai.AzureOpenAI(
        api_key=settings.azure_openai_api_key,
        azure_endpoint=settings.azure_openai_endpoint,
        api_version=settings.azure_openai_api_version,
        timeout=TIMEOUT_S,
        max_retries=2,
    )
    return RemoteBackend("azure", client, f"azure:{settings.azure_openai_endpoint}", store)


def _sandbox(settings: Settings, store: Store, dispatcher: Dispatcher | None) -> Backend:
    url = settings.effective_sandbox_url
    client = openai.OpenAI(api_key=settings.sandbox_api_key, base_url=url, timeout=TIMEOUT_S, max_retries=2)
    # The sandbox takes fault-injection options with each job: forwarded as the `sandbox` extension.
    return RemoteBackend("sandbox", client, f"sandbox:{url}", store, extensions=SANDBOX_EXTENSIONS)


def _local(settings: Settings, store: Store, dispatcher: Dispatcher | None) -> Backend:
    return LocalBackend("local", settings, store, dispatcher)


def _openai_ready(settings: Settings) -> bool:
    return bool(settings.openai_api_key)


def _azure_ready(settings: Settings) -> bool:
    return bool(settings.azure_openai_endpoint and settings.azure_openai_api_key)


def _always(settings: Settings) -> bool:
    return True


# name -> (factory, configured?, message naming what to configure)
_BACKENDS: dict[str, tuple[Factory, Callable[[Settings], bool], str]] = {
    "openai": (_openai, _openai_ready, "TUNELINE_OPENAI_API_KEY"),
    "azure": (_azure, _azure_ready, "TUNELINE_AZURE_OPENAI_ENDPOINT and _API_KEY"),
    "sandbox": (_sandbox, _always, ""),
    "local": (_local, _always, ""),
}

# Records stored before the typed record were flat; their provider names the state they hold.
for _name, _kind in (
    ("openai", RemoteState),
    ("azure", RemoteState),
    ("sandbox", RemoteState),
    ("local", LocalState),
):
    register_legacy_kind(_name, _kind.kind)
for _extension in SANDBOX_EXTENSIONS:
    register_extension(_extension)


def register(
    name: str,
    factory: Factory,
    configured: Callable[[Settings], bool] = _always,
    extensions: tuple[str, ...] = (),
) -> None:
    """Make a backend available under ``name``; ``extensions``: request fields it forwards.

    Its state type registers itself with ``record.state_type``.
    """
    _BACKENDS[name] = (factory, configured, "")
    for extension in extensions:
        register_extension(extension)


def unregister(name: str) -> None:
    _BACKENDS.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def ensure_available(name: str, settings: Settings) -> None:
    """Refuse (422) a provider this deployment cannot use, without building a client."""
    entry = _BACKENDS.get(name)
    if entry is None:
        raise Unprocessable(
            f"Provider {name!r} is not available in this deployment.",
            param="provider",
            code="provider_not_available",
        )
    _, configured, needs = entry
    if not configured(settings):
        raise Unprocessable(
            f"The {name} provider is not configured ({needs}).",
            param="provider",
            code="provider_not_configured",
        )


def account_name(settings: Settings, source: str, base_url: str | None) -> str:
    """The name of the ``source`` account at ``base_url`` (default: the configured one), as its
    backend names it: reads, polls and completions of one account share its rate budget."""
    if source == "azure":
        return f"azure:{base_url or settings.azure_openai_endpoint}"
    return f"openai:{base_url or settings.openai_base_url or OPENAI_BASE_URL}"


def account_reader(
    settings: Settings, source: str, api_key: str | None, base_url: str | None
) -> tuple[SDKClient, str]:
    """An SDK client for reading ``source``'s account (an import), and the account's name.

    Without ``api_key`` the configured provider's credentials are used (refused when there are
    none); the account name is the one its backend uses, so both share one rate budget.
    """
    configured = settings.azure_openai_endpoint if source == "azure" else settings.openai_base_url
    if not api_key and base_url and base_url.rstrip("/") != (configured or OPENAI_BASE_URL).rstrip("/"):
        # The configured key goes only where it was configured to go, never to a caller's URL.
        raise Unprocessable(
            "api_key is required when base_url is not the configured provider URL.",
            param="api_key",
            code="api_key_required",
        )
    if source == "azure":
        endpoint = base_url or settings.azure_openai_endpoint
        if not api_key:
            ensure_available("azure", settings)
        if not endpoint:  # the SDK would read AZURE_OPENAI_ENDPOINT from the environment instead
            raise Unprocessable(
                "An azure import needs base_url (the Azure OpenAI endpoint) or a configured endpoint.",
                param="base_url",
                code="base_url_required",
            )
        client: openai.OpenAI = openai.AzureOpenAI(
            api_key=api_key or settings.azure_openai_api_key,
            azure_endpoint=endpoint,
            api_version=settings.azure_openai_api_version,
            timeout=TIMEOUT_S,
            max_retries=2,
        )
        return SDKClient(client), account_name(settings, source, endpoint)
    if source != "openai":
        raise Unprocessable(f"Imports read openai or azure accounts, not {source!r}.", param="source")
    if not api_key:
        ensure_available("openai", settings)
    url = base_url or settings.openai_base_url or OPENAI_BASE_URL
    client = openai.OpenAI(
        api_key=api_key or settings.openai_api_key, base_url=url, timeout=TIMEOUT_S, max_retries=2
    )
    return SDKClient(client), account_name(settings, source, url)


def configured_urls(settings: Settings) -> frozenset[str]:
    """Provider URLs the operator configured (trusted as they are: no SSRF check for these)."""
    urls = (settings.effective_sandbox_url, settings.openai_base_url, settings.azure_openai_endpoint)
    return frozenset(u.rstrip("/") for u in urls if u)


class Backends:
    """The backends of one process, each built once on first use."""

    def __init__(self, settings: Settings, store: Store, dispatcher: Dispatcher | None = None) -> None:
        self.settings, self.store, self.dispatcher = settings, store, dispatcher
        self._built: dict[str, Backend] = {}

    def __call__(self, name: str) -> Backend:
        if name not in self._built:
            ensure_available(name, self.settings)
            factory, _, _ = _BACKENDS[name]
            self._built[name] = factory(self.settings, self.store, self.dispatcher)
        return self._built[name]

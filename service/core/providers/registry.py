"""Build a provider from settings; credentials come only from Settings (DESIGN §8)."""

from __future__ import annotations

import openai

from service.core.errors import Unprocessable
from service.core.providers.base import Provider
from service.core.providers.local import LocalProvider
from service.core.providers.openai_provider import OpenAIProvider
from service.settings import Settings

TIMEOUT_S = 60.0
OPENAI_BASE_URL = "https://api.openai.com/v1"


def ensure_available(name: str, settings: Settings) -> None:
    """Refuse (422) a provider this deployment cannot use, without building a client."""
    if name == "openai" and not settings.openai_api_key:
        raise Unprocessable(
            "The openai provider is not configured (TUNELINE_OPENAI_API_KEY).",
            param="provider",
            code="provider_not_configured",
        )
    if name == "azure" and not (settings.azure_openai_endpoint and settings.azure_openai_api_key):
        raise Unprocessable(
            "The azure provider is not configured (TUNELINE_AZURE_OPENAI_ENDPOINT and _API_KEY).",
            param="provider",
            code="provider_not_configured",
        )
    if name not in ("openai", "azure", "sandbox", "local"):
        raise Unprocessable(
            f"Provider {name!r} is not available in this deployment.",
            param="provider",
            code="provider_not_available",
        )


def provider_for(name: str, settings: Settings) -> Provider:
    ensure_available(name, settings)
    if name == "local":
        return LocalProvider(settings.data_dir)
    if name == "sandbox":
        url = settings.effective_sandbox_url
        client = openai.OpenAI(
            api_key=settings.sandbox_api_key, base_url=url, timeout=TIMEOUT_S, max_retries=2
        )
        return OpenAIProvider("sandbox", client, account=f"sandbox:{url}")
    if name == "azure":
        azure = openai.AzureOpenAI(
            api_key=settings.azure_openai_api_key,
            azure_endpoint=settings.azure_openai_endpoint,
            api_version=settings.azure_openai_api_version,
            timeout=TIMEOUT_S,
            max_retries=2,
        )
        return OpenAIProvider("azure", azure, account=f"azure:{settings.azure_openai_endpoint}")
    # An explicit base URL: the SDK would otherwise read OPENAI_BASE_URL from the environment.
    base_url = settings.openai_base_url or OPENAI_BASE_URL
    client = openai.OpenAI(
        api_key=settings.openai_api_key, base_url=base_url, timeout=TIMEOUT_S, max_retries=2
    )
    return OpenAIProvider("openai", client, account=f"openai:{base_url}")

"""Build a provider from settings; credentials come only from Settings (DESIGN §8)."""

from __future__ import annotations

import openai

from service.core.errors import Unprocessable
from service.core.providers.base import Provider
from service.core.providers.openai_provider import OpenAIProvider
from service.settings import Settings

TIMEOUT_S = 60.0


def provider_for(name: str, settings: Settings) -> Provider:
    if name == "sandbox":
        url = settings.effective_sandbox_url
        client = openai.OpenAI(api_key=settings.sandbox_api_key, base_url=url, timeout=TIMEOUT_S,
                               max_retries=2)
        return OpenAIProvider("sandbox", client, account=f"sandbox:{url}")
    if name == "openai":
        if not settings.openai_api_key:
            raise Unprocessable("The openai provider is not configured (TUNELINE_OPENAI_API_KEY).",
                                param="provider", code="provider_not_configured")
        client = openai.OpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url or None,
                               organization=None, project=None, timeout=TIMEOUT_S, max_retries=2)
        return OpenAIProvider("openai", client, account=f"openai:{settings.openai_base_url or 'default'}")
    if name == "azure":
        if not (settings.azure_openai_endpoint and settings.azure_openai_api_key):
            raise Unprocessable(
                "The azure provider is not configured (TUNELINE_AZURE_OPENAI_ENDPOINT and _API_KEY).",
                param="provider", code="provider_not_configured")
        azure = openai.AzureOpenAI(api_key=settings.azure_openai_api_key,
                                   azure_endpoint=settings.azure_openai_endpoint,
                                   api_version=settings.azure_openai_api_version,
                                   timeout=TIMEOUT_S, max_retries=2)
        return OpenAIProvider("azure", azure, account=f"azure:{settings.azure_openai_endpoint}")
    raise Unprocessable(f"Provider {name!r} is not available in this deployment.", param="provider",
                        code="provider_not_available")

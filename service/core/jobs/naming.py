"""The fine-tuned model name of a job (DESIGN §9)."""

from __future__ import annotations


def fine_tuned_model_name(base: str, tenant: str, suffix: str | None, job_id: str) -> str:
    """DESIGN §9: ``ft:<base model>:<tenant>:<suffix or empty>:<job id>``.

    A job that trained on from a fine-tuned model names that model's base, as OpenAI does (so
    names never nest ``ft:ft:``).
    """
    if base.startswith("ft:"):
        base = base.rsplit(":", 3)[0].removeprefix("ft:")
    return f"ft:{base}:{tenant}:{suffix or ''}:{job_id}"

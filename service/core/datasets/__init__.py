"""Dataset preparation: streaming checks, fixes, token counts and cost for fine-tuning files."""

from service.core.datasets.engine import PrepareOptions, Report, prepare_file
from service.core.datasets.models import DEFAULT_MODEL, MODELS, ModelSpec, default_epochs, resolve_model
from service.core.datasets.tokens import TokenCounter, get_encoding

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ModelSpec",
    "PrepareOptions",
    "Report",
    "TokenCounter",
    "default_epochs",
    "get_encoding",
    "prepare_file",
    "resolve_model",
]

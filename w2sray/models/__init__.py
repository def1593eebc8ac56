"""Model registry and the classifier head."""

from w2sray.models.head import W2SClassifier, pool
from w2sray.models.registry import (
    BUILTIN_LADDER,
    Loaded,
    enable_gradient_checkpointing,
    is_builtin,
    load_model,
    resolve_model_source,
)

__all__ = [
    "BUILTIN_LADDER",
    "Loaded",
    "W2SClassifier",
    "enable_gradient_checkpointing",
    "is_builtin",
    "load_model",
    "pool",
    "resolve_model_source",
]

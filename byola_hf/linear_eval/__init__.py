"""Linear evaluation of frozen BYOL-A clip embeddings, as the papers run it with EVAR (needs the `[superb]` extra)."""

from .classifier import LinearRun, hold_out_validation, standardize, train_linear
from .cli import main
from .evaluate import LinearEvalResult, linear_eval


__all__ = [
    "LinearEvalResult",
    "LinearRun",
    "hold_out_validation",
    "linear_eval",
    "main",
    "standardize",
    "train_linear",
]

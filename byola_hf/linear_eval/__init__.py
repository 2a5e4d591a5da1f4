"""Linear evaluation of frozen BYOL-A clip embeddings, as in the papers (needs the `[superb]` extra)."""

from .cli import main
from .evaluate import LinearEvalResult, linear_eval, train_linear


__all__ = ["LinearEvalResult", "linear_eval", "main", "train_linear"]

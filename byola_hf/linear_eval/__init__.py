"""Linear evaluation of frozen BYOL-A clip embeddings, as EVAR runs it (BYOL-A v2's protocol; needs `[superb]`).

[`classifier`] is EVAR's linear classifier and its training; [`evaluate`] the splits (a held-out validation set,
leave-one-fold-out) over embeddings from `byola_hf.extract`; [`report`] what `byola-linear-eval` writes; [`cli`] the
command line.
"""

from .classifier import LinearRun, TrainingSettings, hold_out_validation, standardize, train_linear
from .cli import main
from .evaluate import LinearEvalArguments, LinearEvalResult, linear_eval


__all__ = [
    "LinearEvalArguments",
    "LinearEvalResult",
    "LinearRun",
    "TrainingSettings",
    "hold_out_validation",
    "linear_eval",
    "main",
    "standardize",
    "train_linear",
]

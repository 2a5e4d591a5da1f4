"""Per-task normalisation statistics of BYOL-A over a dataset: `compute_stats` and the `byola-compute-stats` command.

Needs the `[stats]` extra (`pip install 'byola_hf[stats]'`). [`moments`] holds the exact moments and their merge;
[`compute`] maps a dataset (loaded with `byola_hf.tools.data`) to them and merges them across torchrun ranks;
[`cli`] is the command line.
"""

from ..tools.data import load_audio_dataset, load_byola_front_end
from .cli import main
from .compute import (
    StatsArguments,
    StatsResult,
    batch_moments,
    compute_moments,
    compute_stats,
    s3prl_estimate,
    save_stats,
)
from .moments import LogMelMoments, RunningNormEstimate


__all__ = [
    "LogMelMoments",
    "RunningNormEstimate",
    "StatsArguments",
    "StatsResult",
    "batch_moments",
    "compute_moments",
    "compute_stats",
    "load_audio_dataset",
    "load_byola_front_end",
    "main",
    "s3prl_estimate",
    "save_stats",
]

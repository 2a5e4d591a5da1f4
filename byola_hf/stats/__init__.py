"""Per-task normalisation statistics of BYOL-A over a dataset: `compute_stats` and the `byola-compute-stats` command.

Needs the `[stats]` extra (`pip install 'byola_hf[stats]'`). The exact moments themselves are in
[`byola_hf.moments`]; this package loads the data ([`data`]), maps it ([`compute`]), reduces across torchrun ranks
([`distributed`]) and runs the command line ([`cli`]).
"""

from ..moments import LogMelMoments, RunningNormEstimate
from .cli import main
from .compute import StatsResult, batch_moments, compute_moments, compute_stats, s3prl_estimate, save_stats
from .data import load_audio_dataset, load_byola_front_end


__all__ = [
    "LogMelMoments",
    "RunningNormEstimate",
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

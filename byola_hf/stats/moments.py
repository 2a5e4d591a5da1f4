"""Exact moments of BYOL-A log-mels and their merge: the maths behind per-task normalisation statistics.

BYOL-A normalises every log-mel spectrogram with the scalar mean and standard deviation of the downstream task's
data. [`LogMelMoments`] holds exact float64 partial moments of any set of clips (over every valid frame and mel bin,
no padding); partials of batches, workers or machines merge exactly and stably (Chan, Golub & LeVeque), so memory
stays bounded whatever the dataset size. [`RunningNormEstimate`] is the original upstream's estimate, for
comparison with figures users already have.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LogMelMoments:
    """Count, mean and sum of squared deviations (`m2`) of a set of log-mel values in float64, with the clips they came
    from: `num_examples` clips, `num_frames` valid frames, `num_samples` waveform samples."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    num_examples: int = 0
    num_frames: int = 0
    num_samples: int = 0

    @classmethod
    def from_values(cls, values: np.ndarray | torch.Tensor) -> "LogMelMoments":
        """Moments of raw values (no clip counts); a torch tensor is reduced in float64 on its own device."""
        if isinstance(values, torch.Tensor):
            values = values.detach().double().flatten()
            if values.numel() == 0:
                return cls()
            mean = values.mean()
            return cls(count=values.numel(), mean=float(mean), m2=float((values - mean).square().sum()))
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return cls()
        mean = float(values.mean())
        return cls(count=int(values.size), mean=mean, m2=float(np.square(values - mean).sum()))

    @classmethod
    def from_log_mels(cls, log_mels: Iterable[np.ndarray | torch.Tensor], num_samples: int = 0) -> "LogMelMoments":
        """Moments of unpadded log-mels, each `(n_mels, frames_i)`, of clips of `num_samples` samples in all."""
        total = cls(num_samples=num_samples)
        for log_mel in log_mels:
            total = total.merge(cls.from_values(log_mel))
            total.num_examples += 1
            total.num_frames += int(np.shape(log_mel)[-1])
        return total

    def merge(self, other: "LogMelMoments") -> "LogMelMoments":
        """Moments of the union (Chan, Golub & LeVeque's pairwise update, stable for any sizes); counts add up."""
        count = self.count + other.count
        if other.count == 0 or self.count == 0:
            mean, m2 = (self.mean, self.m2) if other.count == 0 else (other.mean, other.m2)
        else:
            delta = other.mean - self.mean
            mean = self.mean + delta * other.count / count
            m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / count
        return LogMelMoments(
            count,
            mean,
            m2,
            self.num_examples + other.num_examples,
            self.num_frames + other.num_frames,
            self.num_samples + other.num_samples,
        )

    @property
    def std(self) -> float:
        """Population standard deviation (of at least one value)."""
        if self.count == 0:
            raise ValueError("No log-mel values: the standard deviation of an empty set is undefined.")
        return math.sqrt(self.m2 / self.count)


class RunningNormEstimate:
    """The SUPERB upstream's "calcnorm" estimate: over zero-padded batches, a running mean of the batch means, and a
    running mean of each batch's mean squared deviation from the running mean of that moment; the std is its square
    root, clamped to `[float32 eps, float32 max]`. The original stops after 10,000 batches."""

    def __init__(self, max_updates: int = 10_000):
        self.max_updates = max_updates
        self.updates = 0
        self.mean = 0.0
        self.variance = 0.0

    def put(self, padded_log_mel: torch.Tensor) -> None:
        """Update with one padded batch `(batch, n_mels, frames)`, as the original sees it."""
        if self.updates >= self.max_updates:
            return
        self.updates += 1
        batch_mean = float(padded_log_mel.mean())
        self.mean += (batch_mean - self.mean) / self.updates
        batch_variance = float(((padded_log_mel - self.mean) ** 2).mean())
        self.variance += (batch_variance - self.variance) / self.updates

    @property
    def std(self) -> float:
        eps, largest = float(np.finfo(np.float32).eps), float(np.finfo(np.float32).max)
        return min(max(math.sqrt(self.variance), eps), largest)

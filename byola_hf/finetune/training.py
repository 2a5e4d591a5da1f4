"""EVAR's fine-tuning recipe on `Trainer`: the optimiser, the learning-rate schedule, the metric, and the training
step that turns a batch of waveforms into augmented log-mels.

EVAR steps timm's `CosineLRScheduler(t_initial=epochs, lr_min=1e-7, warmup_t=warmup_epochs, warmup_lr_init=0)` after
every iteration with the fractional epoch it reached, so iteration `k` (from 0) of an epoch of `E` iterations trains
with `f(max(k - 1, 0) / E)`, where `f(t) = base * t / warmup` for `t < warmup` and
`f(t) = min + (base - min) (1 + cos(pi t / epochs)) / 2` after it (timm's cosine is not shifted by the warm-up).
"""

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from transformers import Trainer

from ..tools.cli import EvaluationLeavesRandomState
from .augmentations import crop_or_pad, mixup, sample_clip_starts, sample_mixup


@dataclass
class EvarSchedule:
    """The multiplier of the base learning rate at each optimiser step, for `torch.optim.lr_scheduler.LambdaLR`
    (a dataclass, so the scheduler's state saves it with Trainer's checkpoints). See the module doc."""

    steps_per_epoch: int
    warmup_epochs: float
    epochs: float
    base_lr: float
    min_lr: float = 1e-7

    def learning_rate(self, epoch: float) -> float:
        """timm's learning rate at the fractional `epoch`."""
        if epoch < self.warmup_epochs:
            return self.base_lr * epoch / self.warmup_epochs
        if epoch >= self.epochs:
            return self.min_lr
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * epoch / self.epochs))

    def __call__(self, step: int) -> float:
        return self.learning_rate(max(step - 1, 0) / self.steps_per_epoch) / self.base_lr


def build_optimizer(model: torch.nn.Module, name: str, learning_rate: float) -> torch.optim.Optimizer:
    """EVAR's optimisers over the trainable parameters: SGD with momentum 0.9 and no weight decay, or AdamW with
    weight decay 1e-4, betas (0.9, 0.95), eps 1e-8 and AMSGrad."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=0.9, weight_decay=0.0)
    if name == "adamw":
        return torch.optim.AdamW(
            parameters, lr=learning_rate, weight_decay=1e-4, betas=(0.9, 0.95), eps=1e-8, amsgrad=True
        )
    raise ValueError(f"--optimizer must be sgd or adamw, got {name!r}.")


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of one class: `sum_n (R_n - R_{n-1}) P_n` over the distinct scores, highest first (the
    definition scikit-learn's `average_precision_score` computes). `truth` must hold a positive."""
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the last row of each distinct score
    true_positives = np.cumsum(truth)[last]
    precision = true_positives / (last + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(logits: np.ndarray, targets: np.ndarray) -> tuple[float, list[float | None]]:
    """mAP over the classes with a positive example, and each class's AP (`None` where it has none)."""
    per_class = [
        average_precision(logits[:, c], targets[:, c]) if targets[:, c].any() else None
        for c in range(targets.shape[1])
    ]
    scored = [value for value in per_class if value is not None]
    return (float(np.mean(scored)) if scored else float("nan")), per_class


def metrics_function(multi_label: bool):
    """`compute_metrics` for Trainer: `accuracy` (single-label) or `mAP` (multi-label)."""

    def compute(prediction) -> dict[str, float]:
        logits, labels = prediction.predictions, prediction.label_ids
        if multi_label:
            return {"mAP": mean_average_precision(logits, labels)[0]}
        return {"accuracy": float((logits.argmax(-1) == labels).mean())}

    return compute


def step_seed(seed: int, step: int, micro_batch: int) -> int:
    """The seed of one training micro-batch's draws: fixed by the run's seed and the position in training, so a
    resumed run draws what the uninterrupted one did."""
    digest = hashlib.sha256(f"byola-finetune:{seed}:{step}:{micro_batch}".encode()).hexdigest()
    return int(digest[:15], 16)


class FinetuneTrainer(EvaluationLeavesRandomState, Trainer):
    """
    `Trainer` whose batches are waveforms: each clip is cut or zero-padded to `unit` samples (training clips at a
    random start), then during training the batch is mixed up with its labels, turned into log-mels, normalised with
    the model's statistics and augmented (masks and crop) as EVAR does; evaluation computes the plain log-mels.

    Args:
        feature_extractor: the model's [`BYOLAFeatureExtractor`].
        unit: samples per clip.
        augmentation: the log-mel blocks ([`FinetuneAugmentation`]).
        mixup_alpha: Beta(alpha, alpha) of mixup (0: off).
        multi_label: labels are multi-hot rows (else class ids).
        drop_last: drop the last training batch (of one clip, which BatchNorm cannot train on); evaluation keeps
            every clip.
    """

    def __init__(
        self, *args, feature_extractor, unit: int, augmentation, mixup_alpha: float, multi_label: bool,
        drop_last: bool = False, **kw,
    ):  # fmt: skip
        super().__init__(*args, **kw)
        self.feature_extractor, self.unit, self.augmentation = feature_extractor, unit, augmentation
        self.mixup_alpha, self.multi_label, self.drop_last = mixup_alpha, multi_label, drop_last
        self._draw_position = (-1, 0)

    def get_train_dataloader(self):
        """Trainer's, dropping the last batch when `drop_last` (Trainer's own flag would drop evaluation clips)."""
        self.args.dataloader_drop_last = self.drop_last
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = False

    def _generator(self, device: torch.device) -> torch.Generator:
        step, micro = self._draw_position
        micro = micro + 1 if step == self.state.global_step else 0
        self._draw_position = (self.state.global_step, micro)
        return torch.Generator(device=device).manual_seed(step_seed(self.args.seed, self.state.global_step, micro))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        waveforms, lengths, labels = inputs["waveforms"], inputs["lengths"], inputs["labels"]
        generator = self._generator(waveforms.device) if model.training else None
        starts = sample_clip_starts(lengths, self.unit, generator) if model.training else torch.zeros_like(lengths)
        waveforms = crop_or_pad(waveforms, lengths, starts, self.unit)
        if model.training and self.mixup_alpha > 0:
            rows = labels if self.multi_label else torch.nn.functional.one_hot(labels, model.config.num_labels)
            draws = sample_mixup(len(waveforms), self.mixup_alpha, generator, waveforms.device)
            waveforms, labels = mixup(waveforms, rows.float(), *draws)
        features = self.log_mels(model, waveforms, generator)
        outputs = model(input_features=features, labels=labels)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log_mels(self, model, waveforms: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """`(batch, unit)` waveforms -> `(batch, n_mels, frames)` raw log-mels, augmented in training. EVAR augments
        the normalised log-mel (masks and the crop canvas are its mean, 0); the model normalises its input itself,
        so the augmented features are mapped back."""
        sampling_rate = self.feature_extractor.sampling_rate
        with torch.no_grad():
            features = self.feature_extractor(waveforms, sampling_rate=sampling_rate, device=waveforms.device)
        features = features["input_features"]
        if not model.training:
            return features
        mean, std = model.config.mean, model.config.std
        normalised = (features - mean) / std
        draws = self.augmentation.sample(len(features), *features.shape[1:], generator, features.device)
        return self.augmentation(normalised, draws) * std + mean

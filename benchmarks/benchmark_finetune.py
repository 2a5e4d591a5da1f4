"""Training throughput of `byola-finetune`'s step against EVAR's fine-tuning loop, same run, device, model, batch.

The baseline is EVAR's iteration rebuilt from its facts (nttcslab/eval-audio-repr `finetune.py`, `evar/ar_byola.py`,
`evar/ar_base.py`): mixup of the waveforms and one-hot labels (NumPy Beta draws per example, a NumPy permutation);
nnAudio's `MelSpectrogram` and `log(x + eps)`; normalisation; torchaudio-style frequency and time masks drawn once
for the whole batch; BYOL-A's random resize crop clip by clip in a Python loop (a zero canvas and a bicubic
`F.interpolate` per clip); the encoder in the original `nn.Sequential` layout with the mean + max clip embedding;
BatchNorm1d without affine parameters and a linear layer; `-mean(y * log_softmax)`; backward; SGD with momentum.
Ours is `FinetuneTrainer.compute_loss` (the cut, mixup, the log-mel, masks and crop batched on the device, each a
function of draws from one generator) on `BYOLAForSequenceClassification(classifier_head="evar")`, backward and the
same SGD. Both take the same clips of one second, the steps alternate, and the median seconds per step are
reported as clips per second.

    python benchmarks/benchmark_finetune.py [--device cpu|cuda] [--feature_d 512] [--batch 32] [--repeats 5]
                                            [--training_kernels reference|channels_last|cpu] [--json OUT]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root has byola_hf/

from benchmarks.benchmark import machine  # noqa: E402
from benchmarks.benchmark_pretrain import OriginalAugmentation, OriginalEncoder, median_step_seconds  # noqa: E402
from byola_hf import BYOLAConfig, BYOLAFeatureExtractor, BYOLAForSequenceClassification  # noqa: E402
from byola_hf.finetune.augmentations import FinetuneAugmentation  # noqa: E402
from byola_hf.finetune.training import FinetuneTrainer, build_optimizer  # noqa: E402


# Issue 35's goal: ours at least as fast as EVAR's loop (same model and batch).
GOAL = 1.0
MEAN, STD = -7.6, 5.2  # any finite statistics give the same timings
CLASSES, LEARNING_RATE, MIXUP, FREQ_MASK, TIME_MASK = 10, 1e-3, 0.5, 30, 100  # EVAR's BYOL-A recipe


class EvarNetwork(nn.Module):
    """EVAR's `TaskNetwork` over `AR_BYOLA`: nnAudio's log-mel, normalisation, the training augmentations, the
    original encoder with the mean + max embedding, and its head."""

    def __init__(self, config: BYOLAConfig):
        super().__init__()
        from nnAudio.features import MelSpectrogram

        self.to_spec = MelSpectrogram(
            sr=config.sampling_rate, n_fft=config.n_fft, win_length=config.win_length, hop_length=config.hop_length,
            n_mels=config.n_mels, fmin=config.f_min, fmax=config.f_max, center=True, power=2, verbose=False,
        )  # fmt: skip
        self.body = OriginalEncoder(config)
        self.head = nn.Sequential(nn.BatchNorm1d(config.feature_d, affine=False), nn.Linear(config.feature_d, CLASSES))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = ((self.to_spec(waveforms) + torch.finfo().eps).log() - MEAN) / STD
        if self.training:
            x = self.augment(x)
        return self.head(self.body(x[:, None]))

    @staticmethod
    def augment(x: torch.Tensor) -> torch.Tensor:
        """torchaudio's `FrequencyMasking(30)` then `TimeMasking(100)` on the batch (one mask for it), then the
        crop clip by clip."""
        for axis, param in ((1, FREQ_MASK), (2, TIME_MASK)):
            width = torch.rand(1) * param
            start = int(torch.rand(1) * (x.shape[axis] - width))
            x = x.index_fill(axis, torch.arange(start, start + int(width), device=x.device), 0.0)
        return torch.stack([OriginalAugmentation.resize_crop(lms[None])[0] for lms in x])


def evar_step(network: EvarNetwork, optimizer, waveforms: torch.Tensor, labels: torch.Tensor) -> float:
    """One iteration of EVAR's loop."""
    lambdas = torch.tensor(
        np.random.beta(MIXUP, MIXUP, size=len(waveforms)), dtype=torch.float, device=waveforms.device
    )
    partners = np.random.permutation(len(waveforms))
    one_hot = nn.functional.one_hot(labels, CLASSES).float()
    mixed = waveforms * lambdas[:, None] + waveforms[partners] * (1 - lambdas[:, None])
    targets = one_hot * lambdas[:, None] + one_hot[partners] * (1 - lambdas[:, None])
    loss = -(targets * network(mixed).log_softmax(dim=-1)).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


def ours_step(trainer: FinetuneTrainer, optimizer, inputs: dict[str, torch.Tensor]) -> float:
    """One training step of `byola-finetune` (Trainer's `training_step` less its bookkeeping)."""
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


def build(feature_d: int, batch: int, device: torch.device, folder: str, kernels: str | None) -> dict[str, Any]:
    """Both sides (the same architecture, initialised alike), their optimisers and one batch of one-second clips."""
    from transformers import TrainingArguments

    config = BYOLAConfig(
        feature_d=feature_d, mean=MEAN, std=STD, classifier_head="evar", use_weighted_layer_sum=False,
        freeze_base_model=False, num_labels=CLASSES,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BYOLAForSequenceClassification(config).to(device).train()
    model.byola.training_kernels = kernels  # None: the device's
    network = EvarNetwork(config).to(device).train()
    arguments = TrainingArguments(folder, use_cpu=device.type == "cpu", report_to=[], seed=0)
    trainer = FinetuneTrainer(
        model=model, args=arguments, feature_extractor=BYOLAFeatureExtractor.from_model_config(config),
        unit=config.sampling_rate, augmentation=FinetuneAugmentation(FREQ_MASK, TIME_MASK, True),
        mixup_alpha=MIXUP, multi_label=False,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    waveforms = (0.1 * torch.randn(batch, config.sampling_rate, generator=generator)).to(device)
    labels = torch.randint(CLASSES, (batch,), generator=generator).to(device)
    lengths = torch.full((batch,), config.sampling_rate, device=device)  # on the device, as Trainer moves inputs
    inputs = {"waveforms": waveforms, "lengths": lengths, "labels": labels}
    ours_optimizer = build_optimizer(model, "sgd", LEARNING_RATE)
    evar_optimizer = build_optimizer(network, "sgd", LEARNING_RATE)
    return {
        "ours": lambda: ours_step(trainer, ours_optimizer, inputs),
        "evar": lambda: evar_step(network, evar_optimizer, waveforms, labels),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark byola-finetune's training step against EVAR's loop.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--feature_d", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--training_kernels", choices=["reference", "channels_last", "cpu"], help="Force ours to one kernel set"
    )
    parser.add_argument("--json", help="Also write the row to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        steps = build(args.feature_d, args.batch, device, folder, args.training_kernels)
        seconds = median_step_seconds(steps, device, args.repeats)
    row = {
        "machine": machine(device),
        "feature_d": args.feature_d,
        "batch": args.batch,
        "ours_clips_per_second": args.batch / seconds["ours"],
        "evar_clips_per_second": args.batch / seconds["evar"],
        "speedup": seconds["evar"] / seconds["ours"],
    }
    print(f"{row['machine']}: v1 {args.feature_d}-d, batch {args.batch}, one-second clips")
    print(
        f"ours {row['ours_clips_per_second']:.1f} clips/s, EVAR's loop {row['evar_clips_per_second']:.1f} clips/s: "
        f"{row['speedup']:.2f}x (goal >= {GOAL:g}x: {'met' if row['speedup'] >= GOAL else 'not met'})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()

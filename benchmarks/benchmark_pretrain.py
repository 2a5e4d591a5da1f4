"""Training throughput of byola_hf's BYOL-A pre-training step against the original step, same run, device, batch.

The baseline is the original training step rebuilt from the original code's facts (nttcslab/byol-a `train.py`,
`byol_a/augmentations.py`, `v2/`, and lucidrains/byol-pytorch at 2aa84ee with `byol_pytorch.diff`): per clip, in
Python, the pre-normalisation, then twice `MixupBYOLA` (a list as memory bank, NumPy draws) and `RandomResizeCrop`
(a zero canvas and `F.interpolate` per crop), plus `RandomLinearFader` for v2; `NormalizeBatch` over the 2B views;
the BYOL learner (online encoder + projector on each view, predictor, the target's two no-grad forwards, the
symmetric loss); backward; Adam; the EMA of the target, parameter by parameter. Ours is
`BYOLAForPreTraining(input_features=log_mels)` (batched augmentations on the device), backward, Adam and
`update_target()`. Both start from the same raw log-mel crops already on the device, the steps alternate, and the
median seconds per step are reported as clips per second; `--memory` adds each side's peak memory (CPU: the
resident high-water mark of a fresh process; GPU: the allocator's peak).

    python benchmarks/benchmark_pretrain.py [--device cpu|cuda] [--variant AudioNTT2020|AudioNTT2022]
                                            [--feature_d 512] [--batch 64] [--repeats 5] [--bf16] [--memory]
                                            [--json OUT]
"""

import argparse
import copy
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root has byola_hf/

from benchmarks.benchmark import in_fresh_process, machine, memory_status_mb  # noqa: E402
from byola_hf.configuration_byola import BYOLAConfig, BYOLAPreTrainingConfig  # noqa: E402
from byola_hf.pretraining.modeling_pretraining import BYOLAForPreTraining  # noqa: E402


# Goals of issue 21 (speed-up over the original step), per device and whether ours runs under bf16 autocast; set
# for v1 512-d at batch 64 (CPU) and 256 (GPU).
GOALS = {("cpu", False): 2.0, ("cuda", False): 3.0, ("cuda", True): 5.0}
GOAL_SETTING = {"cpu": ("AudioNTT2020", 512, 64), "cuda": ("AudioNTT2020", 512, 256)}
MEAN, STD = -7.6, 5.2  # any finite pre-normalisation statistics give the same timings


# --- the original step, rebuilt from the facts -------------------------------------------------------------------


class OriginalEncoder(nn.Module):
    """AudioNTT2020 (v1: 3 blocks, fc d -> d) or AudioNTT2022 (v2: 2 blocks, fc 2048, conv features stacked) as
    the original `nn.Sequential` layout, with the max + mean clip embedding."""

    def __init__(self, config: BYOLAConfig):
        super().__init__()
        layers, channels = [], 1
        for _ in range(config.num_conv_layers):
            layers += [nn.Conv2d(channels, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2, 2)]
            channels = 64
        self.features = nn.Sequential(*layers)
        hidden, output = config.mlp_sizes
        conv_d = config.conv_hidden_sizes[-1]
        self.fc = nn.Sequential(
            nn.Linear(conv_d, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, output), nn.ReLU()
        )
        self.stack = config.concat_conv_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).permute(0, 3, 2, 1)
        batch, frames, mels, channels = x.shape
        x = x.reshape(batch, frames, mels * channels)
        x = torch.cat([x, self.fc(x)], dim=-1) if self.stack else self.fc(x)
        return x.max(dim=1)[0] + x.mean(dim=1)


def original_mlp(size: int, hidden: int, output: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(size, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, output)
    )


class OriginalLearner(nn.Module):
    """The patched byol-pytorch BYOL: online (net, projector), predictor, a deep-copied target."""

    def __init__(self, config: BYOLAPreTrainingConfig):
        super().__init__()
        self.net = OriginalEncoder(config)
        self.projector = original_mlp(config.feature_d, config.projection_hidden_size, config.projection_size)
        self.predictor = original_mlp(config.projection_size, config.projection_hidden_size, config.projection_size)
        self.target = nn.ModuleList([copy.deepcopy(self.net), copy.deepcopy(self.projector)]).requires_grad_(False)
        self.decay = config.ema_decay

    def forward(self, one: torch.Tensor, two: torch.Tensor) -> torch.Tensor:
        online_one, online_two = self.projector(self.net(one)), self.projector(self.net(two))
        prediction_one, prediction_two = self.predictor(online_one), self.predictor(online_two)
        with torch.no_grad():
            target_one = self.target[1](self.target[0](one)).detach_()
            target_two = self.target[1](self.target[0](two)).detach_()

        def loss(x, y):
            x, y = nn.functional.normalize(x, dim=-1, p=2), nn.functional.normalize(y, dim=-1, p=2)
            return 2 - 2 * (x * y).sum(dim=-1)

        return (loss(prediction_one, target_two) + loss(prediction_two, target_one)).mean()

    def load_original_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a state of the original code's learner (`online_encoder.net.*`, ..., `target_encoder.*`): its
        modules are these, under other prefixes."""
        prefixes = {
            "online_encoder.net.": "net.",
            "online_encoder.projector.net.": "projector.",
            "online_predictor.net.": "predictor.",
            "target_encoder.net.": "target.0.",
            "target_encoder.projector.net.": "target.1.",
        }
        renamed = {}
        for key, value in state_dict.items():
            prefix = next((prefix for prefix in prefixes if key.startswith(prefix)), None)
            if prefix is not None:  # the learner's duplicate `net.*` has no place here
                renamed[prefixes[prefix] + key[len(prefix) :]] = value
        self.load_state_dict(renamed, strict=True)

    @torch.no_grad()
    def update_moving_average(self) -> None:
        online = [*self.net.parameters(), *self.projector.parameters()]
        for current, average in zip(online, self.target.parameters()):
            average.data = average.data * self.decay + (1 - self.decay) * current.data


class OriginalAugmentation:
    """Per clip: `MixupBYOLA` (list FIFO, NumPy draws), `RandomResizeCrop`, and v2's `RandomLinearFader`."""

    def __init__(self, ratio: float, fader_gain: float, memory: int = 2048):
        self.ratio, self.fader_gain, self.memory, self.bank = ratio, fader_gain, memory, []

    def mixup(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.ratio * np.random.random()
        if self.bank:
            z = self.bank[np.random.randint(len(self.bank))]
            mixed = torch.log((1.0 - alpha) * x.exp() + alpha * z.exp() + torch.finfo(x.dtype).eps)
        else:
            mixed = x
        self.bank = (self.bank + [x])[-self.memory :]
        return mixed.to(torch.float)

    @staticmethod
    def resize_crop(lms: torch.Tensor) -> torch.Tensor:
        height, width = lms.shape[-2:]
        canvas = torch.zeros((lms.shape[0], height, int(width * 1.5)), device=lms.device)
        left = (canvas.shape[-1] - width) // 2
        canvas[:, :, left : left + width] = lms
        h = int(np.clip(int(np.random.uniform(0.6, 1.5) * height), 1, height))
        w = int(np.clip(int(np.random.uniform(0.6, 1.5) * width), 1, canvas.shape[-1]))
        i = random.randint(0, height - h) if height > h else 0
        j = random.randint(0, canvas.shape[-1] - w) if canvas.shape[-1] > w else 0
        crop = canvas[:, i : i + h, j : j + w]
        resized = nn.functional.interpolate(crop[None], size=(height, width), mode="bicubic", align_corners=True)
        return resized[0].to(torch.float)

    def fade(self, lms: torch.Tensor) -> torch.Tensor:
        head, tail = self.fader_gain * (2.0 * np.random.rand(2) - 1.0)
        slope = torch.linspace(head, tail, lms.shape[2], dtype=lms.dtype).reshape(1, 1, -1).to(lms.device)
        return lms + slope

    def __call__(self, lms: torch.Tensor) -> torch.Tensor:
        view = self.resize_crop(self.mixup(lms))
        return self.fade(view) if self.fader_gain > 0 else view


def normalize_batch(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = torch.clamp(x.std(dim=(0, 2, 3), keepdim=True), torch.finfo().eps, torch.finfo().max)
    return (x - mean) / std


# --- the two steps ------------------------------------------------------------------------------------------------


def build(config: BYOLAPreTrainingConfig, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    ours = BYOLAForPreTraining(config).to(device).train()
    learner = OriginalLearner(config).to(device).train()
    return {
        "ours": ours,
        "ours_optimizer": torch.optim.Adam([p for p in ours.parameters() if p.requires_grad], lr=3e-4),
        "learner": learner,
        "learner_optimizer": torch.optim.Adam([p for p in learner.parameters() if p.requires_grad], lr=3e-4),
        "augment": OriginalAugmentation(config.mixup_ratio, config.fader_gain, config.mixup_memory_size),
    }


def ours_step(parts: dict[str, Any], log_mel: torch.Tensor, bf16: bool) -> float:
    model, optimizer = parts["ours"], parts["ours_optimizer"]
    with torch.autocast(log_mel.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_features=log_mel).loss
    loss.backward()
    optimizer.step()
    model.update_target()
    optimizer.zero_grad()
    return float(loss.detach())


def original_step(parts: dict[str, Any], log_mel: torch.Tensor) -> float:
    learner, optimizer, augment = parts["learner"], parts["learner_optimizer"], parts["augment"]
    ones, twos = [], []
    for lms in (log_mel[:, None] - MEAN) / STD:  # each clip (1, F, T), pre-normalised
        ones.append(augment(lms))
        twos.append(augment(lms))
    batch = log_mel.shape[0]
    views = normalize_batch(torch.cat([torch.stack(ones), torch.stack(twos)]))
    loss = learner(views[:batch], views[batch:])
    loss.backward()
    optimizer.step()
    learner.update_moving_average()
    optimizer.zero_grad()
    return float(loss.detach())


def log_mels(batch: int, config: BYOLAPreTrainingConfig, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return (MEAN + STD * torch.randn(batch, config.n_mels, config.crop_frames, generator=generator)).to(device)


def time_steps(parts, log_mel: torch.Tensor, repeats: int, bf16: bool) -> dict[str, float]:
    """Median seconds per step of ours and the original's ([`median_step_seconds`])."""
    sides = {"ours": lambda: ours_step(parts, log_mel, bf16), "original": lambda: original_step(parts, log_mel)}
    return median_step_seconds(sides, log_mel.device, repeats)


def median_step_seconds(steps: dict[str, Callable[[], Any]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds per call of each of `steps`, the calls alternating after one warm-up call each (on a GPU,
    synchronised around each call)."""

    def timed(function) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for function in steps.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, function in steps.items():
            times[name].append(timed(function))
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_mb(which: str, config_dict: dict, batch: int, device: str, bf16: bool) -> float:
    """Peak memory of two steps of one side: a fresh process's resident high-water mark above its size after
    building (CPU), or the allocator's peak above what was allocated (GPU)."""
    return in_fresh_process(_peak_memory_mb, which, config_dict, batch, device, bf16)


def _peak_memory_mb(which: str, config_dict: dict, batch: int, device: str, bf16: bool) -> float:
    config, device = BYOLAPreTrainingConfig(**config_dict), torch.device(device)
    parts, log_mel = build(config, device), log_mels(batch, config, device)
    step = (lambda: ours_step(parts, log_mel, bf16)) if which == "ours" else (lambda: original_step(parts, log_mel))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(), step()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    Path("/proc/self/clear_refs").write_text("5")
    before = memory_status_mb("VmRSS")
    step(), step()
    return memory_status_mb("VmHWM") - before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark byola_hf's pre-training step against the original's.")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    parser.add_argument("--variant", default="AudioNTT2020", help="AudioNTT2020 (v1) or AudioNTT2022 (v2)")
    parser.add_argument("--feature_d", type=int, default=None, help="Encoder width (default: 512 v1, 3072 v2)")
    parser.add_argument("--batch", type=int, default=64, help="Clips per step (each makes two views)")
    parser.add_argument("--repeats", type=int, default=5, help="Timed steps of each side (medians are reported)")
    parser.add_argument("--bf16", action="store_true", help="Run our step under bf16 autocast")
    parser.add_argument("--memory", action="store_true", help="Also measure each side's peak memory")
    parser.add_argument("--json", default=None, help="Write the result to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    feature_d = args.feature_d or (512 if args.variant == "AudioNTT2020" else 3072)
    config = BYOLAPreTrainingConfig.from_encoder_config(
        BYOLAConfig.from_variant(args.variant, feature_d=feature_d), mean=MEAN, std=STD
    )
    print(machine(device))
    parts, log_mel = build(config, device), log_mels(args.batch, config, device)
    seconds = time_steps(parts, log_mel, args.repeats, args.bf16)
    row = {
        "variant": args.variant,
        "feature_d": feature_d,
        "batch": args.batch,
        "device": device.type,
        "bf16": args.bf16,
        "ours_clips_per_second": args.batch / seconds["ours"],
        "original_clips_per_second": args.batch / seconds["original"],
        "speedup": seconds["original"] / seconds["ours"],
    }
    goal = GOALS.get((device.type, args.bf16))
    if GOAL_SETTING.get(device.type) != (args.variant, feature_d, args.batch):
        goal = None  # the goals are stated for one setting; other rows are figures only
    if goal is not None:
        row["goal"], row["goal_met"] = goal, row["speedup"] >= goal
    line = (
        f"{args.variant} {feature_d}-d, batch {args.batch}{' bf16' if args.bf16 else ''}: ours "
        f"{row['ours_clips_per_second']:.1f} clips/s, original {row['original_clips_per_second']:.1f} clips/s, "
        f"{row['speedup']:.2f}x" + (f" (goal >={goal:g}x {'met' if row['goal_met'] else 'BELOW'})" if goal else "")
    )
    if args.memory:
        config_dict = config.to_dict()
        for which in ("ours", "original"):
            row[f"{which}_peak_mb"] = peak_memory_mb(which, config_dict, args.batch, args.device, args.bf16)
        line += f"; peak memory ours {row['ours_peak_mb']:.0f} MB, original {row['original_peak_mb']:.0f} MB"
    print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()

"""Exact per-task normalisation statistics of BYOL-A's log-mel input, computed with `datasets.map`.

BYOL-A normalises every log-mel spectrogram with the scalar mean and standard deviation of the downstream task's
data. This module computes them exactly (float64, over every valid frame and mel bin of every example, no
padding) from per-batch partial moments merged with Chan et al.'s parallel algorithm, so memory stays bounded
whatever the dataset size, `num_proc` workers and `torchrun` ranks can share the work, and the result is written
into the model's config.
"""

import argparse
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .configuration_byola import BYOLAConfig
from .feature_extraction_byola import BYOLAFeatureExtractor, to_mono_waveforms
from .hub import add_push_arguments, check_push_arguments, push_to_hub, save_model_card


@dataclass
class LogMelMoments:
    """Count, mean and sum of squared deviations (`m2`) of a set of log-mel values, in float64."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def from_values(cls, values: np.ndarray) -> "LogMelMoments":
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return cls()
        mean = float(values.mean())
        return cls(count=int(values.size), mean=mean, m2=float(np.square(values - mean).sum()))

    def merge(self, other: "LogMelMoments") -> "LogMelMoments":
        """Moments of the union (Chan, Golub & LeVeque's pairwise update, stable for any sizes)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / count
        return LogMelMoments(count=count, mean=mean, m2=m2)

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(self.m2 / self.count)


@dataclass
class StatsResult:
    """What [`compute_stats`] found: the statistics and where they came from."""

    mean: float
    std: float
    num_examples: int
    num_frames: int
    num_values: int
    audio_seconds: float
    provenance: dict[str, Any]


class RunningNormEstimate:
    """
    The SUPERB upstream's "calcnorm" estimate, for comparison with numbers users already have: over zero-padded
    batches, a running mean of the batch means, and a running mean of each batch's mean squared deviation from the
    running mean of that moment; the std is its square root, clamped to `[float32 eps, float32 max]`. The original
    stops after 10,000 batches.
    """

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


def batch_moments(
    batch: dict[str, list],
    feature_extractor: BYOLAFeatureExtractor,
    audio_column_name: str,
    num_threads: int | None = None,
) -> dict[str, list]:
    """
    `datasets.map(batched=True)` function: one row of partial moments per batch, never the features.

    `num_threads=1` in forked `num_proc` workers: they are the parallelism, and torch's thread pool inherited
    across `fork` deadlocks.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    waveforms, sampling_rate = to_mono_waveforms(batch[audio_column_name])
    features = feature_extractor(waveforms, sampling_rate=sampling_rate, padding=False)
    moments = LogMelMoments()
    for log_mel in features["input_features"]:
        moments = moments.merge(LogMelMoments.from_values(log_mel))
    return {
        "count": [moments.count],
        "mean": [moments.mean],
        "m2": [moments.m2],
        "num_examples": [len(waveforms)],
        "num_frames": [sum(log_mel.shape[-1] for log_mel in features["input_features"])],
        "num_samples": [sum(len(waveform) for waveform in waveforms)],
    }


def load_audio_dataset(
    dataset_name: str,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    audio_column_name: str = "audio",
    sampling_rate: int = 16000,
    streaming: bool = False,
):
    """
    Load one split of a Hub dataset, a local `audiofolder` (`dataset_name="audiofolder"`, `data_dir=...`) or a
    dataset saved with `save_to_disk`, check its audio column and cast it to decode mono audio at `sampling_rate`.
    """
    import datasets

    path = Path(dataset_name)
    saved = path.is_dir() and any((path / name).exists() for name in ("dataset_dict.json", "state.json"))
    try:
        if saved:
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise ValueError(f"Split '{split}' not found in {path}; it has {sorted(dataset)}.")
                dataset = dataset[split]
            if streaming:
                dataset = dataset.to_iterable_dataset()
        else:
            dataset = datasets.load_dataset(
                dataset_name, dataset_config_name, data_dir=data_dir, split=split, streaming=streaming
            )
    except ValueError as error:
        if "split" in str(error).lower():
            raise ValueError(f"Could not load split '{split}' of {dataset_name}: {error}") from error
        raise
    except (ConnectionError, FileNotFoundError, OSError) as error:
        offline = " The Hub is unreachable (HF_HUB_OFFLINE is set or no network)." if _hub_offline() else ""
        raise ValueError(
            f"Could not load the dataset '{dataset_name}'"
            f"{f' ({dataset_config_name})' if dataset_config_name else ''}: {str(error).splitlines()[0]}.{offline} "
            "Pass a Hub dataset name, `audiofolder` with --data_dir, or a directory saved with `save_to_disk`."
        ) from error

    if not streaming and len(dataset) == 0:
        raise ValueError(f"Split '{split}' of {dataset_name} is empty: there is nothing to compute statistics on.")
    features = dataset.features
    if features is None or audio_column_name not in features:
        columns = sorted(features) if features is not None else dataset.column_names
        raise ValueError(
            f"The dataset has no column '{audio_column_name}'; its columns are {columns}. Pass the audio column with "
            "--audio_column_name."
        )
    if not isinstance(features[audio_column_name], datasets.Audio):
        audio_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Audio)]
        raise ValueError(
            f"Column '{audio_column_name}' is not an audio column (it is {type(features[audio_column_name]).__name__})"
            f"; audio columns: {audio_columns or 'none'}."
        )
    return dataset.cast_column(audio_column_name, datasets.Audio(sampling_rate=sampling_rate, mono=True))


def load_byola_front_end(model_name_or_path: str) -> tuple[BYOLAConfig, BYOLAFeatureExtractor]:
    """The model's config and its feature extractor (built from the config when the directory has none)."""
    from transformers import AutoConfig, AutoFeatureExtractor

    try:
        config = AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Could not load a BYOL-A model from '{model_name_or_path}': {str(error).splitlines()[0]} Pass a directory "
            "written by `byola-convert` (or a Hub model id)."
        ) from error
    if not isinstance(config, BYOLAConfig):
        raise ValueError(f"'{model_name_or_path}' holds a '{config.model_type}' model, not a BYOL-A ('byola') one.")
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path)
    except OSError:
        feature_extractor = BYOLAFeatureExtractor.from_model_config(config)
    if not feature_extractor.matches_model_config(config):
        raise ValueError(
            f"The feature extractor saved in '{model_name_or_path}' does not match its config's front-end; "
            "re-create it with `BYOLAFeatureExtractor.from_model_config(config)`."
        )
    return config, feature_extractor


def compute_moments(
    dataset,
    feature_extractor: BYOLAFeatureExtractor,
    audio_column_name: str = "audio",
    batch_size: int = 16,
    num_proc: int | None = None,
    streaming: bool = False,
) -> tuple[LogMelMoments, int, int, int]:
    """
    Exact moments of the log-mels of every example of `dataset` (already cast to decode at the right rate), via
    `dataset.map(batched=True)` returning one row of partial moments per batch.

    Returns:
        `(moments, num_examples, num_frames, num_samples)`.
    """
    columns = list(dataset.features) if dataset.features is not None else dataset.column_names
    partials = dataset.map(
        batch_moments,
        batched=True,
        batch_size=batch_size,
        remove_columns=columns,
        fn_kwargs={
            "feature_extractor": feature_extractor,
            "audio_column_name": audio_column_name,
            "num_threads": 1 if num_proc is not None and num_proc > 1 else None,
        },
        **({} if streaming else {"num_proc": num_proc, "desc": "log-mel moments"}),
    )
    moments, examples, frames, samples = LogMelMoments(), 0, 0, 0
    rows = partials if not streaming else tqdm(partials, desc="log-mel moments (streaming)", unit="batch")
    for row in rows:
        moments = moments.merge(LogMelMoments(row["count"], row["mean"], row["m2"]))
        examples, frames, samples = examples + row["num_examples"], frames + row["num_frames"], samples + row["num_samples"]
    return moments, examples, frames, samples


def s3prl_estimate(
    dataset, feature_extractor: BYOLAFeatureExtractor, audio_column_name: str = "audio", batch_size: int = 16
) -> tuple[RunningNormEstimate, int, int, int]:
    """The SUPERB upstream's running estimate over zero-padded batches of `batch_size` waveforms."""
    estimate, examples, frames, samples = RunningNormEstimate(), 0, 0, 0
    batch: list[np.ndarray] = []

    def flush() -> None:
        longest = max(len(waveform) for waveform in batch)
        padded = torch.zeros(len(batch), longest)
        for row, waveform in zip(padded, batch):
            row[: len(waveform)] = torch.from_numpy(waveform)
        estimate.put(feature_extractor.log_mel(padded))

    for example in tqdm(dataset, desc="running estimate (s3prl)", unit="example"):
        waveform = np.asarray(example[audio_column_name]["array"], dtype=np.float32)
        batch.append(waveform)
        examples, samples = examples + 1, samples + len(waveform)
        frames += int(feature_extractor.num_frames(len(waveform)))
        if len(batch) == batch_size:
            flush()
            batch = []
        if estimate.updates >= estimate.max_updates:
            break
    if batch:
        flush()
    return estimate, examples, frames, samples


def compute_stats(
    model_name_or_path: str,
    dataset_name: str,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    audio_column_name: str = "audio",
    num_proc: int | None = None,
    batch_size: int = 16,
    max_examples: int | None = None,
    seed: int = 42,
    streaming: bool = False,
    mode: str = "exact",
    output_dir: str | None = None,
) -> StatsResult:
    """
    Compute a task's log-mel statistics and, when `output_dir` is given, write them into the model's config and save
    the model directory there (`output_dir` may be the model directory itself).

    Under `torchrun` (`WORLD_SIZE > 1`) each rank takes its shard (`split_dataset_by_node`), the partial moments
    are gathered and merged in rank order, and only rank 0 writes; the result equals the single-process one.

    Args:
        model_name_or_path: a BYOL-A model directory or Hub id.
        dataset_name: a Hub dataset, `"audiofolder"` (with `data_dir`), or a `save_to_disk` directory.
        mode: `"exact"` (default) or `"s3prl"`, the original running estimate over zero-padded batches.
        max_examples: use a random subset of this many examples, drawn with `seed`.
    """
    if mode not in ("exact", "s3prl"):
        raise ValueError(f"mode must be 'exact' or 's3prl', got {mode!r}.")
    config, feature_extractor = load_byola_front_end(model_name_or_path)
    dataset = load_audio_dataset(
        dataset_name, dataset_config_name, data_dir, split, audio_column_name, feature_extractor.sampling_rate,
        streaming,
    )
    if max_examples is not None:
        if streaming:
            dataset = dataset.shuffle(seed=seed, buffer_size=10_000).take(max_examples)
        else:
            dataset = dataset.shuffle(seed=seed).select(range(min(max_examples, len(dataset))))

    with _process_group() as (rank, world_size):
        if world_size > 1:
            from datasets.distributed import split_dataset_by_node

            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)

        if mode == "exact":
            moments, examples, frames, samples = compute_moments(
                dataset, feature_extractor, audio_column_name, batch_size, num_proc, streaming
            )
            if world_size > 1:
                moments, examples, frames, samples = _gather_and_merge(moments, examples, frames, samples)
            if moments.count == 0:
                raise ValueError("No audio was found: the selected examples are empty.")
            mean, std, values = moments.mean, moments.std, moments.count
        else:
            if world_size > 1:
                raise ValueError("--mode s3prl reproduces a single-process running estimate; run it without torchrun.")
            estimate, examples, frames, samples = s3prl_estimate(dataset, feature_extractor, audio_column_name, batch_size)
            if estimate.updates == 0:
                raise ValueError("No audio was found: the selected examples are empty.")
            mean, std, values = estimate.mean, estimate.std, frames * config.n_mels

        provenance = {
            "dataset": dataset_name,
            "config": dataset_config_name,
            "data_dir": data_dir,
            "split": split,
            "audio_column": audio_column_name,
            "num_examples": examples,
            "num_frames": frames,
            "num_values": values,
            "max_examples": max_examples,
            "seed": seed if max_examples is not None else None,
            "method": mode,
        }
        result = StatsResult(mean, std, examples, frames, values, samples / feature_extractor.sampling_rate, provenance)
        if output_dir is not None and rank == 0:
            save_stats(model_name_or_path, output_dir, config, feature_extractor, result)
        return result


def save_stats(
    model_name_or_path: str,
    output_dir: str,
    config: BYOLAConfig,
    feature_extractor: BYOLAFeatureExtractor,
    result: StatsResult,
) -> None:
    """Write `result` into `config` and save a complete model directory at `output_dir`."""
    config.mean, config.std = result.mean, result.std
    config.stats_provenance = result.provenance
    source, target = Path(model_name_or_path), Path(output_dir)
    if source.is_dir():
        if source.resolve() != target.resolve():
            shutil.copytree(source, target, dirs_exist_ok=True)
        config.save_pretrained(target)
    else:  # a Hub id: load the weights and save them
        from transformers import AutoModel

        model = AutoModel.from_pretrained(model_name_or_path, config=config)
        model.save_pretrained(target)
    feature_extractor.save_pretrained(target)
    save_model_card(target, config)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def _process_group() -> Iterator[tuple[int, int]]:
    """
    `(rank, world_size)` of this process. Under torchrun (`WORLD_SIZE > 1`) it joins the process group for the
    duration and destroys it on the way out: a gloo group left alive until interpreter exit can abort the process
    ("terminate called without an active exception") after the work is done.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield 0, 1
        return
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if created:
            dist.destroy_process_group()


def _gather_and_merge(
    moments: LogMelMoments, examples: int, frames: int, samples: int
) -> tuple[LogMelMoments, int, int, int]:
    """All ranks' partials, merged in rank order so every rank gets the same, deterministic result."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (asdict(moments), examples, frames, samples))
    total = LogMelMoments()
    examples = frames = samples = 0
    for partial, partial_examples, partial_frames, partial_samples in gathered:
        total = total.merge(LogMelMoments(**partial))
        examples, frames, samples = examples + partial_examples, frames + partial_frames, samples + partial_samples
    return total, examples, frames, samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Compute a task's BYOL-A log-mel statistics (exact mean/std) and save them into the model config."
    )
    parser.add_argument("--model_name_or_path", required=True, help="BYOL-A model directory (byola-convert) or Hub id")
    parser.add_argument("--dataset_name", required=True, help="Hub dataset, 'audiofolder', or a save_to_disk path")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--data_dir", default=None, help="Local audio folder for --dataset_name audiofolder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--audio_column_name", default="audio")
    parser.add_argument("--num_proc", type=int, default=None, help="datasets.map worker processes")
    parser.add_argument("--batch_size", type=int, default=16, help="Examples per map batch (and per s3prl batch)")
    parser.add_argument("--max_examples", type=int, default=None, help="Use a random subset of this many examples")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the --max_examples subset")
    parser.add_argument("--streaming", action="store_true", help="Stream the dataset instead of downloading it")
    parser.add_argument("--mode", choices=["exact", "s3prl"], default="exact",
                        help="exact (default) or the original upstream's running estimate")
    parser.add_argument("--output_dir", default=None, help="Where to save the model with its statistics "
                        "(default: update --model_name_or_path in place)")
    add_push_arguments(parser)
    args = parser.parse_args(argv)
    output_dir = args.output_dir or args.model_name_or_path
    if args.output_dir is None and not Path(args.model_name_or_path).is_dir():
        parser.error("--output_dir is required when --model_name_or_path is a Hub id.")
    check_push_arguments(parser, args)
    try:
        result = compute_stats(
            args.model_name_or_path, args.dataset_name, args.dataset_config_name, args.data_dir, args.split,
            args.audio_column_name, args.num_proc, args.batch_size, args.max_examples, args.seed, args.streaming,
            args.mode, output_dir,
        )
    except ValueError as error:
        parser.exit(1, f"error: {error}\n")
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports and pushes
        return
    hours = result.audio_seconds / 3600
    print(f"{result.num_examples} examples, {hours:.2f} h of audio, {result.num_frames} frames ({args.mode})")
    print(json.dumps({"mean": result.mean, "std": result.std}))
    print(f"mean,std={result.mean},{result.std}")
    print(f"Saved to {output_dir} (config.json: mean, std, stats_provenance)")
    if args.push_to_hub:
        url = push_to_hub(output_dir, args.hub_model_id, private=args.private)
        print(f"Pushed to {url}")


if __name__ == "__main__":
    main()

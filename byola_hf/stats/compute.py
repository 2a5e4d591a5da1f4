"""Exact per-task log-mel statistics of a dataset, computed with `datasets.map`, and saved into the model.

Each `map` batch returns one row of partial moments ([`~byola_hf.stats.moments.LogMelMoments`]), never the features, so
memory stays bounded whatever the dataset size; `num_proc` workers and `torchrun` ranks share the work and the
partials merge exactly.

Saved into an `output_dir` of its own, a run records every argument but `MAY_CHANGE` in the folder's marker, so a
re-run with another value of any other is refused, naming it (`byola_hf.tools.outputs`); saved into the model folder
itself, it keeps that folder's marker.
"""

import dataclasses
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import (
    batch_waveforms,
    check_clip_lengths,
    cut_or_pad,
    decode_undecoded_audio,
    display_path,
    pad_waveforms,
    unit_samples,
)
from ..configuration_byola import BYOLAConfig
from ..extras import require_extra
from ..feature_extraction_byola import BYOLAFeatureExtractor, NonFiniteFeaturesError, check_positive
from ..hub import save_model_card
from ..tools.cli import die_with_parent
from ..tools.data import cache_file, load_audio_dataset, load_byola_front_end, load_checked_model, shuffled
from ..tools.distributed import check_device_with_workers, device_for_rank, is_main_process, process_group
from ..tools.outputs import (
    MAY_CHANGE_ON_RESUME,
    claim_output_dir,
    holds_claimed_folders,
    read_marker,
    recorded_arguments,
    save_into,
)
from .moments import LogMelMoments, RunningNormEstimate


COMMAND = "byola-compute-stats"
# A model directory's own files: config, front-end config, weights, the code saved for trust_remote_code, the card.
MODEL_FILE_PATTERNS = ("config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json",
                       "pytorch_model*.bin", "pytorch_model.bin.index.json", "*.py", "README.md")  # fmt: skip
# What saving the statistics into the model folder itself rewrites.
IN_PLACE_FILES = ("config.json", "preprocessor_config.json", "README.md")
# What may differ between a run and a re-run into the same --output_dir: the shared list, and the map workers and the
# device, which change the float rounding of the merged moments only. Every other argument is in the run's record.
MAY_CHANGE = MAY_CHANGE_ON_RESUME | {"num_proc", "device"}
# The seed of the --max_examples subset when none is given.
DEFAULT_SEED = 42


@dataclass
class StatsArguments:
    """What `byola-compute-stats` (and [`compute_stats`]) takes: one field per flag, its help the flag's. A library
    call with no `output_dir` saves nothing (the command passes the model folder itself, updated in place)."""

    model_name_or_path: str = field(metadata={"help": "BYOL-A model directory (byola-convert) or Hub id"})
    dataset_name: str = field(metadata={"help": "Hub dataset, 'audiofolder', or a save_to_disk path"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    data_dir: str | None = field(default=None, metadata={"help": "Local audio folder for --dataset_name audiofolder"})
    split: str = field(default="train", metadata={"help": "Split to compute the statistics on"})
    audio_column_name: str = field(default="audio", metadata={"help": "Audio column"})
    num_proc: int | None = field(default=None, metadata={"help": "datasets.map worker processes"})
    batch_size: int = field(default=16, metadata={"help": "Examples per map batch (and per s3prl batch)"})
    max_examples: int | None = field(default=None, metadata={"help": "Use a random subset of this many examples"})
    seed: int | None = field(default=None, metadata={"help": "Seed of the --max_examples subset (default 42)"})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of downloading it"})
    unit_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Cut or zero-pad every clip to this length first, as byola-extract --unit_seconds and EVAR's "
            "statistics do (the padding counts)"
        },
    )
    mode: str = field(
        default="exact",
        metadata={"help": "exact, or s3prl: the original upstream's running estimate", "choices": ["exact", "s3prl"]},
    )
    device: str | None = field(
        default=None, metadata={"help": "Compute the log-mels on this device, e.g. cuda (default: CPU)"}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the statistics run an --output_dir holds when the arguments differ"}
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where to save the model with its statistics (default: update --model_name_or_path in place, "
            "only if a byola_hf command such as byola-convert wrote it)"
        },
    )


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


def batch_moments(
    batch: dict[str, list],
    feature_extractor: BYOLAFeatureExtractor,
    audio_column_name: str,
    num_threads: int | None = None,
    device: str | None = None,
    unit: int | None = None,
) -> dict[str, list]:
    """`datasets.map(batched=True)` function: one row of partial moments per batch (the fields of
    [`~byola_hf.stats.moments.LogMelMoments`]), never the features. With `device` (e.g. `"cuda"`) the log-mels and
    their moments are computed there; with `unit`, of every clip cut or zero-padded to `unit` samples.

    `num_threads=1` in forked `num_proc` workers: they are the parallelism, and torch's thread pool inherited across
    `fork` deadlocks. Such workers also ask to die with the command, so `kill -9` leaves none behind."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
        die_with_parent()
    items = batch[audio_column_name]
    if items and isinstance(items[0], dict) and "array" not in items[0]:  # undecoded: read here, as every command
        sampling_rate = feature_extractor.sampling_rate
        waveforms = [decode_undecoded_audio(item, sampling_rate) for item in items]
    else:
        waveforms, sampling_rate = batch_waveforms(items)
    num_samples = sum(len(waveform) for waveform in waveforms)  # the audio as decoded, as extraction's `duration`
    # A unit pads a clip too short for a frame, as byola-extract --unit_seconds does: only whole clips are refused.
    waveforms = waveforms if unit is None else [cut_or_pad(waveform, unit) for waveform in waveforms]
    check_clip_lengths(waveforms, items, feature_extractor.n_fft // 2 + 1)
    try:
        features = feature_extractor(waveforms, sampling_rate=sampling_rate, padding=False, device=device)
    except NonFiniteFeaturesError as error:
        path = items[error.index].get("path") if isinstance(items[error.index], dict) else None
        raise NonFiniteFeaturesError(error.index, error.peak, display_path(path) if path else None) from None
    moments = LogMelMoments.from_log_mels(features["input_features"], num_samples)
    return {key: [value] for key, value in asdict(moments).items()}


def compute_moments(
    dataset,
    feature_extractor: BYOLAFeatureExtractor,
    audio_column_name: str = "audio",
    batch_size: int = 16,
    num_proc: int | None = None,
    streaming: bool = False,
    device: str | None = None,
    unit: int | None = None,
) -> LogMelMoments:
    """Exact moments of the log-mels of every example of `dataset` (already cast to decode at the right rate; with
    `unit`, cut or zero-padded to `unit` samples), via `dataset.map(batched=True)` returning one row of partial moments
    per batch."""
    from tqdm.auto import tqdm

    columns = list(dataset.features) if dataset.features is not None else dataset.column_names
    settings = {
        "feature_extractor": feature_extractor,
        "audio_column_name": audio_column_name,
        "num_threads": 1 if num_proc is not None and num_proc > 1 else None,
        "device": device,
        "unit": unit,
    }
    stored = {}  # what an IterableDataset's map does not take
    if not streaming:
        fingerprint, cache = cache_file(dataset, batch_moments, batch_size, settings)
        stored = {"num_proc": num_proc, "desc": "log-mel moments", "new_fingerprint": fingerprint}
        stored["cache_file_name"] = cache
    partials = dataset.map(
        batch_moments, batched=True, batch_size=batch_size, remove_columns=columns, fn_kwargs=settings, **stored
    )
    moments = LogMelMoments()
    for row in partials if not streaming else tqdm(partials, desc="log-mel moments (streaming)", unit="batch"):
        moments = moments.merge(LogMelMoments(**row))
    return moments


def s3prl_estimate(
    dataset, feature_extractor: BYOLAFeatureExtractor, audio_column_name: str = "audio", batch_size: int = 16
) -> tuple[RunningNormEstimate, LogMelMoments]:
    """The SUPERB upstream's running estimate over zero-padded batches of `batch_size` waveforms, and the counts of
    the clips it saw (in a [`LogMelMoments`] without values)."""
    from tqdm.auto import tqdm

    estimate, seen = RunningNormEstimate(), LogMelMoments()
    batch: list[np.ndarray] = []
    for example in tqdm(dataset, desc="running estimate (s3prl)", unit="example"):
        waveform = decode_undecoded_audio(example[audio_column_name], feature_extractor.sampling_rate)
        batch.append(waveform)
        seen.num_examples += 1
        seen.num_samples += len(waveform)
        seen.num_frames += int(feature_extractor.num_frames(len(waveform)))
        if len(batch) == batch_size:
            estimate.put(feature_extractor.log_mel(pad_waveforms(batch)))
            batch = []
        if estimate.updates >= estimate.max_updates:
            break
    if batch:
        estimate.put(feature_extractor.log_mel(pad_waveforms(batch)))
    return estimate, seen


def check_stats_arguments(args: StatsArguments) -> StatsArguments:
    """`args` with the subset's seed filled in ([`DEFAULT_SEED`] with `max_examples`), or a one-line `ValueError`
    for an unknown `mode`, counts that are not positive, a GPU `device` with forked workers, and each flag the
    others make of no effect."""
    if args.mode not in ("exact", "s3prl"):
        raise ValueError(f"mode must be 'exact' or 's3prl', got {args.mode!r}.")
    check_positive(batch_size=args.batch_size, num_proc=args.num_proc, max_examples=args.max_examples)
    check_device_with_workers(args.device, args.num_proc)
    s3prl = args.mode == "s3prl"  # the running estimate reads the clips one by one on the CPU, as the upstream did
    saves_in_place = args.output_dir is None or in_place(args.model_name_or_path, args.output_dir)
    for unused, message in (
        (args.seed is not None and args.max_examples is None, "--seed only draws the --max_examples subset"),
        (s3prl and args.num_proc is not None, "--num_proc has no effect with --mode s3prl (one process reads)"),
        (s3prl and args.device is not None, "--device has no effect with --mode s3prl (it runs on the CPU)"),
        (s3prl and args.unit_seconds is not None, "--unit_seconds has no effect with --mode s3prl (whole clips)"),
        (
            args.streaming and args.num_proc is not None,
            "--num_proc has no effect with --streaming (one process reads)",
        ),
        (
            args.overwrite_output_dir and saves_in_place,
            "--overwrite_output_dir only replaces an earlier run in an --output_dir of its own (the model folder "
            "updated in place holds none)",
        ),
    ):
        if unused:
            raise ValueError(f"{message}: drop it.")
    if args.max_examples is not None and args.seed is None:
        return dataclasses.replace(args, seed=DEFAULT_SEED)
    return args


@holds_claimed_folders()
def compute_stats(args: StatsArguments) -> StatsResult:
    """Compute a task's log-mel statistics and, with `args.output_dir`, save the model with them there (see the
    module doc). Under `torchrun` each rank takes its shard (`args.device="cuda"`: its own GPU), the partial moments
    merge in rank order and only rank 0 writes."""
    args = check_stats_arguments(args)
    config, feature_extractor = load_byola_front_end(args.model_name_or_path)
    unit = unit_samples(args.unit_seconds, feature_extractor.sampling_rate, config.min_samples)
    if args.output_dir is not None:  # before the work, not after it
        check_no_trained_head(config, args.model_name_or_path)
        check_in_place_update(args.model_name_or_path, args.output_dir)
        load_checked_model(args.model_name_or_path)  # the weights beside which the statistics would be saved
    source = (args.dataset_name, args.dataset_config_name, args.data_dir, args.split, args.audio_column_name)
    dataset = load_audio_dataset(*source, feature_extractor.sampling_rate, args.streaming)
    dataset = select_examples(dataset, args.max_examples, args.seed, args.streaming)
    if args.output_dir is not None:  # once the data has loaded, before the work
        claim_stats_output(args)
    with process_group() as (rank, world_size):
        if world_size > 1:
            from datasets.distributed import split_dataset_by_node

            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        mean, std, moments = measure(dataset, feature_extractor, args, world_size, unit)
        if moments.num_frames == 0:
            raise ValueError("No audio was found: the selected examples are empty.")
        check_measured_statistics(mean, std, args.dataset_name)
        result = stats_result(mean, std, moments, config, feature_extractor.sampling_rate, args)
        if args.output_dir is not None and rank == 0:
            save_stats(args.model_name_or_path, args.output_dir, config, feature_extractor, result)
        return result


# The most float32 rounding can spread log-mels that are one value, in units of float32's eps times their magnitude:
# a constant (DC) clip of amplitude 0.5 to 1 spreads them by 0.5 to 2.8 of these units.
ROUNDING_SPREAD = 16


def check_measured_statistics(mean: float, std: float, dataset_name: str) -> None:
    """Refuse statistics no model can normalise with, before anything is saved: a std no larger than float32
    rounding (every log-mel value the same: silent or constant audio, whose std of rounding noise would scale the
    model's input by a million) or non-finite values."""
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise ValueError(
            f"The log-mel statistics of {dataset_name} are not finite (mean {mean}, std {std}): some audio holds "
            "samples too large for float32 power; scale it to [-1, 1]."
        )
    if std <= ROUNDING_SPREAD * np.finfo(np.float32).eps * max(abs(mean), 1.0):
        raise ValueError(
            f"The log-mels of {dataset_name} are all the same value up to float32 rounding (std {std:.3g}, mean "
            f"{mean:.4g}): the audio is silent or constant (DC); compute the statistics on audio with sound in it."
        )


def measure(
    dataset, feature_extractor: BYOLAFeatureExtractor, args: StatsArguments, world_size: int, unit: int | None
) -> tuple[float, float, LogMelMoments]:
    """`(mean, std, moments)` of this rank's share, merged across ranks in exact mode (with `unit`: of the clips cut or
    zero-padded to `unit` samples). The audio is decoded by [`~byola_hf.audio.decode_undecoded_audio`], as in
    extraction and pre-training: the same samples, and an unreadable or truncated file is an error naming it."""
    datasets = require_extra("datasets", "stats")
    column = args.audio_column_name
    dataset = dataset.cast_column(column, datasets.Audio(decode=False))
    if args.mode == "exact":
        device = device_for_rank(args.device)
        moments = compute_moments(
            dataset, feature_extractor, column, args.batch_size, args.num_proc, args.streaming, device, unit
        )
        moments = gather_and_merge(moments) if world_size > 1 else moments
        return moments.mean, moments.std, moments
    if world_size > 1:
        raise ValueError("--mode s3prl reproduces a single-process running estimate; run it without torchrun.")
    estimate, moments = s3prl_estimate(dataset, feature_extractor, column, args.batch_size)
    return estimate.mean, estimate.std, moments


def stats_result(
    mean: float, std: float, moments: LogMelMoments, config: BYOLAConfig, sampling_rate: int, args: StatsArguments
) -> StatsResult:
    """The result and its provenance (what `config.stats_provenance` records)."""
    provenance = {
        "dataset": args.dataset_name,
        "config": args.dataset_config_name,
        "data_dir": args.data_dir,
        "split": args.split,
        "audio_column": args.audio_column_name,
        "max_examples": args.max_examples,
        "seed": args.seed if args.max_examples is not None else None,
        "method": args.mode,
        "unit_seconds": args.unit_seconds,
        "num_examples": moments.num_examples,
        "num_frames": moments.num_frames,
        "num_values": moments.num_frames * config.n_mels,
    }
    seconds = moments.num_samples / sampling_rate
    return StatsResult(
        mean, std, moments.num_examples, moments.num_frames, provenance["num_values"], seconds, provenance
    )


def select_examples(dataset, max_examples: int | None, seed: int, streaming: bool):
    """A random subset of `max_examples` examples drawn with `seed`, or the whole dataset."""
    if max_examples is None:
        return dataset
    if streaming:
        return dataset.shuffle(seed=seed, buffer_size=10_000).take(max_examples)
    return shuffled(dataset, seed).select(range(min(max_examples, len(dataset))))


def check_no_trained_head(config: BYOLAConfig, model_name_or_path: str) -> None:
    """Refuse new statistics for a model saved with a task head (byola-run-superb, byola-finetune): it was trained on
    log-mels normalised with its own statistics, and new ones would change the model under its results and card."""
    heads = [name for name in config.architectures or [] if name != "BYOLAModel"]
    if heads:
        raise ValueError(
            f"{model_name_or_path} holds a trained {heads[0]} head, trained on log-mels normalised with its "
            "statistics: new ones would change what it predicts. Compute them for its encoder alone "
            "(BYOLAModel.from_pretrained(...).save_pretrained(DIR), then --model_name_or_path DIR)."
        )


def in_place(model_name_or_path: str, output_dir: str) -> bool:
    """Whether `output_dir` is the model folder itself (the statistics are then saved into it)."""
    model_dir = Path(model_name_or_path)
    return model_dir.is_dir() and model_dir.resolve() == Path(output_dir).resolve()


def check_in_place_update(model_name_or_path: str, output_dir: str) -> None:
    """Refuse to save into the model folder itself unless a byola_hf command's marker lists the files that rewrites
    ([`IN_PLACE_FILES`]): a folder the user saved or edited (their own `README.md`) is never overwritten."""
    if not in_place(model_name_or_path, output_dir):
        return
    model_dir = Path(model_name_or_path)
    listed = (read_marker(model_dir) or {}).get("outputs", [])
    foreign = [
        name
        for name in IN_PLACE_FILES
        if (model_dir / name).exists() and not any(fnmatch(name, pattern) for pattern in listed)
    ]
    if foreign:
        raise ValueError(
            f"{model_dir} holds files no byola_hf command wrote ({', '.join(foreign)}): saving the statistics in "
            "place would overwrite them. Pass --output_dir NEW_FOLDER to save the model with its statistics there "
            "(the model folder is left as it is)."
        )
    try:  # before the work: the save failed only after it
        tempfile.TemporaryFile(dir=model_dir).close()
    except OSError as error:
        raise ValueError(
            f"{model_dir} cannot be written ({error.strerror}): pass --output_dir NEW_FOLDER to save the model with "
            "its statistics there."
        ) from None


def model_files(folder: Path) -> list[Path]:
    """The files that make `folder` a model directory ([`MODEL_FILE_PATTERNS`]): what a copy of the model takes.
    Not another command's run in it (a pre-training run's checkpoints and record, a SUPERB run's): copied, they
    would make the new folder look like that run's to its command, which would resume there."""
    return sorted({path for pattern in MODEL_FILE_PATTERNS for path in folder.glob(pattern) if path.is_file()})


def run_record(args: StatsArguments) -> dict[str, Any]:
    """What a run saved into an `--output_dir` of its own is made of: every argument but [`MAY_CHANGE`]."""
    return {"arguments": recorded_arguments(args, may_change=MAY_CHANGE)}


def claim_stats_output(args: StatsArguments) -> None:
    """Make `args.output_dir` this command's (unless it is the model folder, updated in place), on rank 0 only."""
    if in_place(args.model_name_or_path, args.output_dir) or not is_main_process():
        return
    written = {"config.json", "preprocessor_config.json", "model.safetensors", "README.md"}
    if Path(args.model_name_or_path).is_dir():  # the model folder's own files are copied
        written |= {path.name for path in model_files(Path(args.model_name_or_path))}
    claim_output_dir(args.output_dir, COMMAND, run_record(args), sorted(written), args.overwrite_output_dir)


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
    into_model = in_place(model_name_or_path, output_dir)

    def save(folder: Path) -> None:
        if source.is_dir() and not into_model:
            for path in model_files(source):
                shutil.copy2(path, folder / path.name)
        elif not source.is_dir():  # a Hub id: load the weights and save them
            from transformers import AutoModel

            AutoModel.from_pretrained(model_name_or_path, config=config).save_pretrained(folder)
        config.save_pretrained(folder)
        feature_extractor.save_pretrained(folder)

    save_into(target, save)
    save_model_card(target, config)


def gather_and_merge(moments: LogMelMoments) -> LogMelMoments:
    """All ranks' partial moments, merged in rank order so every rank gets the same, deterministic result."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, asdict(moments))
    total = LogMelMoments()
    for partial in gathered:
        total = total.merge(LogMelMoments(**partial))
    return total

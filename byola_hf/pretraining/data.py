"""Pre-training data: the training clips ([`training_clips`]), random crops of them drawn per epoch, and one pass
over them for the statistics ([`statistics`]) before training.

Decoding and cropping run in DataLoader workers (CPU); the log-mel and the augmentations run on the training device
([`~byola_hf.pretraining.trainer.BYOLAPreTrainer`]). Which clip and which crop come at each step depends on the
seed and the epoch only ([`EpochCropSampler`]), so a run resumed from a checkpoint sees the same crops as one that
was never interrupted, on any number of workers. A stream's also depend on the number of workers, each of which
reads its own shards ([`StreamingCropDataset`]).
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import TrainingArguments

from ..audio import decode_undecoded_audio
from ..configuration_byola import check_statistics
from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..stats.compute import batch_moments
from ..stats.moments import LogMelMoments
from ..tools.data import cache_file, draw_rows, load_audio_dataset, load_source


# Clips held by the shuffle buffer of a streamed dataset (each pass is read in another buffered order).
STREAM_SHUFFLE_BUFFER = 1000


def crop_waveform(waveform: np.ndarray, samples: int, position: float, pad_both_ends: bool) -> np.ndarray:
    """A crop of `samples` samples as the original takes it: a longer clip is cut at `int(position * (excess + 1))`
    (`position` uniform in [0, 1)); a shorter one is zero-padded at both ends (v1) or at the end (v2)."""
    excess = len(waveform) - samples
    if excess > 0:
        start = min(int(position * (excess + 1)), excess)
        return waveform[start : start + samples]
    missing = -excess
    before = missing // 2 if pad_both_ends else 0
    return np.pad(waveform, (before, missing - before))


@dataclass
class ClipCropper:
    """Decodes one undecoded audio item at `sampling_rate` (the shared checks: unreadable, empty and non-finite audio
    are errors naming the file) and crops it ([`crop_waveform`]) to a float32 tensor `(samples,)`."""

    audio_column_name: str
    sampling_rate: int
    samples: int
    pad_both_ends: bool

    def __call__(self, row: dict, position: float) -> torch.Tensor:
        waveform = decode_undecoded_audio(row[self.audio_column_name], self.sampling_rate)  # refuses empty audio
        return torch.from_numpy(crop_waveform(waveform, self.samples, position, self.pad_both_ends).copy())


class CropDataset(torch.utils.data.Dataset):
    """The training clips of an undecoded audio dataset; item `(index, position)` is clip `index` cropped at
    `position` by `cropper`."""

    def __init__(self, dataset, cropper: ClipCropper) -> None:
        self.dataset = dataset
        self.cropper = cropper

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, float]) -> torch.Tensor:
        index, position = item
        return self.cropper(self.dataset[int(index)], position)


class StreamingCropDataset(torch.utils.data.IterableDataset):
    """Crops of a streamed dataset ([`training_clips`]), one per clip as it arrives, pass after pass without end: pass
    `p` reads the stream in a shuffled order (a buffer of `STREAM_SHUFFLE_BUFFER` clips seeded by `(seed, p)`) and
    draws crop positions from a generator seeded by `(seed, p, DataLoader worker)`. DataLoader workers read disjoint
    shards of the stream and count their own passes.

    Endless, so batches run on across passes (none is cut short at a pass's end) and Trainer's run is one epoch of
    `--max_steps` steps: a resumed run skips exactly the batches already trained, wherever the passes end, and
    persistent workers move on to the next pass as fresh ones would."""

    def __init__(self, stream, cropper: ClipCropper, seed: int) -> None:
        self.stream = stream
        self.cropper = cropper
        self.seed = seed

    def __iter__(self) -> Iterator[torch.Tensor]:
        worker = torch.utils.data.get_worker_info()
        for pass_index in itertools.count():
            stream = self.stream.shuffle(seed=self.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
            stream.set_epoch(pass_index)
            positions = np.random.default_rng([self.seed, pass_index, worker.id if worker is not None else 0])
            clips = 0
            for row in stream:
                clips += 1
                yield self.cropper(row, positions.random())
            if clips == 0:  # an empty stream, or a worker without a shard: nothing to repeat
                return


class EpochCropSampler(torch.utils.data.Sampler):
    """Every clip once per epoch in a random order, each with a random crop position: `(index, position)` pairs drawn
    from a generator seeded by `(seed, epoch)` (`set_epoch`, which Trainer calls), the same on every rank."""

    def __init__(self, num_examples: int, seed: int) -> None:
        self.num_examples = num_examples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[tuple[int, float]]:
        entropy = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(entropy))
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        positions = torch.rand(self.num_examples, generator=generator, dtype=torch.float64).tolist()
        return iter(zip(order, positions))


def collate_waveforms(crops: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Crops of equal length -> `{"input_values": (batch, samples)}`."""
    return {"input_values": torch.stack(crops)}


@dataclass
class DataSummary:
    """What one pass over the clips found: exact log-mel moments (when computed), the longest clip, the audio."""

    moments: LogMelMoments
    longest_samples: int
    num_examples: int
    audio_seconds: float


def scan_batch(
    batch: dict[str, list], feature_extractor: BYOLAFeatureExtractor, audio_column_name: str, with_moments: bool
) -> dict[str, list]:
    """`datasets.map(batched=True)` function: the batch's clip lengths and, `with_moments`, its exact moments."""
    rate = feature_extractor.sampling_rate
    waveforms = [decode_undecoded_audio(item, rate) for item in batch[audio_column_name]]
    paths = [item.get("path") for item in batch[audio_column_name]]  # to name a clip that cannot be used
    for path, waveform in zip(paths, waveforms):  # named here; in training a nan loss would say nothing of it
        feature_extractor.check_loud_clip(waveform, path or "a clip")
    row = {"longest": [max(len(waveform) for waveform in waveforms)], "samples": [sum(map(len, waveforms))]}
    row["clips"] = [len(waveforms)]
    if with_moments:
        decoded = [{"array": w, "sampling_rate": rate, "path": path} for w, path in zip(waveforms, paths)]
        row.update(batch_moments({audio_column_name: decoded}, feature_extractor, audio_column_name))
    return row


def scan_clips(
    dataset, feature_extractor: BYOLAFeatureExtractor, audio_column_name: str, with_moments: bool, batch_size: int = 16
) -> DataSummary:
    """One decoding pass over `dataset` (undecoded audio column): the longest clip and, `with_moments`, the exact
    moments of every clip's log-mel (the pre-normalisation statistics)."""
    settings = {"feature_extractor": feature_extractor, "audio_column_name": audio_column_name}
    fingerprint, cache = cache_file(dataset, scan_batch, batch_size, with_moments, settings)
    partials = dataset.map(
        scan_batch,
        batched=True,
        batch_size=batch_size,
        remove_columns=dataset.column_names,
        fn_kwargs={**settings, "with_moments": with_moments},
        desc="decoding the clips" + (" and their log-mel moments" if with_moments else ""),
        load_from_cache_file=False,
        new_fingerprint=fingerprint,
        cache_file_name=cache,
    )
    return summarise(partials, with_moments, feature_extractor.sampling_rate)


def scan_stream(
    stream, feature_extractor: BYOLAFeatureExtractor, audio_column_name: str, with_moments: bool, batch_size: int = 16
) -> DataSummary:
    """[`scan_clips`] over a streamed dataset: one pass as the clips arrive, with a progress bar."""
    from tqdm.auto import tqdm

    rows = (
        scan_batch(batch, feature_extractor, audio_column_name, with_moments)
        for batch in tqdm(stream.iter(batch_size=batch_size), desc="decoding the stream", unit=" batches")
    )
    partials = ({key: values[0] for key, values in row.items()} for row in rows)
    return summarise(partials, with_moments, feature_extractor.sampling_rate)


def longest_until(stream, audio_column_name: str, sampling_rate: int, samples: int) -> int:
    """The longest clip of a stream (undecoded audio column) read until one has `samples` samples or more: with
    given statistics, the check that some clip fills a crop costs one clip, not a pass over the stream."""
    longest = 0
    for row in stream:
        longest = max(longest, len(decode_undecoded_audio(row[audio_column_name], sampling_rate)))
        if longest >= samples:
            break
    return longest


def summarise(partials, with_moments: bool, sampling_rate: int) -> DataSummary:
    """The [`DataSummary`] of [`scan_batch`]'s rows, merged."""
    moments, longest, samples, count = LogMelMoments(), 0, 0, 0
    for row in partials:
        longest, samples, count = max(longest, row["longest"]), samples + row["samples"], count + row["clips"]
        if with_moments:
            moments = moments.merge(LogMelMoments(**{key: row[key] for key in LogMelMoments.__dataclass_fields__}))
    return DataSummary(moments, longest, count, samples / sampling_rate)


def statistics(model_args, data_args, dataset, feature_extractor, crop_samples: int) -> dict[str, Any]:
    """Exact statistics of the clips (or the given ones), after checking that some clip fills a crop."""
    given = model_args.mean is not None or model_args.std is not None
    if given and (model_args.mean is None or model_args.std is None):
        raise ValueError("Pass both --mean and --std, or neither (then they are computed on the data).")
    if given:
        check_statistics(model_args.mean, model_args.std)
    column, batch_size = data_args.audio_column_name, data_args.preprocessing_batch_size
    if given and data_args.streaming:  # nothing to compute: the stream is read only up to a clip that fills a crop
        longest = longest_until(dataset, column, feature_extractor.sampling_rate, crop_samples)
        check_crop_filled(longest, crop_samples, feature_extractor.sampling_rate)
        source = provenance(data_args, None, "given")
        return {"mean": model_args.mean, "std": model_args.std, "provenance": source, "audio_seconds": None}
    scan = scan_stream if data_args.streaming else scan_clips
    summary = scan(dataset, feature_extractor, column, not given, batch_size)
    check_crop_filled(summary.longest_samples, crop_samples, feature_extractor.sampling_rate)
    mean, std = (model_args.mean, model_args.std) if given else (summary.moments.mean, summary.moments.std)
    return {
        "mean": mean,
        "std": std,
        "provenance": provenance(data_args, summary, "given" if given else "exact"),
        "audio_seconds": summary.audio_seconds,
    }


def check_crop_filled(longest: int, crop_samples: int, sampling_rate: int) -> None:
    """Refuse clips of which the `longest` (samples) is shorter than one training crop: every crop would be padding
    around a whole clip."""
    if longest < crop_samples:
        raise ValueError(
            f"Every clip is shorter than one training crop ({crop_samples} samples = {crop_samples / sampling_rate:g} "
            f"s; the longest has {longest}); BYOL-A learns from crops of that length: use longer audio."
        )


def provenance(data_args, summary, method: str) -> dict[str, Any]:
    """Where the statistics come from, as `config.stats_provenance` records it (counts when the data was read)."""
    return {
        "dataset": data_args.dataset_name,
        "config": data_args.dataset_config_name,
        "data_dir": data_args.data_dir,
        "split": data_args.split,
        "audio_column": data_args.audio_column_name,
        "num_examples": summary.num_examples if summary else None,
        "num_frames": summary.moments.num_frames if summary else None,
        "method": method,
    }


def training_clips(data_args, sampling_rate: int, training_args: TrainingArguments):
    """The training clips (undecoded audio column): a dataset of at least one batch, or a `datasets.IterableDataset`
    read as it streams (`--streaming`)."""
    import datasets

    source = (data_args.dataset_name, data_args.dataset_config_name, data_args.data_dir, data_args.split)
    column = data_args.audio_column_name
    if data_args.streaming:
        if training_args.max_steps <= 0:
            raise ValueError("--streaming reads clips without knowing their number: give the run's --max_steps.")
        stream = load_audio_dataset(*source, column, sampling_rate, streaming=True)
        if not isinstance(stream, datasets.IterableDataset):  # a folder or glob of files: listed, then streamed
            stream = stream.to_iterable_dataset(num_shards=min(len(stream), 64))
        stream = stream.cast_column(column, datasets.Audio(decode=False))
        return stream if data_args.max_train_samples is None else stream.take(data_args.max_train_samples)
    dataset = load_source(*source, column, sampling_rate)
    dataset = draw_rows(dataset, data_args.max_train_samples, training_args.seed)
    if len(dataset) < training_args.per_device_train_batch_size * training_args.world_size:
        # Too few to train, and few enough to read now: a clip that cannot be used is the first thing to fix.
        for row in dataset:
            decode_undecoded_audio(row[column], sampling_rate)
    check_one_batch(len(dataset), training_args)
    return dataset


def check_one_batch(clips: int, training_args: TrainingArguments) -> None:
    """Refuse fewer clips than one batch over all ranks: no epoch would give a step (a stream's would end in
    accelerate's error on an empty batch)."""
    global_batch = training_args.per_device_train_batch_size * training_args.world_size
    if clips < 2:
        raise ValueError(f"{clips} clip(s): BYOL-A's BatchNorm layers need batches of at least 2 clips; add audio.")
    if clips < global_batch:
        raise ValueError(
            f"{clips} clips are fewer than one batch ({global_batch}); lower --per_device_train_batch_size."
        )


def crop_dataset(dataset, data_args, config, seed: int) -> torch.utils.data.Dataset:
    """Crops of the clips: indexed by [`EpochCropSampler`]'s draws, or as a stream arrives."""
    cropper = ClipCropper(data_args.audio_column_name, config.sampling_rate, config.crop_samples, config.pad_both_ends)
    return StreamingCropDataset(dataset, cropper, seed) if data_args.streaming else CropDataset(dataset, cropper)

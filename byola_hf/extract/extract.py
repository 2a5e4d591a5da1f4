"""Turn an audio dataset into BYOL-A embeddings with `datasets.map`, in resumable shards, on CPU workers or a GPU.

The output is a `datasets` dataset saved to disk: the source's other columns (labels...), `path`, `duration`
(seconds), `embedding` (the clip embedding, `pooler_output`, float32) and, with `frames`, the frame features of the
chosen layers (`frames_<layer>`, `(frames, width)` float32 per example, valid frames only) with `timestamps` (each
frame's centre in milliseconds).
"""

import glob
import json
import math
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..extras import require_extra
from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..modeling_byola import BYOLAModel
from ..tools.data import is_saved_dataset, load_audio_dataset
from ..tools.distributed import process_group


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
_COMPLETE = "COMPLETE"


@dataclass
class ExtractionResult:
    """What [`extract_embeddings`] wrote: the dataset directory and what went into it."""

    output_dir: str
    num_examples: int
    audio_seconds: float
    seconds: float
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def audio_hours_per_minute(self) -> float:
        return self.audio_seconds / 3600 / max(self.seconds / 60, 1e-9)


def load_source(
    dataset_name: str,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    audio_column_name: str = "audio",
    sampling_rate: int = 16000,
):
    """
    The dataset to embed, its audio column left undecoded (decoded per example, so a bad file is reported by path):
    a folder or glob of audio files, or what [`~byola_hf.stats.load_audio_dataset`] loads (a Hub dataset,
    `audiofolder` with `data_dir`, a `save_to_disk` directory).
    """
    datasets = require_extra("datasets", "stats")
    path = Path(dataset_name)
    if any(character in dataset_name for character in "*?[") or (path.is_dir() and not is_saved_dataset(path)):
        pattern = str(path / "**" / "*") if path.is_dir() else dataset_name
        files = sorted(f for f in glob.glob(pattern, recursive=True) if f.lower().endswith(AUDIO_SUFFIXES))
        if not files:
            raise ValueError(f"No audio files ({', '.join(AUDIO_SUFFIXES)}) found at {dataset_name!r}.")
        dataset = datasets.Dataset.from_dict({audio_column_name: files})
        return dataset.cast_column(audio_column_name, datasets.Audio(decode=False))
    dataset = load_audio_dataset(dataset_name, dataset_config_name, data_dir, split, audio_column_name, sampling_rate)
    return dataset.cast_column(audio_column_name, datasets.Audio(decode=False))


def embed_batch(
    batch: dict[str, list],
    model: BYOLAModel,
    feature_extractor: BYOLAFeatureExtractor,
    audio_column_name: str,
    layers: list[int] | None,
    device: str | None,
    num_threads: int | None = None,
) -> dict[str, list]:
    """
    `datasets.map(batched=True)` function: decode each example (mono, at the model's rate), embed the good ones in
    one padded batch, and return per example its path, duration, embedding (None for a bad one), frames and
    timestamps (with `layers`) and the error that made it bad (None otherwise).

    `num_threads=1` in forked `num_proc` workers: they are the parallelism, and torch's thread pool inherited
    across `fork` deadlocks.
    """
    import datasets

    if num_threads is not None:
        torch.set_num_threads(num_threads)

    decoder = datasets.Audio(sampling_rate=feature_extractor.sampling_rate, mono=True)
    items = batch[audio_column_name]
    waveforms, errors, paths = [], [], []
    for item in items:
        paths.append(item.get("path") or "")
        try:
            waveform = np.asarray(decoder.decode_example(item)["array"], dtype=np.float32)
            if waveform.size == 0:
                raise ValueError("empty audio (0 samples)")
            if not np.isfinite(waveform).all():
                raise ValueError("NaN or infinite samples")
            waveforms.append(waveform)
            errors.append(None)
        except Exception as error:  # soundfile, librosa and our checks raise many types; each is reported by path
            waveforms.append(None)
            errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}")
    good = [index for index, waveform in enumerate(waveforms) if waveform is not None]
    rows: dict[str, list] = {
        "path": paths,
        "error": errors,
        "embedding": [None] * len(items),
        "duration": [0.0 if w is None else len(w) / feature_extractor.sampling_rate for w in waveforms],
    }
    if layers is not None:
        rows["timestamps"] = [None] * len(items)
        for layer in layers:
            rows[f"frames_{layer}"] = [None] * len(items)
    if not good:
        return rows
    inputs = feature_extractor(
        [waveforms[i] for i in good],
        sampling_rate=feature_extractor.sampling_rate,
        return_tensors="pt",
        pad_to_min_length=True,
        device=device,
    )
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=layers is not None)
    pooled = outputs.pooler_output.float().cpu().numpy()
    lengths = outputs.attention_mask.sum(-1).tolist()
    for row, index in enumerate(good):
        rows["embedding"][index] = pooled[row]
        if layers is not None:
            rows["timestamps"][index] = np.asarray(model.config.frame_centers_ms(lengths[row]), np.float32)
            for layer in layers:
                state = outputs.hidden_states[layer][row, : lengths[row]]
                rows[f"frames_{layer}"][index] = state.float().cpu().numpy()
    return rows


def extract_embeddings(
    model_name_or_path: str,
    dataset_name: str,
    output_dir: str,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    audio_column_name: str = "audio",
    layers: str | None = None,
    frames: bool = False,
    device: str | None = None,
    num_proc: int | None = None,
    batch_size: int = 8,
    shard_size: int = 256,
    skip_bad: bool = False,
) -> ExtractionResult:
    """
    Embed every example of a dataset and save the result with `save_to_disk` at `output_dir`.

    The work goes in shards of `shard_size` examples, each saved under `output_dir/shards/` when done: a re-run
    after an interruption skips the finished shards and gives the identical result. Under torchrun each rank takes
    every `world_size`-th shard and rank 0 joins them in order. Memory is one batch at a time, whatever the dataset.

    Args:
        layers: with `frames`, which hidden states to keep per frame: `"last"` (`last_hidden_state`, the default),
            `"all"`, or indices such as `"0,3"`.
        frames: also store frame features and their timestamps.
        device: run the model there (`"cuda"`; under torchrun `cuda:LOCAL_RANK`); CPU by default.
        num_proc: `datasets.map` worker processes on CPU.
        skip_bad: leave out examples that cannot be decoded, are empty or not finite (listed in the result and in
            `output_dir/skipped.json`); without it the first such example stops the run with its path.
    """
    from datasets import concatenate_datasets, load_from_disk
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    if device not in (None, "cpu") and num_proc is not None and num_proc > 1:
        raise ValueError(f"device={device!r} with num_proc={num_proc}: use one process per GPU with torchrun.")
    model = BYOLAModel.from_pretrained(model_name_or_path).eval()
    if not model.config.has_statistics:
        raise ValueError(
            f"The model at {model_name_or_path!r} has no normalisation statistics: compute them with "
            "byola-compute-stats first."
        )
    feature_extractor = BYOLAFeatureExtractor.from_model_config(model.config)
    layer_indices = _parse_layers(layers, model.config.num_hidden_layers) if frames else None
    dataset = load_source(
        dataset_name, dataset_config_name, data_dir, split, audio_column_name, feature_extractor.sampling_rate
    )
    output = Path(output_dir)
    shards_dir = output / "shards"
    num_shards = max(1, math.ceil(len(dataset) / shard_size))
    with process_group() as (rank, world_size):
        if device is not None and device.startswith("cuda") and world_size > 1:
            device = f"cuda:{rank % max(torch.cuda.device_count(), 1)}"
        if device is not None:
            model.to(device)
        mine = [index for index in range(num_shards) if index % world_size == rank]
        progress = tqdm(mine, desc=f"embedding (rank {rank})" if world_size > 1 else "embedding", unit="shard")
        audio_seconds = 0.0
        for index in progress:
            shard_dir = shards_dir / f"{index:05d}"
            if (shard_dir / _COMPLETE).exists():
                continue
            shard = dataset.shard(num_shards, index, contiguous=True)
            embedded = shard.map(
                embed_batch,
                batched=True,
                batch_size=batch_size,
                num_proc=num_proc if num_proc != 1 else None,
                fn_kwargs={
                    "model": model,
                    "feature_extractor": feature_extractor,
                    "audio_column_name": audio_column_name,
                    "layers": layer_indices,
                    "device": device,
                    "num_threads": 1 if num_proc is not None and num_proc > 1 else None,
                },
                remove_columns=[audio_column_name],
                desc=None,
                # An explicit fingerprint: datasets would otherwise pickle and hash the whole model for every shard;
                # nothing is taken from datasets' cache (the shards on disk are the cache).
                new_fingerprint=uuid.uuid4().hex,
                load_from_cache_file=False,
            )
            embedded = _cast_outputs(embedded, layer_indices)
            if not skip_bad:
                _raise_on_bad(embedded)
            if shard_dir.exists():
                shutil.rmtree(shard_dir)
            embedded.save_to_disk(str(shard_dir))
            (shard_dir / _COMPLETE).touch()
            audio_seconds += float(sum(embedded["duration"]))
            hours = audio_seconds / 3600
            progress.set_postfix_str(f"{hours / max((time.perf_counter() - start_time) / 60, 1e-9):.2f} audio-h/min")
        if world_size > 1:
            torch.distributed.barrier()
        if rank != 0:
            return ExtractionResult(str(output), 0, audio_seconds, time.perf_counter() - start_time)
    joined = concatenate_datasets([load_from_disk(str(shards_dir / f"{index:05d}")) for index in range(num_shards)])
    bad = joined.filter(lambda error: error is not None, input_columns="error")
    skipped = [{"path": path, "error": error} for path, error in zip(bad["path"], bad["error"])]
    result_dataset = joined.filter(lambda error: error is None, input_columns="error").remove_columns("error")
    final = output / "dataset"
    if final.exists():
        shutil.rmtree(final)
    result_dataset.save_to_disk(str(final))
    (output / "skipped.json").write_text(json.dumps(skipped, indent=1))
    shutil.rmtree(shards_dir)
    return ExtractionResult(
        str(final),
        len(result_dataset),
        float(sum(result_dataset["duration"])),
        time.perf_counter() - start_time,
        skipped,
    )


def _parse_layers(layers: str | None, num_hidden_layers: int) -> list[int]:
    if layers in (None, "last"):
        return [num_hidden_layers - 1]
    if layers == "all":
        return list(range(num_hidden_layers))
    try:
        indices = [int(part) for part in layers.split(",")]
    except ValueError:
        indices = []
    if not indices or any(not 0 <= index < num_hidden_layers for index in indices):
        raise ValueError(f"--layers must be 'last', 'all' or indices in 0..{num_hidden_layers - 1}, got {layers!r}.")
    return indices


def _cast_outputs(embedded, layers: list[int] | None):
    """float32 columns of known types in every shard (a shard of only bad clips would otherwise infer nulls)."""
    from datasets import Features, Sequence, Value

    columns = {
        "embedding": Sequence(Value("float32")),
        "duration": Value("float32"),
        "error": Value("string"),
        "path": Value("string"),
    }
    if layers is not None:
        columns["timestamps"] = Sequence(Value("float32"))
        columns.update({f"frames_{layer}": Sequence(Sequence(Value("float32"))) for layer in layers})
    return embedded.cast(Features({**embedded.features, **columns}))


def _raise_on_bad(embedded) -> None:
    bad = embedded.filter(lambda error: error is not None, input_columns="error")
    if len(bad):
        listing = "; ".join(f"{path}: {error}" for path, error in zip(bad["path"][:5], bad["error"][:5]))
        raise ValueError(
            f"{len(bad)} example(s) could not be embedded ({listing}{' ...' if len(bad) > 5 else ''}). Fix or remove "
            "them, or pass --skip_bad to leave them out (they are then listed in skipped.json)."
        )


def load_embeddings(directory: str) -> Any:
    """The dataset a [`extract_embeddings`] run saved (`directory` is its `output_dir`, or the dataset itself)."""
    from datasets import load_from_disk

    path = Path(directory)
    return load_from_disk(str(path / "dataset" if (path / "dataset").is_dir() else path))

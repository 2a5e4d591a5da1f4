"""Turn an audio dataset into BYOL-A embeddings, in resumable fingerprinted shards, at the model's speed.

The output is a `datasets` dataset saved to disk at `OUT/dataset`: the source's other columns (labels, an EVAR CSV's
`file_name`, `split`, `fold`...), `path`, `duration` (seconds), `embedding` (the clip embedding, `pooler_output`,
float32) and, with `frames`, the frame features of the chosen layers (`frames_<layer>`, `(frames, width)` float32
per example, valid frames only, each layer at its own width: the last one is `last_hidden_state`, `feature_d`
wide) with `timestamps` (each frame's centre in milliseconds).

`OUT` is this command's own folder (`byola_hf.tools.outputs.claim_output_dir`): new, empty, or marked by an earlier
run. The marker carries a fingerprint of the model (config and weights), the source (its rows and files) and the
arguments that change the result; a re-run with the same fingerprint resumes from the finished shards, another one
is refused unless `overwrite_output_dir`, which removes only what this command wrote.
"""

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..audio import display_path
from ..modeling_byola import BYOLAModel
from ..tools.data import load_byola_front_end, load_source, source_fingerprint
from ..tools.distributed import device_for_rank, process_group
from ..tools.outputs import atomic_path, claim_output_dir, fingerprint, remove_path, write_json_atomic
from .embed import AudioClips, clip_loader, embed_clip_batch


COMMAND = "byola-extract"
# What a run writes in its output folder (all removed by overwrite_output_dir, nothing else is).
# Beside the dataset: the fingerprint of the model that made it (byola-linear-eval compares the splits').
MODEL_RECORD = "embedding_model.json"
OUTPUTS = ("shards", "dataset", "skipped.json", MODEL_RECORD)
OUTPUT_COLUMNS = ("path", "error", "duration", "embedding", "timestamps")


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


@dataclass
class ExtractionJob:
    """Everything a run needs once its arguments are checked: the model, the source and the shard layout."""

    model: BYOLAModel
    feature_extractor: Any
    dataset: Any
    audio_column_name: str
    layers: list[int] | None
    shard_size: int
    unit_samples: int | None
    output: Path

    @property
    def num_shards(self) -> int:
        return max(1, math.ceil(len(self.dataset) / self.shard_size))

    def shard_dir(self, index: int) -> Path:
        return self.output / "shards" / f"{index:05d}"

    def shard_rows(self, index: int) -> range:
        return range(index * self.shard_size, min(len(self.dataset), (index + 1) * self.shard_size))


def extract_embeddings(
    model_name_or_path: str,
    dataset_name: str | None,
    output_dir: str,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    audio_column_name: str = "audio",
    layers: str | None = None,
    frames: bool = False,
    device: str | None = None,
    num_workers: int = 0,
    batch_size: int | None = None,
    shard_size: int = 256,
    skip_bad: bool = False,
    metadata_csv: str | None = None,
    unit_seconds: float | None = None,
    overwrite_output_dir: bool = False,
) -> ExtractionResult:
    """
    Embed every example of a dataset (or of an EVAR task CSV) and save the result at `output_dir/dataset`.

    Shards of `shard_size` examples are saved atomically as they finish; a re-run resumes from them. Under torchrun
    each rank takes every `world_size`-th shard and rank 0 joins them in order.

    Args:
        dataset_name: a Hub dataset, `"audiofolder"` (with `data_dir`), a `save_to_disk` directory, or a folder or
            glob of audio files; `None` with `metadata_csv`.
        metadata_csv: an EVAR task CSV (`file_name` relative to `data_dir`, other columns kept).
        layers: with `frames` (also store frame features and their timestamps), which hidden states to keep:
            `"last"` (`last_hidden_state`, the default), `"all"`, or indices such as `"0,3"`.
        device: run the log-mel and the model there (`"cuda"`: under torchrun each rank's own GPU); CPU by default.
        num_workers: DataLoader processes decoding the audio while the model runs (0: none).
        batch_size: clips per forward; by default 2 on a CPU (batches of long clips fall out of its caches) and 32 on
            an accelerator. It changes float rounding only, so it is not part of the fingerprint (nor the device).
        unit_seconds: cut or zero-pad every clip to this length, as EVAR's `unit_sec` does per task (EVAR crops
            training clips at a random place; here always the start).
        skip_bad: leave out examples that cannot be decoded, are empty or not finite (listed in the result and in
            `output_dir/skipped.json`); without it the first such example stops the run with its path.
        overwrite_output_dir: start over in a folder an earlier run with other inputs or arguments wrote.
    """
    start_time = time.perf_counter()
    with process_group() as (rank, world_size):
        device = resolve_device(device_for_rank(device))
        batch_size, num_workers = check_arguments(
            batch_size, device, shard_size, num_workers, layers, frames, unit_seconds
        )
        job = prepare_job(
            model_name_or_path, dataset_name, output_dir, dataset_config_name, data_dir, split, audio_column_name,
            (layers or "last") if frames else None, shard_size, metadata_csv, unit_seconds, device,
        )  # fmt: skip
        finished = claim_output(job, rank, world_size, overwrite_output_dir)
        seconds = 0.0 if finished else embed_shards(job, rank, world_size, batch_size, num_workers, skip_bad, device)
        if world_size > 1:
            torch.distributed.barrier()
    if rank != 0:
        return ExtractionResult(str(job.output), 0, seconds, time.perf_counter() - start_time)
    return finished_result(job.output, start_time) if finished else join_shards(job, skip_bad, start_time)


def claim_output(job: "ExtractionJob", rank: int, world_size: int, overwrite: bool) -> bool:
    """
    Claim the output folder for this run's fingerprint (model, source, result-changing arguments) on rank 0 while
    the other ranks wait; whether it already holds this run's finished dataset.
    """
    run_fingerprint = fingerprint(
        model=model_fingerprint(job.model),
        source=source_fingerprint(job.dataset, job.audio_column_name),
        layers=job.layers,
        shard_size=job.shard_size,
        unit_samples=job.unit_samples,
    )
    if rank == 0:
        claim_output_dir(job.output, COMMAND, run_fingerprint, OUTPUTS, overwrite)
        # Which model made the embeddings, and of clips cut to what length, so that splits embedded differently are
        # never compared.
        record = {"model_fingerprint": model_fingerprint(job.model), "unit_samples": job.unit_samples}
        write_json_atomic(job.output / MODEL_RECORD, record)
    if world_size > 1:
        torch.distributed.barrier()
    # A finished dataset is left only by a run with this fingerprint: the claim refused or removed any other.
    return (job.output / "dataset").is_dir()


def resolve_device(device: str | None) -> torch.device:
    """`device` (CPU when `None`) as a `torch.device` this torch can use, or a one-line `ValueError`."""
    try:
        resolved = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a torch device: pass cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this torch has no CUDA device; leave --device out to run on the CPU.")
    return resolved


def check_arguments(
    batch_size: int | None,
    device: torch.device,
    shard_size: int,
    num_workers: int,
    layers: str | None,
    frames: bool,
    unit_seconds: float | None,
) -> tuple[int, int]:
    """`(batch_size, num_workers)` with the device's default batch size, or a one-line `ValueError` for each argument
    no run can use."""
    batch_size = (2 if device.type == "cpu" else 32) if batch_size is None else batch_size
    for name, value, least in (
        ("batch_size", batch_size, 1),
        ("shard_size", shard_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"--{name} must be a whole number >= {least}, got {value!r}.")
    if layers is not None and not frames:
        raise ValueError("--layers chooses the frame features to store: pass --frames with it.")
    if unit_seconds is not None and not (math.isfinite(unit_seconds) and unit_seconds > 0):
        raise ValueError(f"--unit_seconds must be a positive number of seconds, got {unit_seconds!r}.")
    return batch_size, num_workers


def prepare_job(
    model_name_or_path: str,
    dataset_name: str | None,
    output_dir: str,
    dataset_config_name: str | None,
    data_dir: str | None,
    split: str,
    audio_column_name: str,
    layers: str | None,
    shard_size: int,
    metadata_csv: str | None,
    unit_seconds: float | None,
    device: torch.device,
) -> ExtractionJob:
    """Load the model (on `device`) and the source, and check that they can make the output."""
    config, feature_extractor = load_byola_front_end(model_name_or_path)
    if not config.has_statistics:
        raise ValueError(
            f"The model at {model_name_or_path!r} has no normalisation statistics: compute them with "
            "byola-compute-stats first."
        )
    model = BYOLAModel.from_pretrained(model_name_or_path).eval().to(device)
    layer_indices = parse_layers(layers, config.num_hidden_layers) if layers is not None else None
    dataset = load_source(
        dataset_name, dataset_config_name, data_dir, split, audio_column_name, feature_extractor.sampling_rate,
        metadata_csv,
    )  # fmt: skip
    clashes = sorted(set(dataset.column_names) & set(OUTPUT_COLUMNS) - {audio_column_name})
    if clashes:
        raise ValueError(f"The source already has the column(s) {clashes} that byola-extract writes: rename them.")
    unit = None if unit_seconds is None else round(unit_seconds * feature_extractor.sampling_rate)
    if unit is not None and unit < config.min_samples:  # every clip cut to it would be refused, one by one
        raise ValueError(
            f"--unit_seconds {unit_seconds:g} is shorter than one output frame of the model: give at least "
            f"{config.min_samples / feature_extractor.sampling_rate:g} s ({config.min_samples} samples)."
        )
    return ExtractionJob(
        model, feature_extractor, dataset, audio_column_name, layer_indices, shard_size, unit, Path(output_dir)
    )


def parse_layers(layers: str | None, num_hidden_layers: int) -> list[int]:
    """`"last"` / `None`, `"all"` or `"0,3"` as hidden-state indices."""
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
    return sorted(set(indices))


def model_fingerprint(model: BYOLAModel) -> str:
    """A hash of the model's config (statistics included) and of every weight's values."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def output_features(job: ExtractionJob):
    """The shards' column types: the source's (less the audio) and ours, explicit so that a batch of only bad
    clips (all `None`) cannot make a column's type `null`."""
    from datasets import Features, Sequence, Value

    columns = {name: feature for name, feature in job.dataset.features.items() if name != job.audio_column_name}
    columns.update(
        path=Value("string"), error=Value("string"), duration=Value("float32"), embedding=Sequence(Value("float32"))
    )
    if job.layers is not None:
        columns["timestamps"] = Sequence(Value("float32"))
        columns.update({f"frames_{layer}": Sequence(Sequence(Value("float32"))) for layer in job.layers})
    return Features(columns)


def embed_shards(
    job: ExtractionJob, rank: int, world_size: int, batch_size: int, num_workers: int, skip_bad: bool, device
) -> float:
    """Embed this rank's unfinished shards, saving each as it completes; the seconds of audio embedded."""
    from tqdm.auto import tqdm

    pending = [i for i in range(job.num_shards) if i % world_size == rank and not job.shard_dir(i).is_dir()]
    batches = [
        (index, list(rows[start : start + batch_size]))
        for index in pending
        for rows in [job.shard_rows(index)]
        for start in range(0, len(rows), batch_size)
    ]
    clips = AudioClips(
        job.dataset, job.audio_column_name, job.feature_extractor.sampling_rate, job.model.config.min_samples,
        job.unit_samples,
    )  # fmt: skip
    loader = clip_loader(
        clips, [rows for _, rows in batches], num_workers, job.feature_extractor.padding_value, device.type == "cuda"
    )
    features, collected, audio_seconds = output_features(job), {}, 0.0
    # closed on errors too, so that a one-line error starts on its own line
    with tqdm(total=sum(len(rows) for _, rows in batches), desc=f"embedding (rank {rank})", unit="clip") as progress:
        for (shard, rows), batch in zip(batches, loader):
            embedded = embed_clip_batch(job.model, job.feature_extractor, batch, job.layers, device)
            if not skip_bad:
                raise_on_bad(embedded)
            collected.setdefault(shard, []).extend(embedded)
            audio_seconds += sum(row["duration"] for row in embedded)
            progress.update(len(rows))
            if len(collected[shard]) == len(job.shard_rows(shard)):
                save_shard(job, shard, collected.pop(shard), features)
    return audio_seconds


def raise_on_bad(rows: list[dict]) -> None:
    """Stop at the first clip that could not be embedded, naming its file and the flag that skips it."""
    bad = [row for row in rows if row["error"] is not None]
    if bad:
        raise ValueError(
            f"{display_path(bad[0]['path'])} could not be embedded: {bad[0]['error']} Fix or remove the file, or pass "
            "--skip_bad to leave such clips out (they are then listed in skipped.json)."
        )


def save_shard(job: ExtractionJob, index: int, rows: list[dict], features) -> None:
    """The source's rows of shard `index` with their embeddings, saved atomically (a killed run leaves no shard)."""
    from datasets import Dataset

    source = job.dataset.select(job.shard_rows(index)).remove_columns([job.audio_column_name]).to_dict()
    ours = {name: [row[name] for row in rows] for name in rows[0]}
    shard = Dataset.from_dict({**source, **ours}, features=features)
    with atomic_path(job.shard_dir(index)) as staged:
        shard.save_to_disk(str(staged))


def join_shards(job: ExtractionJob, skip_bad: bool, start_time: float) -> ExtractionResult:
    """Join the shards in order into `OUT/dataset` (atomically), list the skipped clips, then drop the shards."""
    from datasets import concatenate_datasets, load_from_disk

    joined = concatenate_datasets([load_from_disk(str(job.shard_dir(i))) for i in range(job.num_shards)])
    bad = joined.filter(lambda error: error is not None, input_columns="error")
    skipped = [{"path": path, "error": error} for path, error in zip(bad["path"], bad["error"])]
    if skipped and not skip_bad:
        raise_on_bad(skipped)
    result = joined.filter(lambda error: error is None, input_columns="error").remove_columns("error")
    with atomic_path(job.output / "dataset") as staged:
        result.save_to_disk(str(staged))
    write_json_atomic(job.output / "skipped.json", skipped)
    remove_path(job.output / "shards")
    return ExtractionResult(
        str(job.output / "dataset"),
        len(result),
        float(sum(result["duration"])),
        time.perf_counter() - start_time,
        skipped,
    )


def finished_result(output: Path, start_time: float) -> ExtractionResult:
    """The result of a run that already finished in `output` (a re-run with the same fingerprint)."""
    dataset = load_embeddings(str(output))
    skipped_file = output / "skipped.json"
    skipped = json.loads(skipped_file.read_text()) if skipped_file.is_file() else []
    return ExtractionResult(
        str(output / "dataset"),
        len(dataset),
        float(sum(dataset["duration"])),
        time.perf_counter() - start_time,
        skipped,
    )


def embedding_record(directory: str | Path) -> dict | None:
    """What made a `byola-extract` output: its model's fingerprint and the clip length (`unit_samples`, `None` for
    whole clips). `directory` is the output or its `dataset/`; `None` for an output without the record."""
    path = Path(directory)
    for folder in (path, path.parent):
        if (folder / MODEL_RECORD).is_file() and (folder is path or path.name == "dataset"):
            return json.loads((folder / MODEL_RECORD).read_text())
    return None


def load_embeddings(directory: str) -> Any:
    """The dataset a [`extract_embeddings`] run saved (`directory` is its `output_dir`, or the dataset itself)."""
    from datasets import load_from_disk

    path = Path(directory)
    dataset_dir = path / "dataset" if (path / "dataset").is_dir() else path
    if not (dataset_dir / "state.json").is_file() and not (dataset_dir / "dataset_info.json").is_file():
        raise ValueError(
            f"{display_path(path)} holds no byola-extract output (no dataset/ in it): run byola-extract with "
            "--output_dir there first, or check the path."
        )
    return load_from_disk(str(dataset_dir))

"""Turn an audio dataset into BYOL-A embeddings, in resumable fingerprinted shards, at the model's speed.

The output is a `datasets` dataset saved to disk at `OUT/dataset`: the source's other columns (labels, an EVAR CSV's
`file_name`, `split`, `fold`...), `path`, `duration` (seconds), `embedding` (the clip embedding, `pooler_output`,
float32) and, with `frames`, the frame features of the chosen layers (`frames_<layer>`, `(frames, width)` float32
per example, valid frames only, each layer at its own width: the last one is `last_hidden_state`, `feature_d`
wide) with `timestamps` (each frame's centre in milliseconds).

`OUT` is this command's own folder (`byola_hf.tools.outputs.claim_output_dir`): new, empty, or marked by an earlier
run. The marker carries the run's record: a fingerprint of the model (config and weights), the source (its rows and
files) and every argument but those of `MAY_CHANGE` (which change the float rounding or the speed only, and
`skip_bad`); a re-run with the same record resumes from the finished shards, another one is refused, naming what
differs, unless `overwrite_output_dir`, which removes only what this command wrote.
"""

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..audio import display_path, unit_samples
from ..configuration_byola import warn_if_statistics_of_other_units
from ..modeling_byola import BYOLAModel
from ..tools.cli import check_whole_numbers
from ..tools.data import load_byola_front_end, load_checked_model, load_source, source_record
from ..tools.distributed import device_for_rank, process_group
from ..tools.outputs import (
    MAY_CHANGE_ON_RESUME,
    atomic_path,
    claim_output_dir,
    holds_claimed_folders,
    recorded_arguments,
    remove_path,
    write_json_atomic,
)
from .embed import AudioClips, clip_loader, embed_clip_batch


COMMAND = "byola-extract"
# What a run writes in its output folder (all removed by overwrite_output_dir, nothing else is).
# Beside the dataset: the fingerprint of the model that made it (byola-linear-eval compares the splits').
MODEL_RECORD = "embedding_model.json"
OUTPUTS = ("shards", "dataset", "skipped.json", MODEL_RECORD)
OUTPUT_COLUMNS = ("path", "error", "duration", "embedding", "timestamps")
# What may differ between a run and its resumption: the shared list, and what changes the float rounding or the speed
# only (clips per forward, the device, decoding workers), so that a run stopped on a GPU may finish on a CPU. Every
# other argument is in the run's record.
# --skip_bad too: the shards a run saved without it hold no bad clip (it stops at the first), so a re-run with it,
# the fix its error names, resumes them.
MAY_CHANGE = MAY_CHANGE_ON_RESUME | {"batch_size", "device", "num_workers", "skip_bad"}


@dataclass
class ExtractArguments:
    """What `byola-extract` (and [`extract_embeddings`]) takes: one field per flag, its help the flag's."""

    model_name_or_path: str = field(metadata={"help": "BYOL-A model directory (with statistics) or Hub id"})
    output_dir: str = field(
        metadata={
            "help": "A new or empty folder (or one an earlier byola-extract run made) for dataset/ and skipped.json"
        }
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset, 'audiofolder', a save_to_disk path, or a folder or glob of audio files"},
    )
    metadata_csv: str | None = field(
        default=None,
        metadata={
            "help": "Instead of --dataset_name: an EVAR task CSV (file_name relative to --data_dir; all columns kept)"
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder for audiofolder, or the audio root of --metadata_csv (default: its folder)"},
    )
    split: str = field(default="train", metadata={"help": "Split to embed"})
    audio_column_name: str = field(default="audio", metadata={"help": "Audio column"})
    frames: bool = field(default=False, metadata={"help": "Also store frame features and their timestamps (ms)"})
    layers: str | None = field(
        default=None, metadata={"help": "With --frames: last (last_hidden_state, when not given), all, or e.g. 0,3"}
    )
    device: str | None = field(
        default=None, metadata={"help": "Run the log-mel and the model there, e.g. cuda; CPU when not given"}
    )
    num_workers: int = field(default=2, metadata={"help": "Processes decoding audio while the model runs (0: none)"})
    batch_size: int | None = field(
        default=None, metadata={"help": "Clips per forward; 2 on a CPU, 32 on a GPU if not given"}
    )
    shard_size: int = field(default=256, metadata={"help": "Clips per saved shard (the unit of resumption)"})
    unit_seconds: float | None = field(
        default=None, metadata={"help": "Cut or zero-pad every clip to this length, as EVAR's unit_sec per task"}
    )
    skip_bad: bool = field(
        default=False, metadata={"help": "Leave out unreadable, empty or non-finite clips (listed in skipped.json)"}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in a folder an earlier run with other arguments wrote"}
    )


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


@holds_claimed_folders()
def extract_embeddings(args: ExtractArguments) -> ExtractionResult:
    """Embed every example of a dataset (or of an EVAR task CSV) into `args.output_dir/dataset`, in shards of
    `args.shard_size` examples saved atomically as they finish (a re-run with the same record resumes from them; see
    the module doc). Under torchrun each rank takes every `world_size`-th shard (`args.device="cuda"`: its own GPU) and
    rank 0 joins them in order. The CPU's default batch is small because batches of long clips fall out of its caches;
    `args.unit_seconds` keeps each clip's start (EVAR crops training clips at a random place)."""
    start_time = time.perf_counter()
    with process_group() as (rank, world_size):
        device = resolve_device(device_for_rank(args.device))
        batch_size = check_arguments(args, device)
        job = prepare_job(args, device)
        finished = claim_output(job, args, rank, world_size)
        audio_seconds = 0.0
        if not finished:
            audio_seconds = embed_shards(job, rank, world_size, batch_size, args.num_workers, args.skip_bad, device)
        if world_size > 1:
            torch.distributed.barrier()
    if rank != 0:
        return ExtractionResult(str(job.output), 0, audio_seconds, time.perf_counter() - start_time)
    if not finished:
        join_shards(job, args.skip_bad)
    return finished_result(job.output, start_time)


def run_record(args: ExtractArguments, model: str, source: dict[str, Any]) -> dict[str, Any]:
    """What made an output: every argument but [`MAY_CHANGE`], the model's fingerprint and the `source`
    ([`~byola_hf.tools.data.source_record`]: its clip count and fingerprint)."""
    return {"arguments": recorded_arguments(args, may_change=MAY_CHANGE), "model": model, "source": source}


def claim_output(job: "ExtractionJob", args: ExtractArguments, rank: int, world_size: int) -> bool:
    """Claim the output folder for this run's record ([`run_record`]) on rank 0 while the other ranks wait; whether it
    already holds this run's finished dataset."""
    if rank == 0:
        model = model_fingerprint(job.model)
        source = source_record(job.dataset, job.audio_column_name)
        claim_output_dir(job.output, COMMAND, run_record(args, model, source), OUTPUTS, args.overwrite_output_dir)
        write_json_atomic(job.output / MODEL_RECORD, embedding_provenance(job, args, model))
    if world_size > 1:
        torch.distributed.barrier()
    # A finished dataset is left only by a run with this record: the claim refused or removed any other.
    return (job.output / "dataset").is_dir()


def embedding_provenance(job: "ExtractionJob", args: ExtractArguments, model: str) -> dict[str, Any]:
    """What made the embeddings ([`MODEL_RECORD`]): the model's fingerprint and the clip length, compared by
    byola-linear-eval so that splits embedded differently are never compared; and, for its report, the model's
    folder, its statistics with their provenance, and the data."""
    config, path = job.model.config, Path(args.model_name_or_path)
    data = ("dataset_name", "dataset_config_name", "data_dir", "split", "metadata_csv")
    return {
        "model_fingerprint": model,
        "unit_samples": job.unit_samples,
        "model": str(path.resolve()) if path.exists() else args.model_name_or_path,
        "statistics": {"mean": config.mean, "std": config.std, "provenance": config.stats_provenance},
        "data": {name: getattr(args, name) for name in data},
    }


def resolve_device(device: str | None) -> torch.device:
    """`device` (CPU when `None`) as a `torch.device` this torch can use, or a one-line `ValueError`."""
    try:
        resolved = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a torch device: pass cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this torch has no CUDA device; leave --device out to run on the CPU.")
    return resolved


def check_arguments(args: ExtractArguments, device: torch.device) -> int:
    """The batch size (the device's default when not given), or a one-line `ValueError` for each argument no run can
    use, and for each flag that the others make of no effect."""
    batch_size = (2 if device.type == "cpu" else 32) if args.batch_size is None else args.batch_size
    check_whole_numbers(
        ("batch_size", batch_size, 1), ("shard_size", args.shard_size, 1), ("num_workers", args.num_workers, 0)
    )
    if args.layers is not None and not args.frames:
        raise ValueError("--layers chooses the frame features to store: pass --frames with it.")
    return batch_size


def prepare_job(args: ExtractArguments, device: torch.device) -> ExtractionJob:
    """Load the model (on `device`) and the source, and check that they can make the output."""
    config, feature_extractor = load_byola_front_end(args.model_name_or_path)
    if not config.has_statistics:
        raise ValueError(
            f"The model at {args.model_name_or_path!r} has no normalisation statistics: compute them with "
            "byola-compute-stats first."
        )
    unit = unit_samples(args.unit_seconds, feature_extractor.sampling_rate, config.min_samples)
    warn_if_statistics_of_other_units(config, args.unit_seconds)
    model = load_checked_model(args.model_name_or_path).eval().to(device)
    layers = parse_layers(args.layers, config.num_hidden_layers) if args.frames else None
    dataset = load_source(
        args.dataset_name, args.dataset_config_name, args.data_dir, args.split, args.audio_column_name,
        feature_extractor.sampling_rate, args.metadata_csv,
    )  # fmt: skip
    clashes = sorted(set(dataset.column_names) & set(OUTPUT_COLUMNS) - {args.audio_column_name})
    if clashes:
        raise ValueError(f"The source already has the column(s) {clashes} that byola-extract writes: rename them.")
    return ExtractionJob(
        model, feature_extractor, dataset, args.audio_column_name, layers, args.shard_size, unit,
        Path(args.output_dir),
    )  # fmt: skip


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
    """A hash of the model's config (statistics included) and of every weight's values; not of where it was loaded
    from (`_name_or_path`), so that a copied or moved folder, or its path written another way, is the same model."""
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
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


def join_shards(job: ExtractionJob, skip_bad: bool) -> None:
    """List the skipped clips, join the shards in order into `OUT/dataset` (atomically), then drop the shards. The
    list goes first: `dataset/` marks the run finished, and a kill between the two left a finished run that said it
    skipped nothing."""
    from datasets import concatenate_datasets, load_from_disk

    joined = concatenate_datasets([load_from_disk(str(job.shard_dir(i))) for i in range(job.num_shards)])
    bad = joined.filter(lambda error: error is not None, input_columns="error")
    skipped = [{"path": path, "error": error} for path, error in zip(bad["path"], bad["error"])]
    if skipped and not skip_bad:
        raise_on_bad(skipped)
    result = joined.filter(lambda error: error is None, input_columns="error").remove_columns("error")
    write_json_atomic(job.output / "skipped.json", skipped)
    with atomic_path(job.output / "dataset") as staged:
        result.save_to_disk(str(staged))
    remove_path(job.output / "shards")


def finished_result(output: Path, start_time: float) -> ExtractionResult:
    """The result of the run finished in `output`, read from what it wrote (the shards a kill left after the join
    are dropped)."""
    remove_path(output / "shards")
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
    """What made a `byola-extract` output ([`embedding_provenance`]: its model's fingerprint, the clip length
    `unit_samples`, `None` for whole clips, ...) and `skipped_clips`, how many clips `--skip_bad` left out of it.
    `directory` is the output or its `dataset/`; `None` for an output without the record."""
    path = Path(directory)
    for folder in (path, path.parent):
        if (folder / MODEL_RECORD).is_file() and (folder is path or path.name == "dataset"):
            skipped = folder / "skipped.json"
            count = len(json.loads(skipped.read_text())) if skipped.is_file() else 0
            return {**json.loads((folder / MODEL_RECORD).read_text()), "skipped_clips": count}
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

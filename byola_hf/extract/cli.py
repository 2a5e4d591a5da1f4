"""`byola-extract`: a dataset of audio -> a dataset of BYOL-A embeddings, saved to disk.

byola-extract --model_name_or_path M --output_dir OUT
    (--dataset_name audiofolder --data_dir D | --metadata_csv task.csv --data_dir ROOT) [--split train]
    [--frames [--layers last|all|0,3]] [--device cuda] [--num_workers N] [--batch_size B] [--shard_size S]
    [--unit_seconds T] [--skip_bad] [--overwrite_output_dir]
"""

from dataclasses import asdict, dataclass, field

from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from ..tools.distributed import is_main_process
from .extract import COMMAND, extract_embeddings


@dataclass
class ExtractArguments:
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


def main(argv: list[str] | None = None) -> None:
    require_extras(COMMAND, ("datasets",), "stats")
    parser = make_parser(COMMAND, (ExtractArguments,), description=__doc__.split("\n\n")[0])
    (args,) = parse_arguments(parser, argv)
    run_command(COMMAND, run, args)


def run(args: ExtractArguments) -> None:
    """Extract, then report on rank 0."""
    result = extract_embeddings(**asdict(args))
    if not is_main_process():  # under torchrun only rank 0 reports
        return
    print(
        f"{result.num_examples} clips, {result.audio_seconds / 3600:.3f} h of audio in {result.seconds:.1f} s "
        f"({result.audio_hours_per_minute:.2f} audio-hours per minute); saved to {result.output_dir}"
    )
    for item in result.skipped:
        print(f"skipped {item['path']}: {item['error']}")


if __name__ == "__main__":
    main()

"""`byola-extract`: a dataset of audio -> a dataset of BYOL-A embeddings, saved to disk.

byola-extract --model_name_or_path M --dataset_name audiofolder --data_dir D --output_dir OUT
    [--split train] [--frames --layers last|all|0,3] [--device cuda] [--num_proc N] [--batch_size B] [--skip_bad]
"""

from dataclasses import asdict, dataclass, field

from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from ..tools.distributed import is_main_process
from .extract import extract_embeddings


COMMAND = "byola-extract"


@dataclass
class ExtractArguments:
    model_name_or_path: str = field(metadata={"help": "BYOL-A model directory (with statistics) or Hub id"})
    dataset_name: str = field(
        metadata={"help": "Hub dataset, 'audiofolder', a save_to_disk path, or a folder or glob of audio files"}
    )
    output_dir: str = field(metadata={"help": "Where to write the dataset (OUT/dataset) and skipped.json"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    data_dir: str | None = field(default=None, metadata={"help": "Local folder for --dataset_name audiofolder"})
    split: str = field(default="train", metadata={"help": "Split to embed"})
    audio_column_name: str = field(default="audio", metadata={"help": "Audio column"})
    layers: str | None = field(default=None, metadata={"help": "With --frames: last (default), all, or e.g. 0,3"})
    frames: bool = field(default=False, metadata={"help": "Also store frame features and their timestamps (ms)"})
    device: str | None = field(default=None, metadata={"help": "Run the model there, e.g. cuda (default: CPU)"})
    num_proc: int | None = field(default=None, metadata={"help": "datasets.map worker processes (CPU)"})
    batch_size: int = field(default=8, metadata={"help": "Clips per forward (8 x 10 s fits a CPU's cache best)"})
    shard_size: int = field(default=256, metadata={"help": "Clips per saved shard (the unit of resumption)"})
    skip_bad: bool = field(
        default=False, metadata={"help": "Leave out unreadable, empty or non-finite clips (listed in skipped.json)"}
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

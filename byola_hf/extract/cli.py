"""`byola-extract`: a dataset of audio -> a dataset of BYOL-A embeddings, saved to disk.

byola-extract --model_name_or_path M --output_dir OUT
    (--dataset_name audiofolder --data_dir D | --metadata_csv task.csv --data_dir ROOT) [--split train]
    [--frames [--layers last|all|0,3]] [--device cuda] [--num_workers N] [--batch_size B] [--shard_size S]
    [--unit_seconds T] [--skip_bad] [--overwrite_output_dir]
"""

from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from ..tools.distributed import is_main_process
from .extract import COMMAND, ExtractArguments, extract_embeddings


def build_parser():
    """The command line: one flag per field of the arguments' dataclass."""
    return make_parser(COMMAND, (ExtractArguments,), description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> None:
    require_extras(COMMAND, ("datasets",), "stats")
    (args,) = parse_arguments(build_parser(), argv)
    run_command(COMMAND, run, args)


def run(args: ExtractArguments) -> None:
    """Extract, then report on rank 0."""
    result = extract_embeddings(args)
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

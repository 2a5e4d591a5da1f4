"""`byola-compute-stats`: a task's exact BYOL-A log-mel statistics, saved into the model directory.

byola-compute-stats --model_name_or_path DIR_OR_ID --dataset_name audiofolder --data_dir D --output_dir OUT
"""

import dataclasses
import json
from pathlib import Path

from ..hub import PushArguments, check_push_arguments, push_to_hub
from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from ..tools.distributed import is_main_process
from .compute import COMMAND, StatsArguments, compute_stats


def build_parser():
    """The command line: the statistics' flags, then the Hub's."""
    return make_parser(
        COMMAND,
        (StatsArguments, PushArguments),
        description="Compute a task's BYOL-A log-mel statistics (exact mean/std over every valid frame) and save them "
        "into the model config.",
    )


def main(argv: list[str] | None = None) -> None:
    require_extras(COMMAND, ("datasets",), "stats")
    args, push = parse_arguments(build_parser(), argv)
    run_command(COMMAND, run, args, push)


def run(args: StatsArguments, push: PushArguments) -> None:
    """Compute, save, report on rank 0, and push when asked."""
    output_dir = args.output_dir or args.model_name_or_path
    if args.output_dir is None and not Path(args.model_name_or_path).is_dir():
        raise ValueError("--output_dir is required when --model_name_or_path is a Hub id.")
    check_push_arguments(push)
    result = compute_stats(dataclasses.replace(args, output_dir=output_dir))
    if not is_main_process():  # under torchrun only rank 0 reports and pushes
        return
    hours = result.audio_seconds / 3600
    print(f"{result.num_examples} examples, {hours:.2f} h of audio, {result.num_frames} frames ({args.mode})")
    print(json.dumps({"mean": result.mean, "std": result.std}))
    print(f"mean,std={result.mean},{result.std}")
    print(f"Saved to {output_dir} (config.json: mean, std, stats_provenance)")
    if push.push_to_hub:
        print(f"Pushed to {push_to_hub(output_dir, push.hub_model_id, private=not push.public)}")


if __name__ == "__main__":
    main()

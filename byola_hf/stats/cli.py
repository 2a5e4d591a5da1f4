"""`byola-compute-stats`: a task's exact BYOL-A log-mel statistics, saved into the model directory.

byola-compute-stats --model_name_or_path DIR_OR_ID --dataset_name audiofolder --data_dir D --output_dir OUT
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..hub import PushArguments, check_push_arguments, push_to_hub
from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from ..tools.distributed import is_main_process
from .compute import COMMAND, compute_stats


@dataclass
class StatsArguments:
    model_name_or_path: str = field(metadata={"help": "BYOL-A model directory (byola-convert) or Hub id"})
    dataset_name: str = field(metadata={"help": "Hub dataset, 'audiofolder', or a save_to_disk path"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    data_dir: str | None = field(default=None, metadata={"help": "Local audio folder for --dataset_name audiofolder"})
    split: str = field(default="train", metadata={"help": "Split to compute the statistics on"})
    audio_column_name: str = field(default="audio", metadata={"help": "Audio column"})
    num_proc: int | None = field(default=None, metadata={"help": "datasets.map worker processes"})
    batch_size: int = field(default=16, metadata={"help": "Examples per map batch (and per s3prl batch)"})
    max_examples: int | None = field(default=None, metadata={"help": "Use a random subset of this many examples"})
    seed: int = field(default=42, metadata={"help": "Seed of the --max_examples subset"})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of downloading it"})
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


def main(argv: list[str] | None = None) -> None:
    require_extras(COMMAND, ("datasets",), "stats")
    parser = make_parser(
        COMMAND,
        (StatsArguments, PushArguments),
        description="Compute a task's BYOL-A log-mel statistics (exact mean/std over every valid frame) and save them "
        "into the model config.",
    )
    args, push = parse_arguments(parser, argv)
    run_command(COMMAND, run, args, push)


def run(args: StatsArguments, push: PushArguments) -> None:
    """Compute, save, report on rank 0, and push when asked."""
    output_dir = args.output_dir or args.model_name_or_path
    if args.output_dir is None and not Path(args.model_name_or_path).is_dir():
        raise ValueError("--output_dir is required when --model_name_or_path is a Hub id.")
    check_push_arguments(push)
    result = compute_stats(**{**asdict(args), "output_dir": output_dir})  # the fields are its parameters
    if not is_main_process():  # under torchrun only rank 0 reports and pushes
        return
    hours = result.audio_seconds / 3600
    print(f"{result.num_examples} examples, {hours:.2f} h of audio, {result.num_frames} frames ({args.mode})")
    print(json.dumps({"mean": result.mean, "std": result.std}))
    print(f"mean,std={result.mean},{result.std}")
    print(f"Saved to {output_dir} (config.json: mean, std, stats_provenance)")
    if push.push_to_hub:
        print(f"Pushed to {push_to_hub(output_dir, push.hub_model_id, private=not push.public)}")

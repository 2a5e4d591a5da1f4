"""`byola-finetune`: fine-tune BYOL-A on an EVAR task CSV with EVAR's recipe, every fold and seed in one command.

    byola-finetune --model_name_or_path byola-512-ks --metadata_csv ks.csv --data_dir mini/ks --unit_seconds 1.0 \\
        --output_dir ft/ks --seeds 3

Our flags first, then every `TrainingArguments` flag (the recipe's defaults replace transformers' where not given:
200 epochs, batch 256, learning rate 1e-3, no gradient clipping). OUT/eval_results.json holds the test metric's mean
and std over folds and seeds; OUT/fold-F_seed-S/ each run's best model (by validation, strictly better) with its
card.
"""

import sys
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from .run import COMMAND, RECIPE_DEFAULTS, finetune


@dataclass
class FinetuneArguments:
    model_name_or_path: str = field(metadata={"help": "BYOL-A model directory with the task's statistics"})
    metadata_csv: str = field(
        metadata={"help": "EVAR task CSV: file_name, label and a split (train/valid/test) or fold column"}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder the file_name paths are relative to (default: the CSV's folder)"}
    )
    label_column_name: str = field(default="label", metadata={"help": "Label column (commas: multi-label)"})
    unit_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Cut or zero-pad every clip to this length, as EVAR's unit_sec (training clips at a random "
            "start); default: the longest clip of the CSV"
        },
    )
    seeds: int = field(
        default=1, metadata={"help": "Run every fold with seeds --seed .. --seed + N - 1; mean and std reported"}
    )
    folds: list[str] = field(
        default_factory=list, metadata={"help": "Fold tasks: run only these folds (default: every fold)", "nargs": "+"}
    )
    optimizer: str = field(
        default="sgd", metadata={"help": "sgd (momentum 0.9) or adamw (EVAR's)", "choices": ["sgd", "adamw"]}
    )
    warmup_epochs: float = field(default=5.0, metadata={"help": "Linear warm-up from 0, in epochs"})
    min_learning_rate: float = field(default=1e-7, metadata={"help": "The cosine schedule's last learning rate"})
    mixup: float = field(default=0.5, metadata={"help": "Mixup's Beta(alpha, alpha) (0: off)"})
    freq_mask: int = field(default=30, metadata={"help": "Frequency mask's largest width in mel bins (0: off)"})
    time_mask: int = field(default=100, metadata={"help": "Time mask's largest width in frames (0: off)"})
    resize_crop: bool = field(default=True, metadata={"help": "BYOL-A's random resize crop (--no_resize_crop: off)"})
    freeze_encoder: bool = field(default=False, metadata={"help": "Train the head only (the encoder stays frozen)"})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in an --output_dir this command wrote for other arguments (only its files go)"},
    )


def build_parser():
    """The command line: our flags, then `TrainingArguments`'."""
    parser = make_parser(
        COMMAND,
        (FinetuneArguments, TrainingArguments),
        usage=f"{COMMAND} --model_name_or_path MODEL --metadata_csv CSV [--data_dir ROOT] --output_dir OUT [options]",
        description=__doc__.split("\n\n")[0],
        epilog="Our flags come first; the rest are transformers' TrainingArguments.",
    )
    # Parser defaults, not values filled in after parsing, so that a flag given in any spelling keeps its value.
    parser.set_defaults(**RECIPE_DEFAULTS)
    parser._option_string_actions["--learning_rate"].help = "Base learning rate (default here: 1e-3, EVAR's)"
    parser._option_string_actions["--num_train_epochs"].help = "Epochs (default here: 200, EVAR's)"
    parser._option_string_actions["--per_device_train_batch_size"].help = "Batch size (default here: 256, EVAR's)"
    parser._option_string_actions["--max_grad_norm"].help = "Gradient clipping norm (default here: 0, none, as EVAR)"
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    require_extras(COMMAND, ("datasets", "accelerate"), "superb")
    args, training_args = parse_arguments(build_parser(), argv)
    given = {argument.split("=")[0].lstrip("-").replace("-", "_") for argument in argv if argument.startswith("--")}
    run_command(COMMAND, finetune, args, training_args, given)


if __name__ == "__main__":
    main()

"""`byola-linear-eval`: the BYOL-A papers' linear evaluation on embeddings written by `byola-extract`.

byola-linear-eval --train_dir A --test_dir B [--validation_dir V | --validation_fraction F]
    --label_column_name L --output_dir OUT [--seeds N]
"""

from dataclasses import asdict, dataclass, field

from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from .evaluate import linear_eval


COMMAND = "byola-linear-eval"


@dataclass
class LinearEvalArguments:
    train_dir: str = field(metadata={"help": "byola-extract output of the training split"})
    test_dir: str = field(metadata={"help": "byola-extract output of the test split"})
    label_column_name: str = field(metadata={"help": "Label column"})
    output_dir: str = field(metadata={"help": "Where to write eval_results.json and confusion_matrix.png"})
    validation_dir: str | None = field(default=None, metadata={"help": "byola-extract output of the validation split"})
    validation_fraction: float | None = field(
        default=None, metadata={"help": "Without --validation_dir: hold out this fraction of train (default 0.1)"}
    )
    seeds: int = field(default=1, metadata={"help": "Repeat with this many seeds; the mean and std are reported"})
    seed: int = field(default=42, metadata={"help": "First seed"})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate (the authors' 3e-4)"})
    epochs: int = field(default=200, metadata={"help": "Most epochs"})
    patience: int = field(default=20, metadata={"help": "Early stopping: epochs without a better validation accuracy"})


def main(argv: list[str] | None = None) -> None:
    require_extras(COMMAND, ("datasets", "matplotlib"), "superb")
    parser = make_parser(COMMAND, (LinearEvalArguments,), description=__doc__.split("\n\n")[0])
    (args,) = parse_arguments(parser, argv)
    run_command(COMMAND, run, args)


def run(args: LinearEvalArguments) -> None:
    """Evaluate and report."""
    if args.validation_dir is not None and args.validation_fraction is not None:
        raise ValueError("--validation_dir and --validation_fraction exclude each other: give one.")
    result = linear_eval(**asdict(args))
    print(
        f"test accuracy {result.test_accuracy:.4f} ± {result.test_accuracy_std:.4f} over {len(result.accuracies)} "
        f"seed(s); train {result.num_train}, validation {result.num_validation} ({result.validation}), test "
        f"{result.num_test}; saved to {args.output_dir}"
    )


if __name__ == "__main__":
    main()

"""`byola-linear-eval`: EVAR's linear evaluation (the BYOL-A papers' protocol) on embeddings from `byola-extract`.

byola-linear-eval (--embeddings_dir EMB | --train_dir A --test_dir B [--validation_dir V])
    --label_column_name label --output_dir OUT [--seeds N]
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from .evaluate import linear_eval
from .report import COMMAND, headline


@dataclass
class LinearEvalArguments:
    output_dir: str = field(metadata={"help": "A new or empty folder for eval_results.json and confusion_matrix.png"})
    label_column_name: str = field(default="label", metadata={"help": "Label column"})
    embeddings_dir: str | None = field(
        default=None,
        metadata={"help": "byola-extract --metadata_csv output of a whole task, with a split or fold column"},
    )
    train_dir: str | None = field(default=None, metadata={"help": "byola-extract output of the training split"})
    test_dir: str | None = field(default=None, metadata={"help": "byola-extract output of the test split"})
    validation_dir: str | None = field(default=None, metadata={"help": "byola-extract output of the validation split"})
    validation_fraction: float | None = field(
        default=None, metadata={"help": "Without a validation split: the part of train held out as EVAR does (0.1)"}
    )
    seeds: int = field(default=1, metadata={"help": "Repeat with this many seeds; the mean and std are reported"})
    seed: int = field(default=42, metadata={"help": "First seed"})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate (EVAR's BYOL-A setting)"})
    epochs: int = field(default=200, metadata={"help": "Most epochs"})
    patience: int = field(
        default=20, metadata={"help": "Early stopping: epochs in a row without a validation accuracy >= the best"}
    )
    device: str | None = field(
        default=None, metadata={"help": "Train there, e.g. cuda (large tasks such as VoxCeleb1); CPU when not given"}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the results of an earlier run with other settings"}
    )


def main(argv: list[str] | None = None) -> None:
    require_extras(COMMAND, ("datasets", "matplotlib"), "superb")
    parser = make_parser(COMMAND, (LinearEvalArguments,), description=__doc__.split("\n\n")[0])
    (args,) = parse_arguments(parser, argv)
    run_command(COMMAND, run, args)


def run(args: LinearEvalArguments) -> None:
    """Evaluate and report."""
    train, test = (Path(folder) for folder in (args.train_dir or "", args.test_dir or ""))
    if args.train_dir and args.test_dir and train.is_dir() and train.resolve() == test.resolve():
        raise ValueError("--train_dir and --test_dir are the same folder: testing on the training clips says nothing.")
    result = linear_eval(**asdict(args))
    folds = len(result.folds)
    summed = f" summed over {folds} folds (each fold's in eval_results.json)" if folds > 1 else ""
    print(
        f"test accuracy {headline(result)} ({result.protocol}); train {result.num_train}, validation "
        f"{result.num_validation} ({result.validation}), test {result.num_test}{summed}; saved to {args.output_dir}"
    )


if __name__ == "__main__":
    main()

"""`byola-linear-eval`: EVAR's linear evaluation (BYOL-A v2's protocol) on embeddings from `byola-extract`.

byola-linear-eval (--embeddings_dir EMB | --train_dir A --test_dir B [--validation_dir V])
    --label_column_name label --output_dir OUT [--seeds N]
"""

from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from .evaluate import LinearEvalArguments, linear_eval
from .report import COMMAND


def build_parser():
    """The command line: one flag per field of the arguments' dataclass."""
    return make_parser(COMMAND, (LinearEvalArguments,), description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> None:
    require_extras(COMMAND, ("datasets", "matplotlib"), "superb")
    (args,) = parse_arguments(build_parser(), argv)
    run_command(COMMAND, run, args)


def run(args: LinearEvalArguments) -> None:
    """Evaluate and report."""
    result = linear_eval(args)
    folds = len(result.folds)
    summed = f" summed over {folds} folds (each fold's in eval_results.json)" if folds > 1 else ""
    print(
        f"test accuracy {result.headline()} ({result.protocol}); train {result.num_train}, validation "
        f"{result.num_validation} ({result.validation}), test {result.num_test}{summed}; saved to {args.output_dir}"
    )


if __name__ == "__main__":
    main()

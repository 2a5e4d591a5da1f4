"""What `byola-linear-eval` writes: `eval_results.json` and `confusion_matrix.png`, in a folder it owns."""

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..tools.outputs import atomic_path, write_json_atomic


COMMAND = "byola-linear-eval"
OUTPUTS = ("eval_results.json", "confusion_matrix.png")


def per_class_report(matrix: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows: true class)."""
    report = {}
    for position, label in enumerate(labels):
        true_positive = matrix[position, position]
        predicted, actual = matrix[:, position].sum(), matrix[position].sum()
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[label] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(actual),
        }
    return report


def headline(mean: float, seed_std: float, run_std: float, seeds: int, folds: int) -> str:
    """`0.9500 ± 0.0200 over 3 seeds`: the mean, the ± over whole runs of the task (`seed_std`, of each seed's mean
    over the folds), as tables of runs give it; with folds, also the std over every (fold, seed) run (`run_std`),
    which holds the spread between folds. Linear evaluation's and fine-tuning's reports both print it."""
    text = f"{mean:.4f} " + (f"± {seed_std:.4f} over {seeds} seeds" if seeds > 1 else "(1 seed)")
    if folds > 1:
        text += f", each the mean of {folds} folds (± {run_std:.4f} over the {seeds * folds} runs)"
    return text


def write_report(result, folds, first_seed_runs, output_dir: str) -> None:
    """Write both files atomically into `output_dir` (claimed before training)."""
    from ..tools.plots import save_confusion_matrix

    output = Path(output_dir)
    write_json_atomic(output / "eval_results.json", asdict(result))
    references = np.concatenate([fold.test_y for fold in folds])
    predictions = np.concatenate([run.predictions for run in first_seed_runs])
    title = f"Linear evaluation: {result.headline()}; matrix of seed {result.settings['seed']}"
    with atomic_path(output / "confusion_matrix.png") as staged:
        save_confusion_matrix(references, predictions, result.classes, staged, title=title)

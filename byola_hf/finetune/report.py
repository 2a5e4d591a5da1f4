"""What `byola-finetune` reports: each run's result, the summary over folds and seeds (`eval_results.json`, laid out
as `byola-linear-eval` writes its own), and each run's model card."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..hub import model_card
from ..tools.outputs import atomic_path


@dataclass
class RunResult:
    """One (fold, seed): the test score of the best validation epoch's weights, and how it was chosen."""

    fold: str
    seed: int
    test_score: float
    validation_score: float
    best_epoch: float
    epochs_run: float
    num_train: int
    num_validation: int
    num_test: int
    selection: str

    @classmethod
    def load(cls, path: Path) -> "RunResult":
        return cls(**json.loads(Path(path).read_text()))

    @classmethod
    def from_trainer(cls, trainer, fold, seed: int, test_score: float) -> "RunResult":
        """The result of a finished Trainer run: its best evaluation (the first epoch that reached it; not
        `--eval_on_start`'s, of the untrained model, which Trainer neither saves nor counts as a best)."""
        key = f"eval_{trainer.args.metric_for_best_model}"
        best = trainer.state.best_metric
        evaluations = [entry for entry in trainer.state.log_history if key in entry and entry.get("step", 0) > 0]
        best_epoch = next((entry["epoch"] for entry in evaluations if entry[key] == best), float("nan"))
        return cls(
            fold=fold.name,
            seed=seed,
            test_score=float(test_score),
            validation_score=float(best) if best is not None else float("nan"),
            best_epoch=float(best_epoch),
            epochs_run=float(trainer.state.epoch or 0.0),
            num_train=len(fold.train),
            num_validation=0 if fold.valid is None else len(fold.valid),
            num_test=len(fold.test),
            selection="the validation split"
            if fold.valid is not None
            else "the test rows (no validation split, as EVAR does: an optimistic estimate)",
        )


def summarize(task, runs: list[list[RunResult]], metric: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std over every (seed, fold) run, each seed's mean over folds and their std (population: the ± over
    runs of the whole task), and each fold's figures."""
    scores = [run.test_score for seed_runs in runs for run in seed_runs]
    seed_scores = [float(np.mean([run.test_score for run in seed_runs])) for seed_runs in runs]
    folds = []
    for index, fold in enumerate(task.folds):
        fold_runs = [seed_runs[index] for seed_runs in runs]
        folds.append(
            {
                "fold": fold.name,
                "scores": [run.test_score for run in fold_runs],
                "mean": float(np.mean([run.test_score for run in fold_runs])),
                "std": float(np.std([run.test_score for run in fold_runs])),
                "validation_scores": [run.validation_score for run in fold_runs],
                "best_epochs": [run.best_epoch for run in fold_runs],
                "num_train": fold_runs[0].num_train,
                "num_validation": fold_runs[0].num_validation,
                "num_test": fold_runs[0].num_test,
                "models": [f"fold-{run.fold}_seed-{run.seed}" for run in fold_runs],
            }
        )
    return {
        f"test_{metric}": float(np.mean(scores)),
        f"test_{metric}_std": float(np.std(scores)),
        "metric": metric,
        "scores": scores,
        "seed_scores": seed_scores,
        "seed_scores_std": float(np.std(seed_scores)),
        "folds": folds,
        "classes": [str(name) for name in task.classes],
        "multi_label": task.multi_label,
        "protocol": "leave-one-fold-out" if task.layout == "fold" else "train/valid/test split",
        "selection": runs[0][0].selection,
        "settings": settings,
    }


def write_predictions(path: Path, task, rows: np.ndarray, logits: np.ndarray) -> None:
    """The best epoch's test predictions, one row per test clip (`rows` of `task`, `logits` `(rows, classes)`) as EVAR
    writes them, to check the scores by: `file_name`, `label` and `prediction` (the class names), and for a
    multi-label task each class's probability (sigmoid) instead of one prediction. Written atomically."""
    import pandas

    labels = (
        [task.classes[index] for index in task.targets[rows]]
        if not task.multi_label
        else [",".join(str(name) for name, on in zip(task.classes, task.targets[row]) if on) for row in rows]
    )
    table = pandas.DataFrame({"file_name": [task.files[row] for row in rows], "label": labels})
    if task.multi_label:
        probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
        table = pandas.concat([table, pandas.DataFrame(probabilities, columns=[str(c) for c in task.classes])], axis=1)
    else:
        table["prediction"] = [task.classes[index] for index in logits.argmax(-1)]
    with atomic_path(path) as staged:
        table.to_csv(staged, index=False)


def save_card(folder: Path, config, task_name: str, data: str, result: RunResult, run_args, args) -> None:
    """`folder/README.md`: byola_hf's card (statistics, usage, licence) with the task and scores, and the recipe."""
    metric = run_args.metric_for_best_model
    test_split = "the test split" if result.selection == "the validation split" else f"fold {result.fold}"
    info = {
        "task": task_name,
        "description": "fine-tuned with byola-finetune (EVAR's recipe)",
        "dataset": data,
        "eval_split": result.selection,
        "test_split": test_split,
        "metrics": {f"eval_{metric}": result.validation_score, f"test_{metric}": result.test_score},
    }
    recipe = [
        "## Fine-tuning recipe (byola-finetune, EVAR's)",
        "",
        f"- fold: {result.fold}, seed: {result.seed}; best epoch {result.best_epoch:g} of {result.epochs_run:g}",
        f"- optimizer: {args.optimizer}, learning rate {run_args.learning_rate:g} with a {args.warmup_epochs:g}-epoch "
        f"linear warm-up, cosine to {args.min_learning_rate:g}, batch {run_args.per_device_train_batch_size}",
        f"- augmentations: mixup alpha {args.mixup:g}, frequency mask {args.freq_mask}, time mask "
        f"{args.time_mask}, random resize crop {'on' if args.resize_crop else 'off'}",
        f"- encoder: {'frozen' if args.freeze_encoder else 'fine-tuned'}; head: BatchNorm1d (no affine) + Linear on "
        "the clip embedding",
        "",
    ]
    model_card(config, info, details="\n".join(recipe) + "\n").save(Path(folder) / "README.md")

"""The steps of `byola-finetune`: check the arguments, load the model's front end and the task, claim the output
folder (a re-run with the same arguments resumes, other arguments are refused), then train and test every
(fold, seed) in its own folder, resuming the one a killed run was in, and write the summary.

The run's record (in the output folder's marker, `byola_hf.tools.outputs`) holds every argument except those in
`MAY_CHANGE`: the commands' shared may-change list but for the run's length, since EVAR's schedule is counted in
epochs (another `--num_train_epochs` is another schedule).
"""

import dataclasses
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed

from ..audio import unit_samples
from ..configuration_byola import ENCODER_ALONE, warn_if_statistics_of_other_units
from ..linear_eval.evaluate import FoldRows
from ..linear_eval.report import headline
from ..modeling_byola import BYOLAForSequenceClassification
from ..superb.run import load_front_end_with_statistics, weights_files
from ..tools.cli import check_scored_evaluation, check_training_length_and_values, run_training
from ..tools.data import FILE_COLUMN
from ..tools.distributed import check_trainer_world_size
from ..tools.outputs import (
    MAY_CHANGE_ON_RESUME,
    claim_output_dir,
    holds_claimed_folders,
    last_complete_checkpoint,
    recorded_arguments,
    save_into,
    write_json_atomic,
)
from .augmentations import FinetuneAugmentation
from .data import ClipSet, FinetuneTask, collate_clips, load_task
from .report import RunResult, save_card, summarize, write_predictions
from .training import EvarSchedule, FinetuneTrainer, build_optimizer, metrics_function


logger = logging.getLogger(__name__)
COMMAND = "byola-finetune"
OUTPUTS = ("fold-*_seed-*", "eval_results.json")
RESULT_FILE = "run_result.json"
PREDICTIONS_FILE = "test_predictions.csv"
# Flags that may differ between a run and its re-run: the shared list but the length (the schedule is in epochs).
MAY_CHANGE = MAY_CHANGE_ON_RESUME - {"num_train_epochs", "max_steps"}
# The recipe sets these Trainer flags itself (evaluate and save every epoch, keep the best, its own loss, optimiser
# and schedule, which training batch to drop, its batch, no push): a value given for them would be silently replaced
# or ignored (or, for --eval_delay, choose the best epoch among the later ones only; --auto_find_batch_size would
# halve the batch under the schedule counted for the full one), so it is refused.
RECIPE_OWNED = (
    "eval_strategy", "eval_delay", "save_strategy", "load_best_model_at_end", "metric_for_best_model",
    "greater_is_better", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio", "optim",
    "optim_args", "optim_target_modules", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "push_to_hub",
    "resume_from_checkpoint", "remove_unused_columns", "dataloader_drop_last", "label_smoothing_factor",
    "auto_find_batch_size",
)  # fmt: skip
RECIPE_DEFAULTS = {
    "learning_rate": 1e-3,
    "num_train_epochs": 200.0,
    "per_device_train_batch_size": 256,
    "per_device_eval_batch_size": 256,
    "max_grad_norm": 0.0,  # EVAR clips no gradient; Trainer's default clips at norm 1.0
}


def recipe_training_args(training_args: TrainingArguments, given: set[str], metric: str) -> TrainingArguments:
    """`training_args` with the settings the recipe owns (EVAR's defaults for the others are the parser's)."""
    return dataclasses.replace(
        training_args,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        save_total_limit=training_args.save_total_limit if "save_total_limit" in given else 1,
        remove_unused_columns=False,
    )


def check_recipe(args, training_args: TrainingArguments, given: set[str]) -> None:
    """One-line errors for flags the recipe owns and values it cannot use, before the task's audio is read."""
    refused = sorted(name for name in RECIPE_OWNED if name in given)
    if refused:
        raise ValueError(
            f"byola-finetune sets --{refused[0]} itself (EVAR's recipe: it evaluates and saves every epoch, keeps the "
            "best, and fixes the loss, optimiser, schedule and batch: see --optimizer, --warmup_epochs): drop it."
        )
    hub = sorted(field.name for field in dataclasses.fields(TrainingArguments) if field.name.startswith("hub_"))
    unused = [name for name in hub if name in given]  # read from the dataclass: a new release's hub flag too
    if unused:
        raise ValueError(
            f"byola-finetune does not push (one model per fold and seed): drop --{unused[0]}, and push a fold's "
            "model with byola_hf.hub.push_to_hub(FOLDER, REPO_ID)."
        )
    check_trainer_world_size(training_args, distributed=False)  # EVAR's schedule is counted for one device's batches
    check_training_length_and_values(training_args)
    check_scored_evaluation(
        training_args, "byola-finetune", "every epoch on accuracy (mAP when multi-label) to keep the best"
    )
    for name in ("warmup_epochs", "min_learning_rate", "mixup"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"--{name} must be a finite number >= 0, got {value}.")
    for name in ("freq_mask", "time_mask"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0 (0 turns it off), got {getattr(args, name)}.")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be 1 or more, got {args.seeds}.")
    if training_args.per_device_train_batch_size < 2:  # the recipe drops a last batch of one, not every batch
        raise ValueError(
            f"--per_device_train_batch_size {training_args.per_device_train_batch_size}: EVAR's head normalises "
            "over the batch (BatchNorm1d), which cannot train on one clip: give 2 or more."
        )
    if args.unit_seconds is not None and not (math.isfinite(args.unit_seconds) and args.unit_seconds > 0):
        raise ValueError(f"--unit_seconds must be a positive number of seconds, got {args.unit_seconds}.")
    if not 0 < training_args.learning_rate < math.inf or args.min_learning_rate >= training_args.learning_rate:
        raise ValueError(
            f"--learning_rate ({training_args.learning_rate:g}) must be positive and above --min_learning_rate "
            f"({args.min_learning_rate:g})."
        )


def clip_samples(args, task: FinetuneTask, config) -> int:
    """Samples per clip: `--unit_seconds` ([`~byola_hf.audio.unit_samples`]'s rule and check, as byola-extract's),
    or the longest clip."""
    longest = max(map(len, task.waveforms))
    if not args.unit_seconds and longest < config.min_samples:  # else refused as a --unit_seconds never given
        raise ValueError(
            f"Every clip is shorter than one output frame of the model (the longest {longest} samples, "
            f"{config.min_samples} needed): give --unit_seconds {config.min_samples / config.sampling_rate:g} or "
            "more to zero-pad them."
        )
    warn_if_statistics_of_other_units(config, args.unit_seconds)
    seconds = args.unit_seconds if args.unit_seconds else longest / config.sampling_rate
    return unit_samples(seconds, config.sampling_rate, config.min_samples)


def run_record(args, training_args: TrainingArguments, config, task: FinetuneTask) -> dict[str, Any]:
    """Everything the run's results depend on: every argument but `MAY_CHANGE`, the model and the data."""
    model = Path(args.model_name_or_path)
    return {
        "arguments": recorded_arguments(args, training_args, may_change=MAY_CHANGE),
        "model": str(model.resolve()) if model.exists() else args.model_name_or_path,
        "weights": weights_files(model),
        "config": config.to_dict(),
        "data": {"metadata_csv": str(Path(args.metadata_csv).resolve()), "source_fingerprint": task.fingerprint},
    }


@holds_claimed_folders()
def finetune(args, training_args: TrainingArguments, given: set[str]) -> dict[str, Any]:
    """Fine-tune every (fold, seed) of the task and write OUT/eval_results.json; returns its contents."""
    config, feature_extractor = load_front_end_with_statistics(args.model_name_or_path)
    check_recipe(args, training_args, given)
    task = load_task(
        args.metadata_csv, args.data_dir, args.label_column_name, feature_extractor, [str(f) for f in args.folds]
    )
    check_starts_from_encoder(config, args.model_name_or_path)
    metric = "mAP" if task.multi_label else "accuracy"
    training_args = recipe_training_args(training_args, given, metric)
    unit = clip_samples(args, task, config)
    record = run_record(args, training_args, config, task)
    output = claim_output_dir(training_args.output_dir, COMMAND, record, OUTPUTS, args.overwrite_output_dir).path
    seeds = [training_args.seed + offset for offset in range(args.seeds)]
    runs = [
        [finetune_fold(args, training_args, task, fold, seed, feature_extractor, unit) for fold in task.folds]
        for seed in seeds
    ]
    result = summarize(task, runs, metric, recipe_settings(args, training_args, unit, config.sampling_rate))
    write_json_atomic(output / "eval_results.json", result)
    figures = result[f"test_{metric}"], result["seed_scores_std"], result[f"test_{metric}_std"]
    print(
        f"test {metric} {headline(*figures, len(seeds), len(task.folds))} ({result['protocol']}; epoch chosen on "
        f"{result['selection']}); saved to {output}"
    )
    return result


def recipe_settings(args, training_args: TrainingArguments, unit: int, sampling_rate: int) -> dict[str, Any]:
    """The recipe as reports and cards state it."""
    own = ("optimizer", "min_learning_rate", "warmup_epochs", "mixup", "freq_mask", "time_mask", "resize_crop",
           "freeze_encoder", "seeds", "label_column_name")  # fmt: skip
    return {
        **{name: getattr(args, name) for name in own},
        "learning_rate": training_args.learning_rate,
        "epochs": training_args.num_train_epochs,
        "max_steps": training_args.max_steps,
        "batch_size": training_args.per_device_train_batch_size,
        "max_grad_norm": training_args.max_grad_norm,
        "unit_seconds": unit / sampling_rate,
        "seed": training_args.seed,
    }


def head_arguments(task: FinetuneTask) -> dict[str, Any]:
    """The EVAR head of `task`'s classes, as `from_pretrained` arguments."""
    names = [str(name) for name in task.classes]
    return {
        "classifier_head": "evar",
        "use_weighted_layer_sum": False,
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: index for index, name in enumerate(names)},
        "problem_type": "multi_label_classification" if task.multi_label else "single_label_classification",
    }


def check_starts_from_encoder(config, source: str) -> None:
    """Refuse a model saved with a trained classification head (a byola-finetune or byola-run-superb output): for
    other classes its outputs would be read as this task's, and for the same ones every fold would start from
    weights trained on clips that are other folds' test clips. EVAR fine-tunes the pre-trained encoder."""
    if "BYOLAForSequenceClassification" in (config.architectures or []):
        raise ValueError(
            f"{source} holds a trained BYOLAForSequenceClassification head, and byola-finetune trains a fresh one "
            f"on the encoder for each fold and seed (a fine-tuned model has seen other folds' test clips): "
            f"{ENCODER_ALONE}"
        )


def build_model(args, task: FinetuneTask, seed: int) -> BYOLAForSequenceClassification:
    """A fresh EVAR head on the encoder (refused with a trained one: [`check_starts_from_encoder`]), initialised
    from `seed`."""
    set_seed(seed)
    return BYOLAForSequenceClassification.from_pretrained(
        args.model_name_or_path, freeze_base_model=args.freeze_encoder, **head_arguments(task)
    )


def build_trainer(args, run_args, task, fold: FoldRows, model, feature_extractor, unit: int) -> FinetuneTrainer:
    """The Trainer of one run: its data, EVAR's optimiser and per-iteration schedule, and augmentations."""
    train = ClipSet(task, fold.train)
    batch = run_args.per_device_train_batch_size
    # BatchNorm cannot train on a batch of one clip: a last training batch of one is dropped.
    drop_last = len(train) % batch == 1 and len(train) > 1
    batches = len(train) // batch if drop_last else math.ceil(len(train) / batch)
    steps_per_epoch = max(math.ceil(batches / run_args.gradient_accumulation_steps), 1)
    epochs = run_args.max_steps / steps_per_epoch if run_args.max_steps > 0 else run_args.num_train_epochs
    note = one_step_epochs_note(len(train), batch * run_args.gradient_accumulation_steps, epochs, args.warmup_epochs)
    if note:
        logger.warning(note)
    schedule = EvarSchedule(
        steps_per_epoch, args.warmup_epochs, epochs, run_args.learning_rate, args.min_learning_rate
    )
    optimizer = build_optimizer(model, args.optimizer, run_args.learning_rate)
    return FinetuneTrainer(
        model=model,
        args=run_args,
        train_dataset=train,
        eval_dataset=ClipSet(task, fold.test if fold.valid is None else fold.valid, cut=unit),
        data_collator=collate_clips,
        compute_metrics=metrics_function(task.multi_label),
        optimizers=(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)),
        feature_extractor=feature_extractor,
        unit=unit,
        augmentation=FinetuneAugmentation(args.freq_mask, args.time_mask, args.resize_crop),
        mixup_alpha=args.mixup,
        multi_label=task.multi_label,
        drop_last=drop_last,
    )


def one_step_epochs_note(train_clips: int, batch: int, epochs: float, warmup_epochs: float) -> str | None:
    """A warning when the batch holds every training clip: EVAR's recipe counts its schedule in epochs (200 of
    them, 5 of warm-up from 0) for tasks of thousands of clips; here each epoch is one optimiser step, and a
    shortened run may end with the head still at its initialisation (a mini task's 40 epochs scored below chance)."""
    if batch < train_clips:
        return None
    warming = f"the first {warmup_epochs:g} of them" if warmup_epochs < epochs else "every one of them"
    return (
        f"The batch ({batch}) holds all {train_clips} training clips: each epoch is ONE optimiser step, so "
        f"{epochs:g} epochs are {math.ceil(epochs)} steps, {warming} warming up from a learning rate of 0. Give a "
        "smaller --per_device_train_batch_size (or more epochs) to train more steps."
    )


def finetune_fold(args, training_args, task: FinetuneTask, fold: FoldRows, seed: int, feature_extractor, unit: int):
    """Train one (fold, seed) in OUT/fold-F_seed-S (resuming its last complete checkpoint), test the best epoch's
    weights, save them as a model folder with its card; a finished run is read back, not trained again."""
    run_dir = Path(training_args.output_dir) / f"fold-{fold.name}_seed-{seed}"
    if (run_dir / RESULT_FILE).is_file():
        print(f"{run_dir} is finished: reading its result.")  # shown: a re-run says what it did not train again
        return RunResult.load(run_dir / RESULT_FILE)
    run_args = dataclasses.replace(training_args, output_dir=str(run_dir), seed=seed)
    model = build_model(args, task, seed)
    trainer = build_trainer(args, run_args, task, fold, model, feature_extractor, unit)
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint is not None:
        print(f"Resuming fold {fold.name}, seed {seed} from {checkpoint}.")
    run_training(trainer, checkpoint)
    metric = run_args.metric_for_best_model
    output = trainer.predict(ClipSet(task, fold.test, cut=unit), metric_key_prefix="test")
    result = RunResult.from_trainer(trainer, fold, seed, output.metrics[f"test_{metric}"])
    save_into(run_dir, lambda folder: save_run_model(folder, trainer, feature_extractor, args, result))
    write_predictions(run_dir / PREDICTIONS_FILE, task, fold.test, output.predictions)
    write_json_atomic(run_dir / RESULT_FILE, dataclasses.asdict(result))
    for folder in run_dir.glob("checkpoint-*"):  # ours; the best weights are saved above
        shutil.rmtree(folder)
    return result


def save_run_model(folder: Path, trainer: FinetuneTrainer, feature_extractor, args, result: RunResult) -> None:
    """The run's best model, its feature extractor and its card, into `folder`."""
    trainer.model.save_pretrained(folder)
    feature_extractor.save_pretrained(folder)
    task_name = Path(args.metadata_csv).stem
    data = f"{args.metadata_csv} (audio under {args.data_dir or Path(args.metadata_csv).parent}), {FILE_COLUMN} rows"
    save_card(folder, trainer.model.config, task_name, data, result, trainer.args, args)

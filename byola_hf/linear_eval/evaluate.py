"""Linear evaluation of frozen clip embeddings, as the authors' EVAR package runs it (the BYOL-A v2 paper's protocol).

The classifier is EVAR's (see [`~byola_hf.linear_eval.classifier`]); defaults are EVAR's BYOL-A config (learning rate
3e-4, at most 200 epochs, early stop after 20). The task comes as `byola-extract` outputs in one of EVAR's layouts:
- `train_dir`, `test_dir` and optionally `validation_dir` (one output per split);
- one `embeddings_dir` (a `byola-extract --metadata_csv` run over an EVAR task CSV) whose `split` column says
  `train`, `valid` (or `validation`) or `test`;
- one `embeddings_dir` whose `fold` column numbers the folds (ESC-50: 5, US8K: 10): leave-one-fold-out, each fold
  tested once by a classifier trained on the others.
Without a validation split, `validation_fraction` (0.1) of the training part is held out as EVAR does (random,
every class in it), after the features are standardised with the whole training part, as EVAR does.

With an `output_dir`, the folder's marker records every argument but `byola_hf.tools.outputs.MAY_CHANGE_ON_RESUME`
(where it writes) and a fingerprint of the embeddings and labels read: a re-run with any other value, or on other
embeddings, is refused before training, naming what differs.
"""

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..extract.extract import embedding_record, load_embeddings, resolve_device
from ..tools.cli import check_whole_numbers
from ..tools.outputs import claim_output_dir, holds_claimed_folders, recorded_arguments
from .classifier import TrainingSettings, hold_out_validation, predict, standardize, train_linear
from .report import COMMAND, OUTPUTS, headline, per_class_report, write_report


logger = logging.getLogger(__name__)
VALIDATION_NAMES = ("valid", "validation")


@dataclass
class Fold:
    """One train/test round: raw features `(n, d)` and class indices of each part (`valid_*` may be `None`)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    valid_x: np.ndarray | None = None
    valid_y: np.ndarray | None = None
    test_rows: np.ndarray | None = None


@dataclass
class FoldRun:
    """The result of one fold with one seed."""

    accuracy: float
    predictions: np.ndarray
    best_epoch: int
    epochs_run: int
    num_train: int
    num_validation: int
    validation: str


@dataclass
class FoldRows:
    """One train/validation/test round as row indices of a task's table; `valid` is `None` without a validation
    split (byola-finetune then chooses the epoch on the test rows, as EVAR does)."""

    name: str
    train: np.ndarray
    test: np.ndarray
    valid: np.ndarray | None = None


@dataclass
class LinearEvalArguments:
    """What `byola-linear-eval` (and [`linear_eval`]) takes: one field per flag, its help the flag's. The command needs
    `output_dir`; a library call without one writes nothing."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "A new or empty folder for eval_results.json and confusion_matrix.png", "required": True},
    )
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


@dataclass
class LinearEvalResult:
    """Test accuracy over folds and seeds: `test_accuracy` is the mean of every (fold, seed) run, `test_accuracy_std`
    their std (with folds, mostly the spread between folds); `seed_accuracies` each seed's mean over the folds and
    `seed_accuracy_std` their std (population), the ± over runs of the whole task; `folds` the per-fold figures
    (with each fold's sizes).
    The per-class report and the confusion matrix pool the first seed's predictions over the folds (each example is
    tested once). `num_train`, `num_validation` and `num_test` are summed over the folds, all three. `embeddings`: each
    folder read (by part: `train`, `valid`, `test`, or `task` for an `embeddings_dir`) with what its `byola-extract`
    run recorded: the model, its statistics and their provenance, the data, and the clips `--skip_bad` left out (not in
    `num_test`)."""

    test_accuracy: float
    test_accuracy_std: float
    accuracies: list[float]
    seed_accuracies: list[float]
    seed_accuracy_std: float
    folds: list[dict]
    classes: list[str]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    best_epochs: list[int]
    num_train: int
    num_validation: int
    num_test: int
    validation: str
    protocol: str
    settings: dict = field(default_factory=dict)
    embeddings: dict = field(default_factory=dict)

    def headline(self) -> str:
        """The figures every report prints ([`~byola_hf.linear_eval.report.headline`])."""
        std, seeds = self.seed_accuracy_std, len(self.seed_accuracies)
        return headline(self.test_accuracy, std, self.test_accuracy_std, seeds, len(self.folds))


def label_classes(values: list, what: str = "label") -> list:
    """The sorted distinct labels (numbers sorted as numbers); an empty one is an error naming `what` they are."""
    if any(value is None or (isinstance(value, str) and not value.strip()) for value in values):
        raise ValueError(f"Some examples have an empty {what}: fill them in or remove those rows.")
    distinct = set(values)
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=str)


def is_multi_label(cells: list) -> bool:
    """Whether a label column holds several labels per clip: some cell holds commas (`Bark,Dog`, EVAR's form) or is
    a list (a `datasets` sequence column)."""
    return any(isinstance(cell, (list, tuple)) or "," in str(cell) for cell in cells)


def read_embeddings(
    directory: str, label_column_name: str, extra_columns: tuple[str, ...] = (), part: str | None = None
) -> dict:
    """The `embedding`, label and `extra_columns` columns of a `byola-extract` output (the `part` split of the task
    when given), or a one-line error; `class_names` holds a `ClassLabel` label column's names (else `None`)."""
    dataset = load_embeddings(directory)
    for column in ("embedding", label_column_name, *extra_columns):
        if column not in dataset.column_names:
            flag = " (--label_column_name)" if column == label_column_name else ""
            raise ValueError(f"{directory} has no column '{column}'{flag}; its columns are {dataset.column_names}.")
    if len(dataset) == 0:
        raise ValueError(f"{directory} holds no examples.")
    columns = {name: dataset[name] for name in (label_column_name, *extra_columns)}
    # A ClassLabel column (audiofolder's folder names) holds ids: the report names its classes.
    columns["class_names"] = getattr(dataset.features[label_column_name], "names", None)
    if columns["class_names"] is None and is_multi_label(columns[label_column_name]):
        raise ValueError(
            f"{directory}: '{label_column_name}' holds several labels per clip (commas or lists), a multi-label "
            "task, which byola-linear-eval would score as one class per combination: for the mAP of a linear "
            "head on the frozen encoder (EVAR's fine-tuning loop, not its linear evaluation), run byola-finetune "
            "--freeze_encoder --mixup 0 --freq_mask 0 --time_mask 0 --no_resize_crop on the task CSV."
        )
    columns["embedding"] = np.asarray(dataset.with_format("numpy")["embedding"], dtype=np.float32)
    layout = next((name for name in ("split", "fold") if name in extra_columns), None)
    parts = [f"{layout} {value}" for value in columns[layout]] if layout else [f"{part} split"] * len(dataset)
    check_finite_embeddings(columns["embedding"], directory, parts)
    return columns


def check_finite_embeddings(embeddings: np.ndarray, directory: str, parts: list[str]) -> None:
    """Refuse embeddings `(n, d)` with NaN or infinity, naming the first such row and its part (`parts[row]`, e.g.
    "test split"): one such row makes the standardisation, so every prediction, NaN, and the accuracy chance."""
    finite = np.isfinite(embeddings).all(axis=1)
    if finite.all():
        return
    row = int(np.flatnonzero(~finite)[0])
    raise ValueError(
        f"{directory} row {row} ({parts[row]}) has a NaN or infinite embedding ({int((~finite).sum())} such "
        "rows): extract those clips again or remove them."
    )


def check_several_classes(labels: np.ndarray | list, where: str) -> None:
    """Refuse training on `labels` of one class: every prediction would be it, an accuracy of 1.0 that says nothing."""
    if len(set(np.asarray(labels).tolist())) < 2:
        raise ValueError(
            f"The training part of {where} has a single class: a linear evaluation needs two or more; check "
            "--label_column_name and the data."
        )


def class_display_names(classes: list, columns: dict) -> list[str]:
    """How the report names `classes`: a `ClassLabel`'s names for its ids, else the labels as text."""
    names = columns["class_names"]
    return [str(label) if names is None else names[label] for label in classes]


def encode(labels: list, classes: list) -> np.ndarray:
    index = {label: position for position, label in enumerate(classes)}
    return np.asarray([index[label] for label in labels], dtype=np.int64)


def check_same_embedding(parts: dict[str, str]) -> None:
    """Refuse splits embedded by different models or of clips cut to different lengths, and splits with the record
    beside splits without it (nothing would tell)."""
    records = {name: embedding_record(path) for name, path in parts.items()}
    missing = [parts[name] for name, record in records.items() if record is None]
    if missing and len(missing) < len(records):
        raise ValueError(
            f"{', '.join(missing)} holds no record of the model that embedded it (embedding_model.json): extract "
            "every split again with one byola-extract version, and pass each output folder."
        )
    checks = (
        ("model_fingerprint", "by different models", "the same model directory"),
        ("unit_samples", "of clips cut to different lengths", "the same --unit_seconds"),
    )
    for key, what, fix in checks:
        if len({json.dumps(record.get(key)) for record in records.values() if record is not None}) > 1:
            raise ValueError(
                f"The splits were embedded {what} ({', '.join(parts.values())}): extract every split with {fix}."
            )


def folds_from_directories(
    train_dir: str, test_dir: str, validation_dir: str | None, label_column_name: str
) -> tuple[list[Fold], list]:
    """One fold from one `byola-extract` output per split."""
    parts = {"train": train_dir, "test": test_dir, **({"valid": validation_dir} if validation_dir else {})}
    check_same_embedding(parts)
    data = {name: read_embeddings(path, label_column_name, part=name) for name, path in parts.items()}
    classes = label_classes(data["train"][label_column_name])
    check_several_classes(data["train"][label_column_name], train_dir)
    unseen = set(label_classes([v for d in data.values() for v in d[label_column_name]])) - set(classes)
    if unseen:
        # repr, so that the string '0' is told apart from the number 0 when one split's column holds the other type
        typed = (
            " (the same names as training's, of another type)"
            if {str(v) for v in unseen} <= set(map(str, classes))
            else ""
        )
        raise ValueError(
            f"Labels never seen in training{typed}: {', '.join(map(repr, sorted(unseen, key=str)[:10]))}."
        )
    arrays = {name: (d["embedding"], encode(d[label_column_name], classes)) for name, d in data.items()}
    valid = arrays.get("valid", (None, None))
    check_splits_share_no_file(parts)
    if len({json.dumps(d["class_names"]) for d in data.values()}) > 1:
        raise ValueError(
            f"The splits' label columns list different classes ({', '.join(parts.values())}): their class ids mean "
            "different classes; extract every split of one dataset."
        )
    return [Fold("all", *arrays["train"], *arrays["test"], *valid)], class_display_names(classes, data["train"])


def check_splits_share_no_file(parts: dict[str, str]) -> None:
    """Refuse one-output-per-split embeddings (`parts`: split -> folder) whose training split embedded a file that
    another split embedded too (say, the train folder held the test folder): by each clip's resolved file, where it
    is a file on this machine (clips of a decoded dataset, or embeddings saved without a `path` column, have no file
    to compare)."""
    rows, clips = {}, []
    for name, directory in parts.items():
        dataset = load_embeddings(directory)
        paths = dataset["path"] if "path" in dataset.column_names else [None] * len(dataset)
        rows[name] = np.arange(len(clips), len(clips) + len(paths))
        clips += [
            os.path.realpath(path) if path and os.path.isfile(path) else f"{name} row {row}"
            for row, path in enumerate(paths)
        ]
    where = ", ".join(f"--{'validation' if name == 'valid' else name}_dir {path}" for name, path in parts.items())
    fix = "extract each split from its own files"
    check_clips_tested_unseen([FoldRows("all", rows["train"], rows["test"], rows.get("valid"))], clips, where, fix)


def folds_from_table(embeddings_dir: str, label_column_name: str) -> tuple[list[Fold], list, str]:
    """The folds of one `byola-extract --metadata_csv` output by its `split` or `fold` column, and the layout."""
    dataset = load_embeddings(embeddings_dir)
    layout = "split" if "split" in dataset.column_names else "fold" if "fold" in dataset.column_names else None
    if layout is None:
        raise ValueError(
            f"{embeddings_dir} has neither a 'split' (train/valid/test) nor a 'fold' column: extract an EVAR task CSV "
            f"with byola-extract --metadata_csv, or pass --train_dir and --test_dir; its columns are "
            f"{dataset.column_names}."
        )
    data = read_embeddings(embeddings_dir, label_column_name, (layout,))
    classes = label_classes(data[label_column_name])
    x, y = data["embedding"], encode(data[label_column_name], classes)
    rounds = fold_rows(np.asarray(data[layout], dtype=object), layout, embeddings_dir)
    if "path" in dataset.column_names:  # every byola-extract output has it
        check_clips_tested_unseen(rounds, dataset["path"], embeddings_dir)
    folds = []
    for rows in rounds:
        where = embeddings_dir if layout == "split" else f"{embeddings_dir} without fold {rows.name}"
        check_several_classes(y[rows.train], where)
        unseen = sorted({*y[rows.test], *(() if rows.valid is None else y[rows.valid])} - set(y[rows.train]))
        if unseen:
            part, training = ("valid/test", "the train split") if layout == "split" else (rows.name, "the other folds")
            raise ValueError(
                f"{len(unseen)} class(es) of {embeddings_dir}'s {layout} {part} have no clip in {training}, so no "
                f"classifier can predict them: {', '.join(repr(classes[index]) for index in unseen[:10])}."
            )
        fold = Fold(rows.name, x[rows.train], y[rows.train], x[rows.test], y[rows.test], test_rows=rows.test)
        if rows.valid is not None:
            fold.valid_x, fold.valid_y = x[rows.valid], y[rows.valid]
        folds.append(fold)
    return folds, class_display_names(classes, data), layout


def split_masks(tags: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(train, valid, test)` row masks of a `split` column's values (train, valid or validation, test)."""
    tags = np.asarray([str(tag).strip().lower() for tag in tags])
    unknown = sorted(set(tags) - {"train", "test", *VALIDATION_NAMES})
    if unknown or "train" not in tags or "test" not in tags:
        raise ValueError(
            f"The 'split' column of {where} must say train, valid (or validation) and test, with train and test "
            f"present; found {sorted(set(map(str, tags)))}."
        )
    return tags == "train", np.isin(tags, VALIDATION_NAMES), tags == "test"


def fold_rows(tags: np.ndarray, layout: str, where: str, wanted: Sequence[str] = ()) -> list[FoldRows]:
    """The rounds of a `split` column (one, through linear evaluation's own split rule) or of a `fold` column
    (leave-one-fold-out; `wanted`: only these fold values)."""
    rows = np.arange(len(tags))
    if layout == "split":
        if wanted:
            raise ValueError("--folds picks folds of a 'fold' column; this CSV has a 'split' column: drop --folds.")
        train, valid, test = split_masks(tags, where)
        return [FoldRows("all", rows[train], rows[test], rows[valid] if valid.any() else None)]
    names = [str(name) for name in label_classes(list(tags), f"'fold' cell in {where}")]
    text = np.asarray([str(tag) for tag in tags])
    for name in wanted:
        if name not in names:
            raise ValueError(
                f"--folds {name}: no row of {where} has fold {name}, so that fold has no test rows; its folds are "
                f"{', '.join(names)}."
            )
    if len(names) < 2:
        raise ValueError(f"{where} has a single fold ({names[0]}): leave-one-fold-out needs two or more.")
    return [FoldRows(name, rows[text != name], rows[text == name]) for name in names if not wanted or name in wanted]


def check_clips_tested_unseen(
    rounds: list[FoldRows], clips: Sequence[str], where: str, fix: str = "list each clip once"
) -> None:
    """Refuse a clip (`clips[row]`, its path) listed in two parts of a round (a CSV listing a file twice, in two
    splits or folds): trained on and then tested or validated on, or validated (the epoch chosen) and tested on."""
    for rows in rounds:
        parts = {"training": rows.train, "validation": rows.valid, "test": rows.test}
        listed = {
            part: {os.path.normpath(clips[row]) for row in ([] if at is None else at)} for part, at in parts.items()
        }
        for first, second in (("training", "validation"), ("training", "test"), ("validation", "test")):
            shared = sorted(listed[first] & listed[second])
            if shared:
                done = "after training on them" if first == "training" else "after choosing the epoch on them"
                raise ValueError(
                    f"{where}: {len(shared)} clip(s) are in both the {first} and the {second} part of "
                    f"{'the split' if rows.name == 'all' else f'fold {rows.name}'} (first: {shared[0]}), so they "
                    f"would be tested on {done}: {fix}."
                )


def run_fold(fold: Fold, num_classes: int, seed: int, settings: TrainingSettings) -> FoldRun:
    """Standardise, hold out a validation part if there is none, train, and test one fold with one seed."""
    train_x, test_x, train_y = fold.train_x, fold.test_x, fold.train_y
    if fold.valid_x is not None:
        train_x, valid_x, test_x = standardize(train_x, fold.valid_x, test_x)
        valid_y, validation = fold.valid_y, "the validation split"
    else:
        # EVAR standardises with the whole training part, then holds the validation part out of it.
        train_x, test_x = standardize(train_x, test_x)
        held = hold_out_validation(train_y, settings.validation_fraction, seed)
        keep = np.setdiff1d(np.arange(len(train_y)), held)
        valid_x, valid_y, train_x, train_y = train_x[held], train_y[held], train_x[keep], train_y[keep]
        validation = f"{settings.validation_fraction:g} of the training part held out (every class in it, seed {seed})"
    run = train_linear(train_x, train_y, valid_x, valid_y, num_classes, seed, settings)
    predictions = predict(run.layer, test_x)
    accuracy = float((predictions == fold.test_y).mean())
    return FoldRun(accuracy, predictions, run.best_epoch, run.epochs_run, len(train_y), len(valid_y), validation)


@holds_claimed_folders()
def linear_eval(args: LinearEvalArguments) -> LinearEvalResult:
    """EVAR's linear evaluation of `byola-extract` outputs (see the module doc): every fold with seeds `args.seed`,
    `args.seed + 1`, ... `args.seed + args.seeds - 1`. With `args.output_dir` (a folder this command owns, claimed
    before training), writes `eval_results.json` ([`LinearEvalResult`]) and `confusion_matrix.png`."""
    settings = check_settings(args)
    folds, classes, protocol = load_folds(args)
    if args.validation_fraction is not None and all(fold.valid_x is not None for fold in folds):
        raise ValueError(
            f"--validation_fraction has no effect: {args.embeddings_dir} has a validation split, which early stopping "
            "uses: drop --validation_fraction."
        )
    if args.output_dir is not None:
        record = run_record(args, folds, classes)
        claim_output_dir(args.output_dir, COMMAND, record, OUTPUTS, args.overwrite_output_dir)
    runs = [
        [run_fold(fold, len(classes), args.seed + offset, settings) for fold in folds] for offset in range(args.seeds)
    ]
    result = summarize(folds, runs, classes, protocol, settings)
    result.settings.update(seeds=args.seeds, seed=args.seed, label_column_name=args.label_column_name)
    result.embeddings = {
        name: {"dir": str(Path(path).resolve()), **(embedding_record(path) or {})}
        for name, path in input_parts(args).items()
    }
    warn_of_skipped_clips(result.embeddings)
    if args.output_dir is not None:
        write_report(result, folds, runs[0], args.output_dir)
    return result


def warn_of_skipped_clips(embeddings: dict[str, dict]) -> None:
    """Warn when `byola-extract --skip_bad` left clips out of the folders read (`embeddings`: part -> record): the
    scores are over the clips left, which EVAR, stopping on an unreadable file, never does."""
    skipped = {part: record.get("skipped_clips", 0) for part, record in embeddings.items()}
    if any(skipped.values()):
        counts = ", ".join(f"{count} of {part}" for part, count in skipped.items() if count)
        logger.warning(
            f"byola-extract --skip_bad left clips out ({counts}; listed in each folder's skipped.json): the "
            "accuracy is over the clips left, not the whole task."
        )


def load_folds(args: LinearEvalArguments) -> tuple[list[Fold], list[str], str]:
    """The folds, the class names and the layout (`"split"` or `"fold"`) of the task `args` name."""
    if args.embeddings_dir is not None:
        if args.train_dir is not None or args.test_dir is not None or args.validation_dir is not None:
            raise ValueError(
                "--embeddings_dir takes the whole task: drop --train_dir, --test_dir and --validation_dir."
            )
        return folds_from_table(args.embeddings_dir, args.label_column_name)
    if args.train_dir is not None and args.test_dir is not None:
        check_distinct_folders({"train": args.train_dir, "validation": args.validation_dir, "test": args.test_dir})
        parts = (args.train_dir, args.test_dir, args.validation_dir, args.label_column_name)
        return (*folds_from_directories(*parts), "split")
    raise ValueError("Give --embeddings_dir (an EVAR task with a split or fold column) or --train_dir and --test_dir.")


def check_distinct_folders(parts: dict[str, str | None]) -> None:
    """Refuse one folder given for two parts (`parts`: part -> `--PART_dir`): testing on the training clips, or
    choosing the epoch on the test clips, says nothing."""
    folders = {name: Path(path).resolve() for name, path in parts.items() if path is not None and Path(path).is_dir()}
    for first, second in itertools.combinations(folders, 2):
        if folders[first] == folders[second]:
            raise ValueError(f"--{first}_dir and --{second}_dir are the same folder: give each part its own clips.")


def input_parts(args: LinearEvalArguments) -> dict[str, str]:
    """The `byola-extract` outputs `args` name, by part."""
    if args.embeddings_dir is not None:
        return {"task": args.embeddings_dir}
    parts = {"train": args.train_dir, "valid": args.validation_dir, "test": args.test_dir}
    return {name: path for name, path in parts.items() if path is not None}


def run_record(args: LinearEvalArguments, folds: list[Fold], classes: list[str]) -> dict:
    """What a report is made of: every argument but those that may change on a re-run (where it writes), and the
    `source`: how many clips were read and a fingerprint of their embeddings and labels, fold by fold."""
    digest = hashlib.sha256(json.dumps(classes, default=str).encode())
    for fold in folds:
        digest.update(fold.name.encode())
        for array in (fold.train_x, fold.train_y, fold.valid_x, fold.valid_y, fold.test_x, fold.test_y):
            digest.update(b"none" if array is None else np.ascontiguousarray(array).tobytes())
    clips = sum(len(fold.test_y) for fold in folds)
    return {"arguments": recorded_arguments(args), "source": {"test_clips": clips, "fingerprint": digest.hexdigest()}}


def check_settings(args: LinearEvalArguments) -> TrainingSettings:
    """The classifier's settings, or a one-line `ValueError` for each setting no evaluation can use."""
    check_whole_numbers(("seeds", args.seeds, 1), ("epochs", args.epochs, 1), ("patience", args.patience, 0))
    if not (np.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise ValueError(f"--learning_rate must be a positive number, got {args.learning_rate!r}.")
    resolve_device(args.device)  # None: the CPU
    settings = TrainingSettings(args.learning_rate, args.epochs, args.patience, device=args.device)
    if args.validation_fraction is not None:
        settings.validation_fraction = args.validation_fraction
    if not 0 < settings.validation_fraction < 1:
        raise ValueError(f"--validation_fraction must be between 0 and 1, got {settings.validation_fraction!r}.")
    if args.validation_dir is not None and args.validation_fraction is not None:
        raise ValueError("--validation_dir and --validation_fraction exclude each other: give one.")
    if args.overwrite_output_dir and args.output_dir is None:
        raise ValueError("--overwrite_output_dir replaces an earlier report in --output_dir: give one, or drop it.")
    return settings


def summarize(
    folds: list[Fold], runs: list[list[FoldRun]], classes: list[str], protocol: str, settings: TrainingSettings
) -> LinearEvalResult:
    """Mean ± std over every (seed, fold) run, each seed's and each fold's figures, and the first seed's pooled
    per-class report and confusion matrix."""
    accuracies = [run.accuracy for seed_runs in runs for run in seed_runs]
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for fold, run in zip(folds, runs[0]):
        np.add.at(matrix, (fold.test_y, run.predictions), 1)
    fold_figures = [
        {
            "fold": fold.name,
            "accuracies": [seed_runs[index].accuracy for seed_runs in runs],
            "mean": float(np.mean([seed_runs[index].accuracy for seed_runs in runs])),
            "std": float(np.std([seed_runs[index].accuracy for seed_runs in runs])),
            "best_epochs": [seed_runs[index].best_epoch for seed_runs in runs],
            "epochs_run": [seed_runs[index].epochs_run for seed_runs in runs],
            "num_train": runs[0][index].num_train,
            "num_validation": runs[0][index].num_validation,
            "num_test": len(fold.test_y),
        }
        for index, fold in enumerate(folds)
    ]
    seed_accuracies = [float(np.mean([run.accuracy for run in seed_runs])) for seed_runs in runs]
    return LinearEvalResult(
        test_accuracy=float(np.mean(accuracies)),
        test_accuracy_std=float(np.std(accuracies)),
        accuracies=accuracies,
        seed_accuracies=seed_accuracies,
        seed_accuracy_std=float(np.std(seed_accuracies)),
        folds=fold_figures,
        classes=classes,
        per_class=per_class_report(matrix, classes),
        confusion_matrix=matrix.tolist(),
        best_epochs=[run.best_epoch for seed_runs in runs for run in seed_runs],
        # All three summed over the folds: the first fold's training sizes beside the total of test clips read as
        # one fold's split.
        num_train=sum(figures["num_train"] for figures in fold_figures),
        num_validation=sum(figures["num_validation"] for figures in fold_figures),
        num_test=sum(figures["num_test"] for figures in fold_figures),
        validation=runs[0][0].validation,
        protocol="leave-one-fold-out" if protocol == "fold" else "train/valid/test split",
        settings={"learning_rate": settings.learning_rate, "epochs": settings.epochs, "patience": settings.patience,
                  "validation_fraction": settings.validation_fraction},
    )  # fmt: skip

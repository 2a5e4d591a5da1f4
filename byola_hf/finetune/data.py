"""The task `byola-finetune` trains on: an EVAR task CSV read as `byola-extract --metadata_csv` reads it, its folds
as `byola-linear-eval` makes them, labels as EVAR encodes them, and the clips as batches of waveforms.

A label cell holding commas (`Bark,Dog`) makes the task multi-label, as in EVAR: every cell is then a comma-separated
set of classes (spaces around names dropped), encoded as multi-hot rows; otherwise each cell is one class, encoded by
its index in the sorted classes ([`~byola_hf.linear_eval.evaluate.label_classes`]). The classes are those of the
whole CSV, and each fold's training part must hold every class its validation and test parts hold, and two or more,
and none of their clips.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from ..audio import decode_undecoded_audio, pad_waveforms
from ..linear_eval.evaluate import (
    FoldRows,
    check_clips_tested_unseen,
    encode,
    fold_rows,
    is_multi_label,
    label_classes,
)
from ..tools.data import FILE_COLUMN, metadata_csv_source, source_fingerprint


AUDIO_COLUMN = "audio"


@dataclass
class FinetuneTask:
    """A task CSV ready to train on: each row's decoded waveform and target, the classes, the folds, a fingerprint
    of the source (its rows and audio files), and each row's `file_name` (for the predictions it writes)."""

    waveforms: list[np.ndarray]
    targets: np.ndarray
    classes: list
    multi_label: bool
    folds: list[FoldRows]
    layout: str
    fingerprint: str
    files: list[str] = field(default_factory=list)


def parse_labels(cells: list, multi_label: bool) -> list:
    """Each cell's label (`multi_label=False`) or list of labels (comma-separated); an empty one is an error."""
    if not multi_label:
        label_classes(cells)  # refuses empty labels
        return list(cells)
    sets = [[part.strip() for part in str(cell).split(",")] for cell in cells]
    if any(not part for labels in sets for part in labels):
        raise ValueError("Some multi-label cells have an empty label (e.g. 'a,,b' or a trailing comma): fix them.")
    return sets


def encode_targets(labels: list, classes: list, multi_label: bool) -> np.ndarray:
    """Class indices `(rows,)` int64, or multi-hot rows `(rows, classes)` float32."""
    if not multi_label:
        return encode(labels, classes)
    index = {label: position for position, label in enumerate(classes)}
    targets = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for row, names in enumerate(labels):
        targets[row, [index[name] for name in names]] = 1.0
    return targets


def check_fold_classes(fold: FoldRows, labels: list, multi_label: bool, classes: list) -> None:
    """Refuse a fold whose training part holds one class only, or whose validation or test part holds a class its
    training part never does."""

    def present(rows: np.ndarray) -> set:
        return {name for row in rows for name in labels[row]} if multi_label else {labels[row] for row in rows}

    trained = present(fold.train)
    if len(trained) < 2:
        raise ValueError(
            f"Fold {fold.name}: the training part holds one class only ({next(iter(trained))!r}): classification "
            "needs two or more; check --label_column_name and the CSV."
        )
    for part, rows in (("validation", fold.valid), ("test", fold.test)):
        unseen = present(rows) - trained if rows is not None else set()
        if unseen:
            names = ", ".join(str(name) for name in sorted(unseen, key=str)[:10])
            raise ValueError(
                f"Fold {fold.name}: the {part} part has labels never seen in its training part: {names}. Add "
                "training clips of them, or remove those clips."
            )


def load_task(
    metadata_csv: str, data_dir: str | None, label_column_name: str, feature_extractor, wanted_folds: list[str]
) -> FinetuneTask:
    """Read, check and decode a task CSV (see the module doc); every mistake is a one-line `ValueError`."""
    dataset = metadata_csv_source(metadata_csv, data_dir, AUDIO_COLUMN)
    if label_column_name not in dataset.column_names:
        raise ValueError(
            f"{metadata_csv} has no label column '{label_column_name}': name it with --label_column_name; its "
            f"columns are {[name for name in dataset.column_names if name != AUDIO_COLUMN]}."
        )
    layout = "split" if "split" in dataset.column_names else "fold" if "fold" in dataset.column_names else None
    if layout is None:
        raise ValueError(
            f"{metadata_csv} has neither a 'split' (train/valid/test) nor a 'fold' column: add one, as EVAR's task "
            "CSVs have (docs/evar_tasks.md)."
        )
    cells = dataset[label_column_name]
    multi_label = is_multi_label(cells)
    labels = parse_labels(cells, multi_label)
    classes = label_classes([name for names in labels for name in names] if multi_label else labels)
    folds = fold_rows(np.asarray(dataset[layout], dtype=object), layout, metadata_csv, wanted_folds)
    check_clips_tested_unseen(folds, dataset[FILE_COLUMN], metadata_csv)
    for fold in folds:
        check_fold_classes(fold, labels, multi_label, classes)
    fingerprint = source_fingerprint(dataset, AUDIO_COLUMN)
    # Decoded as every command decodes files (byola_hf.audio): a truncated or non-finite file is an error naming it.
    waveforms = []
    for item in dataset[AUDIO_COLUMN]:
        waveforms.append(decode_undecoded_audio(item, feature_extractor.sampling_rate))
        feature_extractor.check_loud_clip(waveforms[-1], item["path"])  # named here, not in a training batch
    targets = encode_targets(labels, classes, multi_label)
    files = [str(name) for name in dataset[FILE_COLUMN]]
    return FinetuneTask(waveforms, targets, classes, multi_label, folds, layout, fingerprint, files)


class ClipSet(torch.utils.data.Dataset):
    """Rows of a [`FinetuneTask`]: `{"waveform", "labels"}`, each waveform whole (training crops it at random) or cut
    to its first `cut` samples (evaluation keeps the start, as EVAR's test split does)."""

    def __init__(self, task: FinetuneTask, rows: np.ndarray, cut: int | None = None):
        self.task, self.rows, self.cut = task, rows, cut

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        waveform = self.task.waveforms[row]
        return {"waveform": waveform if self.cut is None else waveform[: self.cut], "labels": self.task.targets[row]}


def collate_clips(examples: list[dict]) -> dict[str, torch.Tensor]:
    """`waveforms (batch, longest)` right-padded with zeros, `lengths (batch,)`, `labels` (ids or multi-hot rows)."""
    return {
        "waveforms": pad_waveforms([example["waveform"] for example in examples]),
        "lengths": torch.tensor([len(example["waveform"]) for example in examples]),
        "labels": torch.from_numpy(np.stack([example["labels"] for example in examples])),
    }

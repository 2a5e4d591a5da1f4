"""Task recipes: what each SUPERB head kind needs from the data, in one small class per kind.

A recipe owns its head's arguments, the label encoding (fitted on the training split), the collation of the labels
into a batch, the metric, the checks that a split's labels are usable, and its pictures; [`~superb.run.run`] calls
the same steps for every task.

| head kind | recipe | labels | metric |
|---|---|---|---|
| utterance classes (KS, SID, ER; IC with one softmax per slot) | [`ClassificationRecipe`] | class ids | accuracy |
| CTC (PR phonemes, ASR characters) | [`CTCRecipe`] | token ids, padded with -100 | PER / WER |
| frame activity (SD) | [`FrameRecipe`] | frames x speakers 0/1, padded with -100 | DER |
"""

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from ..configuration_byola import ENCODER_ALONE, BYOLAConfig, check_head_fits
from ..processing_byola import BYOLAProcessor
from .tasks import CLASSIFICATION, CTC, FRAMES, SuperbTask


logger = logging.get_logger(__name__)
IGNORED = -100  # label value the losses and metrics skip (padding)


def is_empty(value: Any) -> bool:
    """Whether a label cell holds nothing: `None` (an empty CSV cell), an empty or blank string, an empty list."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, (list, tuple)) and len(value) == 0


def example_name(dataset, row: int, audio_column: str = "audio") -> str:
    """How a message names one example: its audio file when the dataset keeps paths, else its row number."""
    if audio_column in dataset.column_names:
        try:
            item = (
                dataset.with_format(None)
                .select_columns([audio_column])
                .cast_column(audio_column, type(dataset.features[audio_column])(decode=False))[row][audio_column]
            )
            if isinstance(item, dict) and item.get("path"):
                return f"{item['path']} (row {row})"
        except (TypeError, ValueError, KeyError):
            pass
    return f"row {row}"


class TaskRecipe:
    """
    The steps one head kind adds to the SUPERB recipe (see the module doc). Subclasses set `head` (the model class
    name) and `column_flag` (the command-line flag naming their label column).

    Args:
        task: the task preset.
        columns: the label columns (several for IC's slots).
        label_names: per column, the class names in the order a corpus defines them (s3prl's), else `None`.
        vocabulary: a corpus's fixed CTC tokens (s3prl's phoneme list), else `None` (tokens of the training split).
        ctc_head: the CTC head kind (`linear` or `bilstm`), default the task's.
    """

    head: str = ""
    column_flag: str = "--label_column_name"

    def __init__(
        self,
        task: SuperbTask,
        columns: Sequence[str],
        label_names: dict[str, list[str]] | None = None,
        vocabulary: list[str] | None = None,
        ctc_head: str | None = None,
    ):
        self.task = task
        self.columns = list(columns)
        self.label_names = label_names or {}
        self.vocabulary = vocabulary
        self.ctc_head = ctc_head or task.ctc_head
        self.processor = None

    def check_split(self, dataset, split_name: str) -> None:
        """Refuse, with one line, a split without the label columns or with an empty label cell."""
        for column in self.columns:
            if column not in dataset.column_names:
                raise ValueError(
                    f"The {split_name} split has no label column '{column}'; its columns are "
                    f"{sorted(dataset.column_names)}. Name the label column with {self.column_flag}."
                )
            for row, value in enumerate(dataset[column]):
                if is_empty(value):
                    raise ValueError(
                        f"The {split_name} split has an empty '{column}' label at {example_name(dataset, row)}: "
                        "label every clip (an empty cell is not a class), or remove that clip."
                    )

    def fit(self, train, feature_extractor) -> dict[str, Any]:
        """Fit the label encoding on the training split (and set `processor`, saved with the model, when the head
        needs more than the feature extractor); return the head's `from_pretrained` arguments. Writes nothing: a run
        fits, and is refused, before it claims its output folder."""
        raise NotImplementedError

    def check_trained_head(self, config: BYOLAConfig, head_kwargs: dict[str, Any], source: str) -> None:
        """Refuse a model (`source`, its `config`) saved with a trained head of this kind for other labels than the
        fitted ones ([`~byola_hf.configuration_byola.check_head_fits`] on the head's arguments `head_kwargs`)."""
        check_head_fits(config, self.head, head_kwargs, source)

    def check_labels_seen(self, dataset, split_name: str | None) -> None:
        """Refuse an evaluation split whose labels the fitted encoding cannot represent (default: any is fine)."""

    def encode(self, batch: dict[str, list]) -> list:
        """The `labels` of a batch of rows (a `datasets.map` batch)."""
        raise NotImplementedError

    def collate_labels(self, labels: list, frames: list[int]) -> torch.Tensor:
        """The batch's `labels` tensor; `frames`: each example's output frames (the batch is padded to the most)."""
        raise NotImplementedError

    def fingerprint(self) -> list:
        """What the encoded labels depend on, for the cache of prepared features."""
        return [self.head, self.columns, self.label_names]

    def after_features(self, dataset, config: BYOLAConfig, split_name: str):
        """The prepared split, filtered as the head needs (default: unchanged)."""
        return dataset

    def metrics_function(self, metric, config: BYOLAConfig) -> Callable:
        """`compute_metrics` for `Trainer`."""
        raise NotImplementedError

    def save_pictures(self, output: Path, config: BYOLAConfig, prediction) -> None:
        """Pictures of the evaluation beside the model (default: none)."""


def label_strings(dataset, column: str) -> list[str]:
    """A column's labels as strings: a `ClassLabel`'s class names (audiofolder's folder names), else the values."""
    names = getattr(dataset.features[column], "names", None) if dataset.features else None
    if names is not None:
        return [names[value] for value in dataset[column]]
    return [str(value) for value in dataset[column]]


def sorted_classes(dataset, column: str) -> list[str]:
    """A column's distinct labels in order: a `ClassLabel`'s own order, numbers as numbers, else as text."""
    names = getattr(dataset.features[column], "names", None) if dataset.features else None
    seen = set(label_strings(dataset, column))
    if names is not None:
        return [name for name in names if name in seen]
    values = set(dataset[column])
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return [str(value) for value in sorted(values)]
    return sorted(seen)


class ClassificationRecipe(TaskRecipe):
    """Utterance classes (KS, SID, ER), or one softmax per slot when several columns are given (IC): labels are the
    classes seen in training, in the corpus's order when it defines one, else the `ClassLabel`'s order (its names)
    or sorted (numbers as numbers)."""

    head = CLASSIFICATION

    def check_split(self, dataset, split_name: str) -> None:
        super().check_split(dataset, split_name)
        for column in self.columns:
            if any(isinstance(value, (list, tuple)) for value in dataset[column]):
                raise ValueError(
                    f"The {split_name} split's '{column}' holds lists (several labels per clip): a classification "
                    f"head takes one class per clip; name a column of single labels with {self.column_flag}."
                )

    def fit(self, train, feature_extractor) -> dict[str, Any]:
        self.vocabularies = [self.label_names.get(column) or sorted_classes(train, column) for column in self.columns]
        for column, names in zip(self.columns, self.vocabularies):
            if len(names) < 2:  # every prediction would be it: an accuracy of 1.0 that says nothing
                raise ValueError(
                    f"The train split's '{column}' labels are all '{names[0]}': a classifier needs two classes or "
                    f"more; check {self.column_flag} and the data."
                )
        self.indices = [{value: index for index, value in enumerate(names)} for names in self.vocabularies]
        # A ClassLabel column's rows hold ids; `encode` sees a map batch without the features, so keep the names.
        self.class_names = {
            column: train.features[column].names
            for column in self.columns
            if train.features and getattr(train.features[column], "names", None) is not None
        }
        self.check_labels_seen(train, "train")
        if len(self.columns) > 1:
            names = [f"{column}={value}" for column, v in zip(self.columns, self.vocabularies) for value in v]
            slots = [len(v) for v in self.vocabularies]
        else:
            names, slots = self.vocabularies[0], None
        # The head in full, not what the model folder's config says: one fine-tuned with EVAR's head or for slots
        # is refused (`check_head_fits`), not trained on as this task's.
        return {
            "classifier_head": "superb",
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
            "classifier_slots": slots,
        }

    def check_labels_seen(self, dataset, split_name: str | None) -> None:
        for column, index in zip(self.columns, self.indices):
            names = getattr(dataset.features[column], "names", None) if dataset.features else None
            if names is not None and names != self.class_names.get(column, names):
                raise ValueError(
                    f"The {split_name} split's '{column}' classes ({', '.join(names[:5])} ...) are not the training "
                    "split's: its class ids would mean other classes; give every split the same class list."
                )
            unseen = sorted(set(label_strings(dataset, column)) - set(index))
            if unseen:
                raise ValueError(
                    f"The {split_name} split has labels in '{column}' that never occur in training: "
                    f"{', '.join(unseen[:10])}{' ...' if len(unseen) > 10 else ''}. Add training examples of them, "
                    "or remove those clips from that split."
                )

    def encode(self, batch: dict[str, list]) -> list:
        rows = zip(*(batch[column] for column in self.columns))
        names = [self.class_names.get(column) for column in self.columns]
        values = [
            [
                index[str(value) if known is None else known[value]]
                for value, index, known in zip(row, self.indices, names)
            ]
            for row in rows
        ]
        return values if len(self.columns) > 1 else [value[0] for value in values]

    def collate_labels(self, labels: list, frames: list[int]) -> torch.Tensor:
        return torch.tensor(labels)

    def fingerprint(self) -> list:
        return [*super().fingerprint(), getattr(self, "vocabularies", None), getattr(self, "class_names", None)]

    def metrics_function(self, metric, config: BYOLAConfig) -> Callable:
        def compute(prediction) -> dict[str, float]:
            logits, labels = prediction.predictions, prediction.label_ids
            if config.classifier_slots:  # every slot's argmax; right when all slots are
                parts = np.split(logits, np.cumsum(config.classifier_slots)[:-1], axis=-1)
                predicted = np.stack([part.argmax(-1) for part in parts], axis=-1)
                return metric.compute(predictions=predicted.tolist(), references=labels.tolist())
            return metric.compute(predictions=logits.argmax(-1), references=labels)

        return compute

    def save_pictures(self, output: Path, config: BYOLAConfig, prediction) -> None:
        if config.classifier_slots or prediction is None:
            return
        from ..tools.plots import save_confusion_matrix

        save_confusion_matrix(
            prediction.label_ids,
            prediction.predictions.argmax(-1),
            [config.id2label[i] for i in range(config.num_labels)],
            output / "confusion_matrix.png",
            title=f"{self.task.name.upper()} confusion matrix",
        )


def build_ctc_tokenizer(transcriptions: list[str] | None, phonemes: bool, tokens: list[str] | None = None):
    """A CTC tokenizer, blank = `<pad>` = id 0, `<unk>` = 1, then `tokens` (a corpus's fixed vocabulary, e.g. s3prl's
    phoneme list) or the tokens of `transcriptions` (space-separated phonemes, or characters with "|" between words).
    Held in memory (its vocab.json is written where the processor is saved)."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2PhonemeCTCTokenizer

    if tokens is None:
        tokens = sorted({t for text in transcriptions for t in (text.split() if phonemes else text.replace(" ", "|"))})
    vocab = {"<pad>": 0, "<unk>": 1, **{token: index + 2 for index, token in enumerate(tokens)}}
    with tempfile.TemporaryDirectory() as folder:  # the tokenizers read their vocabulary from a file only
        path = Path(folder) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False))
        if phonemes:
            return Wav2Vec2PhonemeCTCTokenizer(
                str(path), do_phonemize=False, pad_token="<pad>", unk_token="<unk>", bos_token=None, eos_token=None
            )
        return Wav2Vec2CTCTokenizer(str(path), pad_token="<pad>", unk_token="<unk>", word_delimiter_token="|")


class CTCRecipe(TaskRecipe):
    """CTC over phonemes (PR) or characters (ASR): a tokenizer from the corpus's vocabulary or the training
    transcriptions, targets padded with -100, PER/WER by edit distance; training clips with more tokens than output
    frames are dropped (CTC needs a frame per token, and a blank between two equal ones), evaluated ones scored, as
    s3prl scores them."""

    head = CTC
    column_flag = "--text_column_name"

    def fit(self, train, feature_extractor) -> dict[str, Any]:
        column = self.columns[0]
        transcriptions = None if self.vocabulary else train[column]
        self.tokenizer = build_ctc_tokenizer(transcriptions, self.task.phonemes, self.vocabulary)
        self.processor = BYOLAProcessor(feature_extractor, self.tokenizer)  # the feature extractor and the tokenizer
        return {
            "vocab_size": len(self.tokenizer),
            "ctc_blank_id": self.tokenizer.pad_token_id,
            "ctc_head": self.ctc_head,
            "ctc_proj_size": self.task.ctc_proj_size,
        }

    def check_trained_head(self, config: BYOLAConfig, head_kwargs: dict[str, Any], source: str) -> None:
        """Also refuse a trained CTC head over another vocabulary of the same size (other tokens, or in another
        order): its outputs would be read as other tokens. The head's vocabulary is the tokenizer saved beside it."""
        super().check_trained_head(config, head_kwargs, source)
        if self.head not in (config.architectures or []):
            return
        try:
            saved = type(self.tokenizer).from_pretrained(source).get_vocab()
        except (OSError, TypeError):  # no tokenizer saved with the head (TypeError: no vocab.json in a folder)
            saved = None
        if saved != self.tokenizer.get_vocab():
            raise ValueError(
                f"{source} holds a trained {self.head} head for another vocabulary than this task's "
                f"({'none saved' if saved is None else f'{len(saved)} tokens'} against {len(self.tokenizer)}): "
                f"{ENCODER_ALONE}"
            )

    def encode(self, batch: dict[str, list]) -> list:
        return [self.tokenizer(text)["input_ids"] for text in batch[self.columns[0]]]

    def collate_labels(self, labels: list, frames: list[int]) -> torch.Tensor:
        longest = max(len(label) for label in labels)
        return torch.tensor([label + [IGNORED] * (longest - len(label)) for label in labels])

    def fingerprint(self) -> list:
        return [*super().fingerprint(), self.tokenizer.get_vocab(), self.task.phonemes]

    def after_features(self, dataset, config: BYOLAConfig, split_name: str):
        if split_name != "train":  # every clip counts in the PER/WER (s3prl's), however its target aligns
            return dataset

        def fits(example):  # a frame per token, and a blank between two equal tokens (else the loss is zeroed)
            labels = example["labels"]
            needed = len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))
            return needed <= len(example["input_features"]) // config.time_downsampling

        kept = dataset.filter(fits, desc=f"CTC length check ({split_name})")
        if len(kept) < len(dataset):
            logger.warning(
                f"{split_name}: dropped {len(dataset) - len(kept)} of {len(dataset)} clips whose transcription needs "
                f"more BYOL-A output frames ({config.frames_per_second:g} per second) than the clip has: one per "
                "token and one between repeated tokens."
            )
        if len(kept) == 0:
            raise ValueError(
                f"Every {split_name} clip's transcription is longer than its BYOL-A output "
                f"({config.frames_per_second:g} frames/s)."
            )
        return kept

    def metrics_function(self, metric, config: BYOLAConfig) -> Callable:
        processor = self.processor

        def compute(prediction) -> dict[str, float]:
            logits, labels = prediction.predictions, prediction.label_ids
            predicted = processor.batch_decode(logits.argmax(-1))
            references = processor.batch_decode(np.where(labels < 0, config.ctc_blank_id, labels), group_tokens=False)
            return metric.compute(predictions=predicted, references=references)

        return compute


class FrameRecipe(TaskRecipe):
    """Frame-level speaker activity (SD): labels are `(frames, speakers)` 0/1 rows at the model's output frame rate,
    cut to the clip's frames, padded (-100) to the batch's; permutation-invariant BCE; DER over the labelled frames."""

    head = FRAMES

    def fit(self, train, feature_extractor) -> dict[str, Any]:
        self.speakers = len(train[0][self.columns[0]][0])
        self.check_labels_seen(train, "train")
        return {"num_labels": self.speakers, "problem_type": "multi_label_classification"}

    def check_labels_seen(self, dataset, split_name: str | None) -> None:
        """Refuse a clip whose activity rows are not one 0/1 value per speaker the head has (the first training
        clip's count): another count ended, after training, in a batch that could not be stacked."""
        column = self.columns[0]
        for row, activity in enumerate(dataset[column]):
            widths = sorted({len(frame) for frame in activity})
            if widths != [self.speakers]:
                raise ValueError(
                    f"The {split_name} split's '{column}' at {example_name(dataset, row)} has rows of {widths} "
                    f"speakers, the first training clip {self.speakers}: give every clip one 0/1 value per speaker "
                    "in each row, the same speakers' count (0 for a speaker who is silent there)."
                )

    def encode(self, batch: dict[str, list]) -> list:
        return batch[self.columns[0]]

    def after_features(self, dataset, config: BYOLAConfig, split_name: str):
        """The split, refused when a clip's label rows are not at the model's frame rate (more than one row from its
        output frames): labels of another rate would train and score out of step in time, with no error."""

        def misaligned(example):
            return abs(len(example["labels"]) - len(example["input_features"]) // config.time_downsampling) > 1

        wrong = dataset.filter(misaligned, desc=f"SD label rate check ({split_name})")
        if len(wrong):
            example, rate = wrong[0], config.frames_per_second
            raise ValueError(
                f"{split_name}: {len(wrong)} clips' speaker labels are not at the model's {rate:g} frames per second "
                f"(a clip of {len(example['input_features']) // config.time_downsampling} output frames has "
                f"{len(example['labels'])} label rows): make the labels at that rate."
            )
        return dataset

    def collate_labels(self, labels: list, frames: list[int]) -> torch.Tensor:
        padded = np.full((len(labels), max(frames), len(labels[0][0])), IGNORED, np.float32)
        for row, label, length in zip(padded, labels, frames):
            label = np.asarray(label, np.float32)[:length]  # a row past the clip's end would score padding's output
            row[: len(label)] = label
        return torch.from_numpy(padded)

    def metrics_function(self, metric, config: BYOLAConfig) -> Callable:
        def compute(prediction) -> dict[str, float]:
            logits, labels = prediction.predictions, prediction.label_ids
            valid = [example[:, 0] != IGNORED for example in labels]
            predicted = [(example[mask] > 0).astype(np.int8) for example, mask in zip(logits, valid)]
            references = [example[mask].astype(np.int8) for example, mask in zip(labels, valid)]
            return metric.compute(predictions=predicted, references=references)

        return compute


RECIPES: dict[str, type[TaskRecipe]] = {CLASSIFICATION: ClassificationRecipe, CTC: CTCRecipe, FRAMES: FrameRecipe}


def recipe_for(task: SuperbTask, columns: Sequence[str] | None = None, **kwargs: Any) -> TaskRecipe:
    """The recipe of `task`'s head kind, on `columns` (default: the task's own label column(s))."""
    return RECIPES[task.head](task, columns or task.label_column.split(","), **kwargs)

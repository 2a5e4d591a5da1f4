"""Fine-tune and evaluate BYOL-A on a SUPERB task with `Trainer` (frozen encoder, learned layer weights, light head).

    byola-run-superb --task ks --model_name_or_path byola-512-ks --dataset_name audiofolder --data_dir mini/ks \\
        --output_dir out/ks --num_train_epochs 20 --eval_strategy epoch --report_to none

Any `TrainingArguments` flag works; the task picks the head, the metric and the learning rate that SUPERB / the
BYOL-A upstream use unless `--learning_rate` is given. Runs unchanged under `torchrun` / `accelerate launch`.
"""

import functools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments

from ..configuration_byola import BYOLAConfig
from ..extras import require_extra
from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..hub import check_hub_access, save_model_card
from ..tools.cli import make_parser, parse_arguments, require_extras, run_command
from ..tools.data import load_audio_dataset, load_byola_front_end
from .tasks import SUPERB_TASKS, SuperbTask


logger = logging.getLogger(__name__)
COMMAND = "byola-run-superb"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "BYOL-A model directory (with task statistics) or Hub id"})
    freeze_base_model: bool = field(
        default=True,
        metadata={"help": "Keep the BYOL-A encoder frozen, as SUPERB does (--no_freeze_base_model fine-tunes it too)"},
    )
    use_weighted_layer_sum: bool = field(
        default=True,
        metadata={
            "help": "Learn a weighted sum of the encoder's hidden states (--no_use_weighted_layer_sum: the "
            "last hidden state only)"
        },
    )
    ctc_head: str | None = field(
        default=None, metadata={"help": "linear or bilstm (default: linear for pr, bilstm for asr)"}
    )


@dataclass
class DataTrainingArguments:
    task: str = field(metadata={"help": "SUPERB task", "choices": list(SUPERB_TASKS)})
    dataset_name: str = field(
        default="audiofolder", metadata={"help": "Hub dataset, audiofolder, or a save_to_disk path"}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    data_dir: str | None = field(default=None, metadata={"help": "Local folder for --dataset_name audiofolder"})
    train_split_name: str = field(default="train", metadata={"help": "Split to train on"})
    eval_split_name: str = field(
        default="validation",
        metadata={
            "help": "Split to evaluate on; when the dataset has no such split, one is held out of the training "
            "split (--validation_split_percentage)"
        },
    )
    validation_split_percentage: int = field(
        default=10,
        metadata={
            "help": "Without an evaluation split: the percentage of the training split held out for evaluation "
            "(fixed by --seed); 0 trains without evaluating"
        },
    )
    audio_column_name: str = field(default="audio", metadata={"help": "Audio column"})
    label_column_name: str = field(
        default="label", metadata={"help": "Label column; for ic the slot columns, comma-separated"}
    )
    text_column_name: str | None = field(
        default=None, metadata={"help": "Transcription column (pr: phonemes, asr: text)"}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training clips"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many evaluation clips"})
    max_length_seconds: float | None = field(default=None, metadata={"help": "Truncate longer clips"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for datasets.map"})


class LogMelCollator:
    """Pads stored log-mels (time-first `(frames, n_mels)` rows, see [`cache_log_mels`]) with the feature extractor's
    padding value and frame mask, and the task's labels."""

    def __init__(self, feature_extractor: BYOLAFeatureExtractor, task: SuperbTask, downsampling: int):
        self.feature_extractor = feature_extractor
        self.task = task
        self.downsampling = downsampling

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.feature_extractor.pad(
            [{"input_features": e["input_features"].T} for e in examples], return_tensors="pt"
        )
        labels = [e["labels"] for e in examples]
        if self.task.head == "BYOLAForCTC":
            longest = max(len(label) for label in labels)
            batch["labels"] = torch.tensor([label + [-100] * (longest - len(label)) for label in labels])
        elif self.task.head == "BYOLAForAudioFrameClassification":
            frames = batch["input_features"].shape[-1] // self.downsampling
            padded = np.full((len(labels), frames, len(labels[0][0])), -100, np.float32)  # -100: no frame
            for row, label in zip(padded, labels):
                label = np.asarray(label, np.float32)[:frames]
                row[: len(label)] = label
            batch["labels"] = torch.from_numpy(padded)
        else:
            batch["labels"] = torch.tensor(labels)
        return dict(batch)


def log_mel_device(training_device: torch.device, num_proc: int | None) -> torch.device | None:
    """
    Where run_superb computes the log-mels it caches: the training accelerator when there is one and `datasets.map`
    runs in this process (forked map workers cannot use a GPU this process has initialised), else the CPU (`None`).
    The cached features are read back every epoch; computing them on the GPU takes the front end off the CPU.
    """
    if training_device.type == "cpu" or (num_proc or 1) > 1:
        return None
    return training_device


def log_mel_rows(
    feature_extractor: BYOLAFeatureExtractor,
    waveforms: list[np.ndarray],
    max_samples: int | None = None,
    device: torch.device | None = None,
) -> list[np.ndarray]:
    """Each waveform's log-mel, computed on `device` (the CPU when `None`), cut to `max_samples` samples when given,
    as a time-first `(frames, n_mels)` array: the rows [`cache_log_mels`] stores."""
    features = feature_extractor(
        waveforms,
        sampling_rate=feature_extractor.sampling_rate,
        padding=False,
        truncation=max_samples is not None,
        max_length=max_samples,
        device=device,
    )
    return [row.T for row in features["input_features"]]


def cache_log_mels(dataset, n_mels: int):
    """
    The mapped split as training reads it: `input_features` rows `(frames, n_mels)` stored as `Array2D`, read back
    as numpy arrays without a conversion per mel row (3.4x faster per epoch than nested lists on 1 s clips,
    `benchmarks/benchmark_superb_features.py`); the labels stay Python values.
    """
    datasets = require_extra("datasets", "superb")
    features = dataset.cast_column("input_features", datasets.Array2D(shape=(None, n_mels), dtype="float32"))
    return features.with_format("numpy", columns=["input_features"], output_all_columns=True)


def label_vocabulary(dataset, column: str) -> list[str]:
    """Class names of a label column: a ClassLabel's names, or the sorted distinct values."""
    import datasets

    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return sorted({str(value) for value in dataset[column]})


def build_ctc_tokenizer(transcriptions: list[str], output_dir: str, phonemes: bool):
    """A CTC tokenizer over the tokens of `transcriptions` (space-separated phonemes, or characters with "|" between
    words), blank = `<pad>` = id 0."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2PhonemeCTCTokenizer

    tokens = sorted({t for text in transcriptions for t in (text.split() if phonemes else text.replace(" ", "|"))})
    vocab = {"<pad>": 0, "<unk>": 1, **{token: index + 2 for index, token in enumerate(tokens)}}
    path = Path(output_dir) / "vocab.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(vocab, ensure_ascii=False))
    if phonemes:
        return Wav2Vec2PhonemeCTCTokenizer(
            str(path), do_phonemize=False, pad_token="<pad>", unk_token="<unk>", bos_token=None, eos_token=None
        )
    return Wav2Vec2CTCTokenizer(str(path), pad_token="<pad>", unk_token="<unk>", word_delimiter_token="|")


def load_front_end_with_statistics(model_name_or_path: str) -> tuple[BYOLAConfig, BYOLAFeatureExtractor]:
    """The model's config and feature extractor; a clear error when the config has no task statistics."""
    config, feature_extractor = load_byola_front_end(model_name_or_path)
    if not config.has_statistics:
        raise ValueError(
            f"The model at '{model_name_or_path}' has no normalisation statistics for this task. Compute them on the "
            f"training split first: byola-compute-stats --model_name_or_path {model_name_or_path} --dataset_name ... "
            "--output_dir MODEL_WITH_STATS (scripts/compute_stats.py), then pass that directory."
        )
    return config, feature_extractor


def run(
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    learning_rate_given: bool,
) -> dict[str, float]:
    """Train and evaluate; save the model, feature extractor (and processor), eval metrics and PNGs."""
    evaluate = require_extra("evaluate", "superb")
    datasets = require_extra("datasets", "superb")

    import byola_hf

    from ..tools.plots import save_confusion_matrix, save_layer_weights
    from .metrics import metric_path

    task = SUPERB_TASKS[data_args.task]
    _, feature_extractor = load_front_end_with_statistics(model_args.model_name_or_path)
    if training_args.push_to_hub:
        # Trainer pushes once at the end, with our card and pictures; fail now, before any work, if it cannot.
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (the repository to create).")
        check_hub_access(training_args.hub_model_id)
        training_args.hub_strategy = "end"
    if not learning_rate_given:
        training_args.learning_rate = task.learning_rate
    logger.info(
        f"Task {task.name} ({task.description}): {task.head}, learning rate {training_args.learning_rate:g} "
        f"({'given' if learning_rate_given else 'task default'}), world size {training_args.world_size}"
    )
    splits, eval_split = load_splits(data_args, feature_extractor.sampling_rate, training_args.seed)
    if splits.get("eval") is None:
        training_args.do_eval = False

    head_kwargs: dict[str, Any] = {
        "freeze_base": model_args.freeze_base_model,
        "use_weighted_layer_sum": model_args.use_weighted_layer_sum,
    }
    processor = None
    if task.head == "BYOLAForCTC":
        column = data_args.text_column_name or ("phonemes" if task.name == "pr" else "text")
        tokenizer = build_ctc_tokenizer(splits["train"][column], training_args.output_dir, phonemes=task.name == "pr")
        processor = byola_hf.BYOLAProcessor(feature_extractor, tokenizer)
        head_kwargs.update(
            vocab_size=len(tokenizer),
            ctc_blank_id=tokenizer.pad_token_id,
            ctc_head=model_args.ctc_head or ("bilstm" if task.name == "asr" else "linear"),
            ctc_proj_size=1024 if task.name == "asr" else 256,
        )
        encode = lambda batch: [tokenizer(text)["input_ids"] for text in batch[column]]  # noqa: E731
    elif task.head == "BYOLAForAudioFrameClassification":
        speakers = len(splits["train"][0][data_args.label_column_name][0])
        head_kwargs.update(num_labels=speakers, problem_type="multi_label_classification")
        encode = lambda batch: batch[data_args.label_column_name]  # noqa: E731
    else:
        columns = data_args.label_column_name.split(",")
        vocabularies = [label_vocabulary(splits["train"], column) for column in columns]
        if task.name == "ic":
            head_kwargs["classifier_slots"] = [len(v) for v in vocabularies]
            names = [f"{column}={value}" for column, v in zip(columns, vocabularies) for value in v]
        else:
            names = vocabularies[0]
        head_kwargs.update(
            num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
        )
        indices = [{value: i for i, value in enumerate(v)} for v in vocabularies]
        if splits.get("eval") is not None:
            check_labels_seen(splits["eval"], columns, vocabularies, eval_split)

        def encode(batch):
            values = [
                [index[str(batch[column][row])] for column, index in zip(columns, indices)]
                for row in range(len(batch[columns[0]]))
            ]
            return values if task.name == "ic" else [value[0] for value in values]

    max_samples = (
        int(data_args.max_length_seconds * feature_extractor.sampling_rate) if data_args.max_length_seconds else None
    )

    def prepare(batch, device=None):
        audio = [example["array"] for example in batch[data_args.audio_column_name]]
        return {"input_features": log_mel_rows(feature_extractor, audio, max_samples, device), "labels": encode(batch)}

    device = log_mel_device(training_args.device, data_args.preprocessing_num_workers)
    splits = {name: dataset for name, dataset in splits.items() if dataset is not None}
    with training_args.main_process_first(desc="feature extraction"):
        for name, dataset in splits.items():
            features = dataset.map(
                functools.partial(prepare, device=device),
                batched=True,
                batch_size=16,
                remove_columns=dataset.column_names,
                num_proc=data_args.preprocessing_num_workers,
                desc=f"log-mel ({name}, {device or 'cpu'})",
                # Hashed without the device, so that every rank of a multi-GPU run finds what rank 0 cached.
                new_fingerprint=datasets.fingerprint.Hasher.hash([dataset._fingerprint, prepare]),
            )
            splits[name] = cache_log_mels(features, feature_extractor.feature_size)
    model_class = getattr(byola_hf, task.head)
    model = model_class.from_pretrained(model_args.model_name_or_path, **head_kwargs)
    if task.head == "BYOLAForCTC":
        for name, dataset in splits.items():
            splits[name] = drop_too_long_targets(dataset, model.config, name)

    metric = evaluate.load(metric_path(task.metric), task.metric_config)
    compute_metrics = metrics_function(task, model.config, metric, processor)
    trainer = SuperbTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("eval"),
        data_collator=LogMelCollator(feature_extractor, task, model.config.time_downsampling),
        compute_metrics=compute_metrics,
        processing_class=processor or feature_extractor,
    )
    if training_args.do_train or not training_args.do_eval:
        train_result = trainer.train()
        trainer.save_metrics("train", train_result.metrics)
    metrics: dict[str, Any] = {}
    prediction = None
    if "eval" in splits:
        prediction = trainer.predict(splits["eval"], metric_key_prefix="eval")
        metrics = {**prediction.metrics, "eval_samples": len(splits["eval"]), "eval_split": eval_split}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    else:
        logger.warning("No evaluation split: the model is trained and saved without evaluation.")
    task_info = {
        "task": task.name,
        "description": task.description,
        "eval_split": eval_split,
        "metrics": {f"eval_{task.metric_key}": metrics.get(f"eval_{task.metric_key}")} if metrics else {},
    }
    trainer.task_info = task_info
    if trainer.is_world_process_zero():
        output = Path(training_args.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        if model.config.use_weighted_layer_sum:
            save_layer_weights(
                model.featurizer.layer_weights.detach().cpu(),
                output / "layer_weights.png",
                title=f"BYOL-A layer weights learned for {task.name.upper()}",
            )
        if task.head == "BYOLAForSequenceClassification" and not model.config.classifier_slots and prediction:
            save_confusion_matrix(
                prediction.label_ids,
                prediction.predictions.argmax(-1),
                [model.config.id2label[i] for i in range(model.config.num_labels)],
                output / "confusion_matrix.png",
                title=f"{task.name.upper()} confusion matrix",
            )
    if training_args.push_to_hub:  # saves the model, its processing class and our card, then one commit
        trainer.push_to_hub(commit_message=f"BYOL-A fine-tuned for SUPERB {task.name.upper()} with byola_hf")
    else:
        trainer.save_model()
    return metrics


class SuperbTrainer(Trainer):
    """`Trainer` whose model card is byola_hf's ([`~byola_hf.hub.model_card`]: statistics and their provenance, the
    task, the evaluated split and metric, usage, NTT's licence notice), written wherever Trainer writes its own."""

    task_info: dict[str, Any] | None = None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.is_world_process_zero():
            self.create_model_card()

    def create_model_card(self, *args, **kwargs) -> None:
        save_model_card(self.args.output_dir, self.model.config, self.task_info)


def load_splits(data_args: DataTrainingArguments, sampling_rate: int, seed: int) -> tuple[dict[str, Any], str | None]:
    """
    The training split and the evaluation split, and the evaluation split's name as reported. A dataset without
    `eval_split_name` gets one held out of the training split (`validation_split_percentage`, fixed by `seed`), or
    none when that percentage is 0. Evaluating on the training split itself is allowed and named as such.
    """

    def load(split: str):
        return load_audio_dataset(
            data_args.dataset_name,
            data_args.dataset_config_name,
            data_args.data_dir,
            split,
            data_args.audio_column_name,
            sampling_rate,
        )

    def limit(dataset, count: int | None):
        return dataset.select(range(min(count, len(dataset)))) if count and dataset is not None else dataset

    train = load(data_args.train_split_name)
    try:
        evaluation = load(data_args.eval_split_name)
        name = data_args.eval_split_name
        if name == data_args.train_split_name:
            name += " (the training data itself: not a held-out estimate)"
    except ValueError as error:
        if "split" not in str(error).lower():
            raise
        percentage = data_args.validation_split_percentage
        if not percentage:
            logger.warning(f"No '{data_args.eval_split_name}' split and --validation_split_percentage 0.")
            return {"train": limit(train, data_args.max_train_samples), "eval": None}, None
        if not 0 < percentage < 100:
            raise ValueError(f"--validation_split_percentage must be in 0..99, got {percentage}.") from error
        held_out = train.train_test_split(test_size=percentage / 100, seed=seed)
        train, evaluation = held_out["train"], held_out["test"]
        name = f"{percentage}% of '{data_args.train_split_name}' held out (seed {seed})"
        logger.warning(f"No '{data_args.eval_split_name}' split: evaluating on {name}.")
    return {
        "train": limit(train, data_args.max_train_samples),
        "eval": limit(evaluation, data_args.max_eval_samples),
    }, name


def check_labels_seen(dataset, columns: list[str], vocabularies: list[list[str]], split_name: str | None) -> None:
    """Refuse, before any work, an evaluation split whose labels never occur in training."""
    for column, vocabulary in zip(columns, vocabularies):
        unseen = sorted({str(value) for value in dataset[column]} - set(vocabulary))
        if unseen:
            raise ValueError(
                f"The evaluation split ({split_name}) has labels in '{column}' that never occur in training: "
                f"{', '.join(unseen[:10])}{' ...' if len(unseen) > 10 else ''}. Add training examples of them, or "
                "remove those clips from the evaluation split."
            )


def drop_too_long_targets(dataset, config: BYOLAConfig, name: str):
    """Drop clips whose transcription has more tokens than BYOL-A output frames (CTC needs one frame per token)."""

    def fits(example):
        return len(example["labels"]) <= len(example["input_features"]) // config.time_downsampling

    kept = dataset.filter(fits, desc=f"CTC length check ({name})")
    if len(kept) < len(dataset):
        logger.warning(
            f"{name}: dropped {len(dataset) - len(kept)} of {len(dataset)} clips whose transcription has more tokens "
            f"than BYOL-A output frames ({config.frames_per_second:g} per second)."
        )
    if len(kept) == 0:
        raise ValueError(
            f"Every {name} clip's transcription is longer than its BYOL-A output "
            f"({config.frames_per_second:g} frames/s)."
        )
    return kept


def metrics_function(task: SuperbTask, config: BYOLAConfig, metric, processor):
    """`compute_metrics` for `Trainer`: accuracy (all slots for IC), PER/WER by edit distance, or frame DER."""

    def compute(prediction) -> dict[str, float]:
        logits, labels = prediction.predictions, prediction.label_ids
        if task.head == "BYOLAForCTC":
            predicted = processor.batch_decode(logits.argmax(-1))
            references = processor.batch_decode(np.where(labels < 0, config.ctc_blank_id, labels), group_tokens=False)
            return metric.compute(predictions=predicted, references=references)
        if task.head == "BYOLAForAudioFrameClassification":
            valid = [example[:, 0] != -100 for example in labels]
            predicted = [(example[mask] > 0).astype(np.int8) for example, mask in zip(logits, valid)]
            references = [example[mask].astype(np.int8) for example, mask in zip(labels, valid)]
            return metric.compute(predictions=predicted, references=references)
        if config.classifier_slots:
            parts = np.split(logits, np.cumsum(config.classifier_slots)[:-1], axis=-1)
            predicted = np.stack([part.argmax(-1) for part in parts], axis=-1)
            return metric.compute(predictions=predicted.tolist(), references=labels.tolist())
        return metric.compute(predictions=logits.argmax(-1), references=labels)

    return compute


def build_parser() -> HfArgumentParser:
    """The command line: our flags first, then every `TrainingArguments` flag; `--learning_rate` says the task's
    SUPERB default that is used when it is not given."""
    parser = make_parser(
        COMMAND,
        (ModelArguments, DataTrainingArguments, TrainingArguments),
        usage="byola-run-superb --task TASK --model_name_or_path MODEL --output_dir OUT [options]",
        description=__doc__.split("\n\n")[0] + " Evaluates, saves the model with a card, and plots the layer weights.",
        epilog="Our flags come first; the rest are transformers' TrainingArguments.",
    )
    defaults = ", ".join(f"{name} {task.learning_rate:g}" for name, task in SUPERB_TASKS.items())
    parser._option_string_actions[
        "--learning_rate"
    ].help = f"Learning rate; when not given, the task's SUPERB default is used ({defaults}), not transformers' 5e-05"
    parser._option_string_actions["--no_freeze_base_model"].help = "Fine-tune the BYOL-A encoder with the head"
    parser._option_string_actions["--no_use_weighted_layer_sum"].help = "Feed the head the last hidden state only"
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    require_extras(COMMAND, ("datasets", "evaluate", "accelerate", "matplotlib"), "superb")
    model_args, data_args, training_args = parse_arguments(build_parser(), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    run_command(COMMAND, run, model_args, data_args, training_args, any(a.startswith("--learning_rate") for a in argv))


if __name__ == "__main__":
    main()

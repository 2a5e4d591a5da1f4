"""Fine-tune and evaluate BYOL-A on a SUPERB task with `Trainer` (frozen encoder, learned layer weights, light head).

    byola-run-superb --task ks --model_name_or_path byola-512-ks --dataset_name audiofolder --data_dir mini/ks \\
        --output_dir out/ks --num_train_epochs 20 --eval_strategy epoch --report_to none
    byola-run-superb --superb_corpus voxceleb1 --data_dir VoxCeleb1 --split_file iden_split.txt \\
        --model_name_or_path byola-512-vox --output_dir out/sid

Any `TrainingArguments` flag works; the task picks the head, the metric and the learning rate that SUPERB / the
BYOL-A upstream use unless `--learning_rate` is given. Runs unchanged under `torchrun` / `accelerate launch`.

The steps (`run`): choose the task, load the front end, check the push, claim the output folder (resuming this
run's last checkpoint), load the data (a corpus in its native layout, see [`~byola_hf.superb.corpora`], or a
`datasets` source), let the task's recipe ([`~byola_hf.superb.recipes`]) check and fit the labels, cache the
log-mels, train, evaluate, save.
"""

import logging
import sys
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

import byola_hf

from ..audio import check_clip_lengths, decode_undecoded_audio, display_path
from ..configuration_byola import BYOLAConfig, check_trained_head
from ..extras import require_extra
from ..feature_extraction_byola import BYOLAFeatureExtractor, NonFiniteFeaturesError
from ..hub import PushArguments, push_to_hub, save_model_card, trainer_push_arguments
from ..modeling_byola import BYOLAForCTC
from ..tools.cli import (
    EvaluationLeavesRandomState,
    check_scored_evaluation,
    check_training_length_and_values,
    make_parser,
    parse_arguments,
    require_extras,
    run_command,
    run_training,
)
from ..tools.data import cache_file, draw_rows, file_stamp, load_audio_dataset, load_byola_front_end, source_record
from ..tools.distributed import check_trainer_world_size
from ..tools.outputs import (
    atomic_path,
    claim_output_dir,
    holds_claimed_folders,
    last_complete_checkpoint,
    recorded_arguments,
)
from .corpora import CORPORA, Corpus, check_corpus_flags, load_corpus
from .metrics import metric_path
from .recipes import RECIPES, CTCRecipe, TaskRecipe, recipe_for
from .tasks import SUPERB_TASKS, SuperbTask


logger = logging.getLogger(__name__)
COMMAND = "byola-run-superb"
__all__ = ["main", "run"]
# What the command writes in --output_dir (removed by --overwrite_output_dir, and nothing else): Trainer's
# checkpoints, logs, model, processor and results, our plots and card, and byola_hf's modules copied for
# trust_remote_code. Names, not broad patterns such as *.json: a user's own file there is never removed.
OUTPUT_PATTERNS = (
    "checkpoint-*", "runs", "README.md", "*_results.json", "trainer_state.json", "training_args.bin", "config.json",
    "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
    "processor_config.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "layer_weights.png", "confusion_matrix.png",
    *sorted(path.name for path in Path(byola_hf.__file__).parent.glob("*.py") if path.name != "__init__.py"),
)  # fmt: skip


@dataclass
class TaskData:
    """The splits a run works on (`train`, `eval` or `None`), the evaluation split's name as reported, and the corpus
    they were read from (`None` for a `datasets` source)."""

    splits: dict[str, Any]
    eval_split: str | None
    corpus: Corpus | None
    test_split: str | None = None

    def checked_splits(self) -> list[tuple[str, str]]:
        """`(key, name in messages)` of the splits present."""
        names = {"train": "train", "eval": f"evaluation ({self.eval_split})", "test": f"test ({self.test_split})"}
        return [(key, names[key]) for key in ("train", "eval", "test") if self.splits.get(key) is not None]


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
    task: str | None = field(
        default=None,
        metadata={"help": "SUPERB task (default: the --superb_corpus's task)", "choices": list(SUPERB_TASKS)},
    )
    superb_corpus: str | None = field(
        default=None,
        metadata={
            "help": "Read a SUPERB corpus in its native layout under --data_dir (see docs/from_s3prl.md)",
            "choices": list(CORPORA),
        },
    )
    dataset_name: str = field(
        default="audiofolder", metadata={"help": "Hub dataset, audiofolder, or a save_to_disk path"}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    data_dir: str | None = field(
        default=None, metadata={"help": "Local folder for --dataset_name audiofolder, or the --superb_corpus root"}
    )
    split_file: str | None = field(
        default=None, metadata={"help": "voxceleb1: the split file (iden_split.txt / s3prl's veri_test_class.txt)"}
    )
    lexicon: list[str] = field(
        default_factory=list,
        metadata={"help": "libriphone: a lexicon file (WORD PH1 PH2 ...); repeat for several", "action": "extend"},
    )
    vocab_file: str | None = field(
        default=None, metadata={"help": "libriphone: the phoneme list (default: s3prl's 71 ARPAbet phonemes)"}
    )
    fold: int = field(default=1, metadata={"help": "iemocap: the session left out for testing (1-5)"})
    test_dir: str | None = field(
        default=None, metadata={"help": "speech_commands: the separate v0.01 test set folder"}
    )
    save_corpus_to: str | None = field(
        default=None,
        metadata={
            "help": "Only save the --superb_corpus splits to this new folder (save_to_disk, e.g. for "
            "byola-compute-stats --dataset_name FOLDER) and exit; the model needs no statistics for it"
        },
    )
    train_split_name: str = field(default="train", metadata={"help": "Split to train on"})
    test_split_name: str | None = field(
        default=None,
        metadata={
            "help": "Also evaluate the final model on this split (test_results.json): SUPERB picks checkpoints on "
            "the dev split (--eval_split_name) and reports the test split"
        },
    )
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
    label_column_name: str | None = field(
        default=None, metadata={"help": "Label column (default: the task's; for ic the slot columns, comma-separated)"}
    )
    text_column_name: str | None = field(
        default=None, metadata={"help": "Transcription column (pr: phonemes, asr: text)"}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training clips (drawn at random with --seed)"}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many evaluation clips (drawn at random with --seed)"}
    )
    max_length_seconds: float | None = field(default=None, metadata={"help": "Truncate longer clips"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for datasets.map"})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an --output_dir this command wrote for other arguments (only what it wrote is "
            "removed)"
        },
    )
    public: bool = field(
        default=False, metadata={"help": "With --push_to_hub: create the repository public (private otherwise)"}
    )


class LogMelCollator:
    """Pads stored log-mels (time-first `(frames, n_mels)` rows, see [`cache_log_mels`]) with the feature extractor's
    padding value and frame mask, and the labels as the task's recipe collates them."""

    def __init__(self, feature_extractor: BYOLAFeatureExtractor, recipe: TaskRecipe, downsampling: int):
        self.feature_extractor = feature_extractor
        self.recipe = recipe
        self.downsampling = downsampling

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.feature_extractor.pad(
            [{"input_features": e["input_features"].T} for e in examples], return_tensors="pt"
        )
        frames = [len(example["input_features"]) // self.downsampling for example in examples]
        batch["labels"] = self.recipe.collate_labels([e["labels"] for e in examples], frames)
        return dict(batch)


def log_mel_device(training_device: torch.device, num_proc: int | None) -> torch.device | None:
    """Where run_superb computes the log-mels it caches: the training accelerator when there is one and `datasets.map`
    runs in this process (forked map workers cannot use a GPU this process has initialised), else the CPU (`None`). The
    cached features are read back every epoch; computing them on the GPU takes the front end off the CPU."""
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
    """The mapped split as training reads it: `input_features` rows `(frames, n_mels)` stored as `Array2D`, read back
    as numpy arrays without a conversion per mel row (3.4x faster per epoch than nested lists on 1 s clips,
    `benchmarks/benchmark_superb_features.py`); the labels stay Python values."""
    datasets = require_extra("datasets", "superb")
    features = dataset.cast_column("input_features", datasets.Array2D(shape=(None, n_mels), dtype="float32"))
    return features.with_format("numpy", columns=["input_features"], output_all_columns=True)


def load_front_end_with_statistics(model_name_or_path: str) -> tuple[BYOLAConfig, BYOLAFeatureExtractor]:
    """The model's config and feature extractor; a clear error when the config has no task statistics."""
    config, feature_extractor = load_byola_front_end(model_name_or_path)
    if not config.has_statistics:
        raise ValueError(
            f"The model at '{model_name_or_path}' has no normalisation statistics for this task. Compute them on the "
            f"training split first: byola-compute-stats --model_name_or_path {model_name_or_path} --dataset_name ... "
            "--output_dir MODEL_WITH_STATS, then pass that directory."
        )
    return config, feature_extractor


def weights_files(model_dir: Path) -> list[str]:
    """Each weights file of a local model folder with its size and modification time (none for a Hub model): weights
    converted again into the same folder, with the same config, are another model."""
    files = sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")]) if model_dir.is_dir() else []
    return [file_stamp(str(path), path.name) for path in files]


def run_record(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args, task, config, splits: dict
) -> dict:
    """What makes this run's checkpoints: the model (its path, config with statistics, and weights files), the data
    (each of `splits`' clips and labels: files added, written again or relabelled under the same `--data_dir` are
    other data), every argument but those that may change on a resumption ([`~tools.outputs.MAY_CHANGE_ON_RESUME`]:
    epochs, steps, logging, ...) and a class-balanced training draw, so a re-run can train further from the last
    checkpoint and any other change is refused."""
    arguments = recorded_arguments(model_args, data_args, training_args)
    for name in ("data_dir", "split_file", "vocab_file", "test_dir", "dataset_name"):
        if arguments[name] and Path(arguments[name]).exists():
            arguments[name] = str(Path(arguments[name]).resolve())
    arguments["lexicon"] = [str(Path(path).resolve()) for path in arguments["lexicon"]]
    model = Path(model_args.model_name_or_path)
    record = {
        "task": task.name,
        "model": str(model.resolve()) if model.exists() else model_args.model_name_or_path,
        "weights": weights_files(model),
        "config": config.to_dict(),
        "arguments": arguments,
        "source": {  # each split's clips and labels ([`~byola_hf.tools.data.source_record`]); None: no such split
            name: None if dataset is None else source_record(dataset, data_args.audio_column_name)
            for name, dataset in splits.items()
        },
    }
    if task.class_balanced:  # records made when KS trained on the clips as they are lack it: not resumed with it
        record["training_draw"] = "class-balanced"
    return record


def claim_output(
    training_args: TrainingArguments, data_args: DataTrainingArguments, run_id: dict, train: bool
) -> str | None:
    """Make `--output_dir` this command's (a folder it did not write is refused, see [`claim_output_dir`]) and return
    the checkpoint to resume from, as transformers' example scripts do: `--resume_from_checkpoint` when given, else the
    last `checkpoint-*` of a re-run with the same fingerprint. A different run refuses, or with
    `--overwrite_output_dir` removes what this command wrote there and starts over."""
    given = training_args.resume_from_checkpoint
    if given is not None and not Path(given).is_dir():
        raise ValueError(f"--resume_from_checkpoint {given}: no such checkpoint folder.")
    with training_args.main_process_first(desc="output folder"):
        claim_output_dir(
            training_args.output_dir, COMMAND, run_id, OUTPUT_PATTERNS, overwrite=data_args.overwrite_output_dir
        )
    if given is not None:
        return given
    last = last_complete_checkpoint(training_args.output_dir) if train else None
    if last is not None:
        logger.info(f"Resuming from {last} (the last checkpoint of this same run in --output_dir).")
    return last


def load_task_data(data_args: DataTrainingArguments, config: BYOLAConfig, seed: int) -> TaskData:
    """The splits to train and evaluate on (and to test, with `--test_split_name`), from a SUPERB corpus in its
    native layout or a `datasets` source, each cut to `--max_*_samples` clips drawn with `seed`."""
    test = data_args.test_split_name
    corpus = load_corpus(data_args, config, seed) if data_args.superb_corpus else None
    if corpus is not None:
        for flag, name in (("--eval_split_name", data_args.eval_split_name), ("--test_split_name", test)):
            if name is not None and name not in corpus.splits:
                raise ValueError(
                    f"The {data_args.superb_corpus} corpus has no '{name}' split; it has {sorted(corpus.splits)}: "
                    f"pass one with {flag}."
                )
        eval_split = data_args.eval_split_name
        splits = {"train": corpus.splits["train"], "eval": corpus.splits[eval_split]}
        splits["test"] = corpus.splits[test] if test else None
    else:
        splits, eval_split = load_splits(data_args, config.sampling_rate, seed)
    counts = {
        "train": data_args.max_train_samples,
        "eval": data_args.max_eval_samples,
        "test": data_args.max_eval_samples,
    }
    drawn = {
        key: None if dataset is None else draw_rows(dataset, counts[key], seed) for key, dataset in splits.items()
    }
    return TaskData(drawn, eval_split, corpus, test)


def prepare_features(
    splits: dict, feature_extractor, recipe: TaskRecipe, data_args, training_args, train_max: int | None
):
    """Each split's log-mels and encoded labels, computed once by `datasets.map` and cached under a fingerprint of the
    source split (`datasets`' own), the front end, the label encoding and the cut. The audio is decoded by
    [`~byola_hf.audio.decode_undecoded_audio`], as every command's: a bad file or stored clip is an error naming it."""
    datasets = require_extra("datasets", "superb")
    rate = feature_extractor.sampling_rate
    device = log_mel_device(training_args.device, data_args.preprocessing_num_workers)
    cut = int(data_args.max_length_seconds * feature_extractor.sampling_rate) if data_args.max_length_seconds else None
    prepared = {}
    with training_args.main_process_first(desc="feature extraction"):
        for name, dataset in splits.items():
            dataset = dataset.cast_column(data_args.audio_column_name, datasets.Audio(decode=False))
            max_samples = min(filter(None, (cut, train_max))) if name == "train" and train_max else cut

            def prepare(batch, max_samples=max_samples):
                items = batch[data_args.audio_column_name]
                audio = [decode_undecoded_audio(item, rate) for item in items]
                check_clip_lengths(audio, items, feature_extractor.min_samples)  # named here, not in a training batch
                try:
                    rows = log_mel_rows(feature_extractor, audio, max_samples, device)
                except NonFiniteFeaturesError as error:  # the clip's name, not its place in a map batch
                    name = display_path(items[error.index].get("path") or "a stored clip")
                    raise NonFiniteFeaturesError(error.index, error.peak, name) from None
                return {"input_features": rows, "labels": recipe.encode(batch)}

            fingerprint, cache = cache_file(dataset, feature_extractor.to_dict(), recipe.fingerprint(), max_samples)

            features = dataset.map(
                prepare,
                batched=True,
                batch_size=16,
                remove_columns=dataset.column_names,
                num_proc=data_args.preprocessing_num_workers,
                desc=f"log-mel ({name}, {device or 'cpu'})",
                # Without the device, so that every rank of a multi-GPU run finds what rank 0 cached.
                new_fingerprint=fingerprint,
                cache_file_name=cache,
            )
            prepared[name] = cache_log_mels(features, feature_extractor.feature_size)
    return prepared


def trains(given: Collection[str], task: SuperbTask, config: BYOLAConfig, model_name_or_path: str) -> bool:
    """Train unless only --do_eval was asked for (Trainer sets do_eval itself for any --eval_strategy); --do_eval
    alone needs a model that has the task's trained head."""
    train = "--do_train" in given or "--do_eval" not in given
    if not train:
        fix = f"add --do_train, or pass a model fine-tuned for {task.name}."
        check_trained_head(config, task.head, model_name_or_path, "--do_eval alone evaluates", fix)
    return train


def card_task_info(
    task: SuperbTask, data_args: DataTrainingArguments, data: TaskData, metrics: dict, test_metrics: dict
) -> dict[str, Any]:
    """What the model card states of the task: its name, data, splits and the task metric of each split scored."""
    return {
        "task": task.name,
        "description": task.description,
        "dataset": (  # the SUPERB corpus and its root, or the dataset (and folder)
            f"{data_args.superb_corpus} corpus at {data_args.data_dir} (native layout)"
            if data_args.superb_corpus
            else data_args.dataset_name + (f" ({data_args.data_dir})" if data_args.data_dir else "")
        ),
        "eval_split": data.eval_split,
        "test_split": data.test_split,
        "metrics": {
            f"{prefix}_{task.metric_key}": values[f"{prefix}_{task.metric_key}"]
            for prefix, values in (("eval", metrics), ("test", test_metrics))
            if values
        },
    }


@holds_claimed_folders()
def run(
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    given: Collection[str] = (),
) -> dict[str, float]:
    """Train and evaluate; save the model, feature extractor (and processor), eval metrics and PNGs. `given`: the
    flags the user typed (a default learning rate is ours only when `--learning_rate` was not given)."""
    check_trainer_world_size(training_args)
    check_training_length_and_values(training_args)
    task = choose_task(data_args)
    check_task_flags(task, model_args, training_args)
    config, feature_extractor = load_front_end_with_statistics(model_args.model_name_or_path)
    push = trainer_push_arguments(training_args, data_args.public)  # before any work; Trainer's pushes off
    use_task_learning_rate(task, training_args, given)
    use_task_best_metric(task, training_args, given)
    with training_args.main_process_first(desc="corpus"):
        data = load_task_data(data_args, config, training_args.seed)
    recipe = build_recipe(task, model_args, data_args, data)
    check_splits(recipe, data, data_args.audio_column_name)
    train = trains(given, task, config, model_args.model_name_or_path)
    head_kwargs = fit_recipe(recipe, data, feature_extractor)
    recipe.check_trained_head(config, head_kwargs, model_args.model_name_or_path)
    checkpoint = claim_output(
        training_args, data_args, run_record(model_args, data_args, training_args, task, config, data.splits), train
    )
    if data.splits.get("eval") is None:
        training_args.do_eval = False
    splits = {name: dataset for name, dataset in data.splits.items() if dataset is not None}
    train_max = data.corpus.spec.train_max_samples if data.corpus else None
    splits = prepare_features(splits, feature_extractor, recipe, data_args, training_args, train_max)
    # As transformers' example scripts: seeded before the head is drawn (Trainer seeds only once it is built).
    set_seed(training_args.seed)
    model = getattr(byola_hf, task.head).from_pretrained(
        model_args.model_name_or_path,
        freeze_base_model=model_args.freeze_base_model,
        use_weighted_layer_sum=model_args.use_weighted_layer_sum,
        **head_kwargs,
    )
    splits = {name: recipe.after_features(dataset, model.config, name) for name, dataset in splits.items()}
    trainer = build_trainer(model, training_args, splits, recipe, feature_extractor, task)
    if train:
        train_result = run_training(trainer, checkpoint)
        if train_result is not None:  # None: the run was finished, its train metrics are in --output_dir already
            trainer.save_metrics("train", train_result.metrics)
    metrics, prediction = evaluate_split(trainer, splits.get("eval"), data.eval_split)
    test_metrics, _ = evaluate_split(trainer, splits.get("test"), data.test_split, "test")
    trainer.task_info = card_task_info(task, data_args, data, metrics, test_metrics)
    if trainer.is_world_process_zero():
        save_pictures(Path(training_args.output_dir), model, recipe, prediction, task)
    trainer.save_model()  # the model, its processing class and our card
    if push.push_to_hub and trainer.is_world_process_zero():
        push_output(training_args, push, task)
    return metrics


def push_output(training_args: TrainingArguments, push: PushArguments, task: SuperbTask) -> None:
    """Upload `--output_dir` once (no checkpoints, through [`~byola_hf.hub.push_to_hub`] as every command's push:
    privately unless `--public`, with the licence warning for NTT's weights)."""
    url = push_to_hub(
        training_args.output_dir,
        push.hub_model_id,
        private=not push.public,
        token=training_args.hub_token,
        commit_message=f"BYOL-A fine-tuned for SUPERB {task.name.upper()} with byola_hf",
    )
    logger.info(f"Pushed to {url}")


def export_corpus(model_args: ModelArguments, data_args: DataTrainingArguments, seed: int) -> None:
    """`--save_corpus_to`: the corpus's splits as a `save_to_disk` folder (a new one), for the statistics."""
    check_corpus_flags(data_args)
    if not data_args.superb_corpus:
        raise ValueError("--save_corpus_to saves a --superb_corpus: name the corpus and its --data_dir.")
    target = Path(data_args.save_corpus_to)
    if target.exists():
        raise ValueError(f"--save_corpus_to {target} already exists: choose a new folder.")
    datasets = require_extra("datasets", "superb")
    config, _ = load_byola_front_end(model_args.model_name_or_path)
    corpus = load_corpus(data_args, config, seed)
    with atomic_path(target) as staged:
        datasets.DatasetDict(corpus.splits).save_to_disk(str(staged))
    sizes = ", ".join(f"{name} {len(split)}" for name, split in corpus.splits.items())
    print(f"Saved the {corpus.name} splits ({sizes}) to {target}")


def check_task_flags(task: SuperbTask, model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """Refuse the flags this task cannot honour, before any work."""
    if model_args.ctc_head is not None and RECIPES[task.head] is not CTCRecipe:
        raise ValueError(f"--ctc_head is for the CTC tasks (pr, asr), not {task.name}: drop it.")
    strategy = getattr(training_args, "train_sampling_strategy", "random")  # a field since transformers 5.x
    if task.class_balanced and strategy != "random":
        raise ValueError(
            f"--train_sampling_strategy {strategy}: {task.name} draws its training clips class-balanced, as s3prl "
            "does: drop it."
        )
    best = training_args.metric_for_best_model  # Trainer looks it up as eval_NAME at each checkpoint
    if best is not None and best.removeprefix("eval_") not in (task.metric_key, "loss"):
        raise ValueError(
            f"--metric_for_best_model {best}: {task.name}'s evaluations report {task.metric_key} and loss: give one "
            f"of them (leave it out for {task.metric_key}, as s3prl chooses)."
        )
    # Without the metric there is no eval_METRIC to report or choose the best checkpoint by.
    check_scored_evaluation(
        training_args, "byola-run-superb", f"every evaluation on the task's metric ({task.metric_key})"
    )


def use_task_learning_rate(task: SuperbTask, training_args: TrainingArguments, given: Collection[str]) -> None:
    """The task's SUPERB learning rate unless `--learning_rate` was given (transformers' 5e-5 is no SUPERB rate)."""
    if "--learning_rate" not in given:
        training_args.learning_rate = task.learning_rate
    logger.info(
        f"Task {task.name} ({task.description}): {task.head}, learning rate {training_args.learning_rate:g} "
        f"({'given' if '--learning_rate' in given else 'task default'}), world size {training_args.world_size}"
    )


def use_task_best_metric(task: SuperbTask, training_args: TrainingArguments, given: Collection[str]) -> None:
    """With `--load_best_model_at_end`, keep the checkpoint s3prl keeps, the best on the task's metric, unless
    `--metric_for_best_model` was given (Trainer's default, the lowest evaluation loss, picks another one); and
    unless `--greater_is_better` was given, the metric's own direction: Trainer takes every name but a loss as
    higher-is-better, so `--metric_for_best_model per` alone kept the highest PER."""
    if training_args.load_best_model_at_end and "--metric_for_best_model" not in given:
        training_args.metric_for_best_model = task.metric_key
    best = training_args.metric_for_best_model  # the task's metric or loss (check_task_flags)
    if best is not None and "--greater_is_better" not in given:
        training_args.greater_is_better = best.removeprefix("eval_") == task.metric_key and task.greater_is_better


def build_trainer(model, training_args, splits: dict, recipe: TaskRecipe, feature_extractor, task: SuperbTask):
    """The [`SuperbTrainer`] over the prepared splits, with the recipe's collation and metric."""
    evaluate = require_extra("evaluate", "superb")
    metric = evaluate.load(metric_path(task.metric), task.metric_config)
    trainer = SuperbTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("eval"),
        data_collator=LogMelCollator(feature_extractor, recipe, model.config.time_downsampling),
        compute_metrics=recipe.metrics_function(metric, model.config),
        processing_class=recipe.processor or feature_extractor,
    )
    trainer.class_balanced = task.class_balanced
    return trainer


def choose_task(data_args: DataTrainingArguments) -> SuperbTask:
    """`--task`, or the task of `--superb_corpus`; the two must agree (and no other corpus's flags are given)."""
    check_corpus_flags(data_args)
    corpus_task = CORPORA[data_args.superb_corpus].task if data_args.superb_corpus else None
    if data_args.task is None and corpus_task is None:
        raise ValueError("Pass --task (one of " + ", ".join(SUPERB_TASKS) + ") or --superb_corpus.")
    if data_args.task and corpus_task and data_args.task != corpus_task:
        raise ValueError(
            f"--superb_corpus {data_args.superb_corpus} is for the {corpus_task} task, not --task {data_args.task}."
        )
    return SUPERB_TASKS[data_args.task or corpus_task]


def build_recipe(task: SuperbTask, model_args: ModelArguments, data_args: DataTrainingArguments, data: TaskData):
    """The task's recipe on the columns the user named, the corpus's columns, or the task's defaults."""
    corpus = data.corpus
    named = data_args.text_column_name if RECIPES[task.head].column_flag == "--text_column_name" else None
    named = named or data_args.label_column_name
    columns = corpus.spec.columns if corpus else (named.split(",") if named else None)
    return recipe_for(
        task,
        columns,
        label_names=corpus.label_names if corpus else None,
        vocabulary=corpus.vocabulary if corpus else None,
        ctc_head=model_args.ctc_head,
    )


def check_splits(recipe: TaskRecipe, data: TaskData, audio_column: str) -> None:
    """Every split's audio files exist (audio held as bytes is not checked), it has the label columns and no empty
    label: checked before anything is written or computed."""
    datasets = require_extra("datasets", "superb")
    for key, name in data.checked_splits():
        items = data.splits[key].cast_column(audio_column, datasets.Audio(decode=False))[audio_column]
        for row, item in enumerate(items):
            if item and item.get("bytes") is None and item.get("path") and not Path(item["path"]).is_file():
                raise ValueError(
                    f"The {name} split names the audio file {item['path']} (row {row}), which does not exist: "
                    "fix the metadata or restore the file."
                )
        recipe.check_split(data.splits[key], name)


def fit_recipe(recipe: TaskRecipe, data: TaskData, feature_extractor) -> dict[str, Any]:
    """Fit the label encoding on the training split and check the evaluation labels, before `--output_dir` is
    claimed or any feature computed; return the head's arguments."""
    head_kwargs = recipe.fit(data.splits["train"], feature_extractor)
    for key, name in data.checked_splits()[1:]:
        recipe.check_labels_seen(data.splits[key], name)
    return head_kwargs


def evaluate_split(trainer: Trainer, dataset, split: str | None, prefix: str = "eval") -> tuple[dict[str, Any], Any]:
    """Predict a split and save its metrics (`PREFIX_results.json`); nothing without one."""
    if dataset is None:
        if prefix == "eval":
            logger.warning("No evaluation split: the model is trained and saved without evaluation.")
        return {}, None
    prediction = trainer.predict(dataset, metric_key_prefix=prefix)
    metrics = {**prediction.metrics, f"{prefix}_samples": len(dataset), f"{prefix}_split": split}
    trainer.log_metrics(prefix, metrics)
    trainer.save_metrics(prefix, metrics)
    return metrics, prediction


def save_pictures(output: Path, model, recipe: TaskRecipe, prediction, task: SuperbTask) -> None:
    """The learned layer weights and the recipe's own pictures (a confusion matrix for classes)."""
    from ..tools.plots import save_layer_weights

    output.mkdir(parents=True, exist_ok=True)
    if model.config.use_weighted_layer_sum:
        save_layer_weights(
            model.featurizer.layer_weights.detach().cpu(),
            output / "layer_weights.png",
            title=f"BYOL-A layer weights learned for {task.name.upper()}",
        )
    recipe.save_pictures(output, model.config, prediction)


class ClassBalancedSampler(torch.utils.data.Sampler[int]):
    """
    s3prl's class-balanced training draw (its KS `WeightedRandomSampler`): an epoch is `len(labels)` clips drawn with
    replacement, each with probability proportional to one over its class's count, so that every class is drawn
    about equally often. Epoch `e` draws from a generator seeded by `(seed, e)` (Trainer calls `set_epoch`), so a
    resumed run, and every rank of a distributed one, draws what the uninterrupted run drew; runs of other seeds
    never share an epoch's draw (as `seed + e` would: seed 1's first epoch, seed 0's second).

    Args:
        labels (`Sequence[int]`): each training clip's class id.
        seed (`int`): `--data_seed`, else `--seed`.
    """

    def __init__(self, labels: Sequence[int], seed: int):
        counts = Counter(labels)
        self.weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.float64)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        )
        yield from torch.multinomial(self.weights, len(self.weights), True, generator=generator).tolist()


class SuperbTrainer(EvaluationLeavesRandomState, Trainer):
    """`Trainer` whose model card is byola_hf's ([`~byola_hf.hub.model_card`]: statistics and their provenance, the
    task, the evaluated split and metric, usage, NTT's licence notice), written wherever Trainer writes its own, and
    whose training clips are drawn class-balanced where the task says so ([`ClassBalancedSampler`])."""

    task_info: dict[str, Any] | None = None
    class_balanced: bool = False

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        if not self.class_balanced:
            return super()._get_train_sampler(train_dataset)
        labels = (train_dataset if train_dataset is not None else self.train_dataset)["labels"]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ClassBalancedSampler(labels, seed)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.is_world_process_zero():
            self.create_model_card()

    def create_model_card(self, *args, **kwargs) -> None:
        save_model_card(self.args.output_dir, self.model.config, self.task_info)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Trainer's, with a CTC head's logits on the padded frames of each clip made the blank's: the metric decodes
        `argmax` over the padded batch, and a padded frame (the head's output of padding) could decode to a token of
        the shorter clips. s3prl decodes each clip's own frames only."""
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if logits is None or not isinstance(self.model, BYOLAForCTC) or "attention_mask" not in inputs:
            return loss, logits, labels
        frames = inputs["attention_mask"].sum(-1) // self.model.config.time_downsampling
        if isinstance(logits, tuple):
            return loss, (blank_padded_frames(logits[0], frames, self.model.config.ctc_blank_id), *logits[1:]), labels
        return loss, blank_padded_frames(logits, frames, self.model.config.ctc_blank_id), labels


def blank_padded_frames(logits: torch.Tensor, frames: torch.Tensor, blank_id: int) -> torch.Tensor:
    """`logits (batch, frames, vocab)` with every frame at or past a clip's `frames` set to the blank: 0 for the
    blank, the dtype's lowest value for every other token."""
    padded = torch.arange(logits.shape[1], device=logits.device) >= frames.to(logits.device)[:, None]
    blank = torch.full_like(logits[0, 0], torch.finfo(logits.dtype).min)
    blank[blank_id] = 0
    return torch.where(padded[..., None], blank, logits)


def load_splits(data_args: DataTrainingArguments, sampling_rate: int, seed: int) -> tuple[dict[str, Any], str | None]:
    """The training, evaluation and (with `test_split_name`) test splits of a `datasets` source, and the evaluation
    split's name as reported. A dataset without `eval_split_name` gets one held out of the training split
    (`validation_split_percentage`, fixed by `seed`), or none when that percentage is 0. Evaluating on the training
    split itself is allowed and named as such."""

    def load(split: str):
        return load_audio_dataset(
            data_args.dataset_name,
            data_args.dataset_config_name,
            data_args.data_dir,
            split,
            data_args.audio_column_name,
            sampling_rate,
        )

    splits = {"train": load(data_args.train_split_name)}
    try:
        splits["eval"] = load(data_args.eval_split_name)
        name = data_args.eval_split_name
        if name == data_args.train_split_name:
            name += " (the training data itself: not a held-out estimate)"
    except ValueError as error:
        if "split" not in str(error).lower():
            raise
        percentage = data_args.validation_split_percentage
        if not 0 <= percentage < 100:
            raise ValueError(f"--validation_split_percentage must be in 0..99, got {percentage}.") from error
        splits["eval"] = name = None
        if percentage:
            (kept, kept_file), (held, held_file) = (
                cache_file(splits["train"], part, percentage, seed) for part in ("kept", "held out")
            )
            held_out = splits["train"].train_test_split(
                test_size=percentage / 100,
                seed=seed,
                train_new_fingerprint=kept,
                train_indices_cache_file_name=kept_file,
                test_new_fingerprint=held,
                test_indices_cache_file_name=held_file,
            )
            splits.update(train=held_out["train"], eval=held_out["test"])
            name = f"{percentage}% of '{data_args.train_split_name}' held out (seed {seed})"
            logger.warning(f"No '{data_args.eval_split_name}' split: evaluating on {name}.")
        else:
            logger.warning(f"No '{data_args.eval_split_name}' split and --validation_split_percentage 0.")
    test = data_args.test_split_name
    splits["test"] = load(test) if test else None
    return splits, name


def build_parser() -> HfArgumentParser:
    """The command line: our flags first, then every `TrainingArguments` flag; `--learning_rate` says the task's
    SUPERB default that is used when it is not given."""
    parser = make_parser(
        COMMAND,
        (ModelArguments, DataTrainingArguments, TrainingArguments),
        usage="byola-run-superb --task TASK --model_name_or_path MODEL --output_dir OUT [options]\n"
        "       byola-run-superb --superb_corpus NAME --data_dir ROOT --model_name_or_path MODEL --output_dir OUT ...",
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
    given = {argument.split("=")[0].replace("-", "_").lstrip("_") for argument in argv if argument.startswith("--")}
    if data_args.save_corpus_to:
        run_command(COMMAND, export_corpus, model_args, data_args, training_args.seed)
    else:
        run_command(COMMAND, run, model_args, data_args, training_args, {f"--{name}" for name in given})


if __name__ == "__main__":
    main()

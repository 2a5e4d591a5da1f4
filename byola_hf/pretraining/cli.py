"""`byola-pretrain`: pre-train BYOL-A (v1 or v2) on any audio with Trainer, or further pre-train a BYOL-A model.

byola-pretrain --dataset_name FOLDER|audiofolder|HUB_ID|SAVED_DIR --output_dir OUT
    [--variant AudioNTT2020|AudioNTT2022 --feature_d D | --init_from MODEL_DIR] [--mean M --std S] [TrainingArguments]

A re-run of the same command resumes from the last checkpoint in OUT. OUT ends as a BYOL-A model directory (the
online encoder, the statistics of the data, a card) that AutoModel and every byola_hf command load.
"""

import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments

from ..audio import decode_undecoded_audio
from ..configuration_byola import VARIANT_PRETRAINING, VARIANTS, BYOLAConfig, BYOLAPreTrainingConfig, check_statistics
from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..hub import push_to_hub, trainer_push_arguments
from ..modeling_byola import BYOLAModel
from ..tools.cli import (
    check_training_length_and_values,
    make_parser,
    parse_arguments,
    require_extras,
    run_command,
    run_training,
    user_errors,
)
from ..tools.data import draw_rows, is_audio_file_source, load_byola_front_end, load_source, source_fingerprint
from ..tools.distributed import check_trainer_world_size, is_main_process
from ..tools.outputs import (
    MAY_CHANGE_ON_RESUME,
    atomic_path,
    claim_output_dir,
    last_complete_checkpoint,
    recorded_arguments,
    save_into,
    write_json_atomic,
)
from .data import (
    ClipCropper,
    CropDataset,
    StreamingCropDataset,
    collate_waveforms,
    load_stream,
    longest_until,
    scan_clips,
    scan_stream,
)
from .linear_probe import LinearProbeData, load_linear_probe_data
from .model_card import pretraining_card
from .modeling_pretraining import BYOLAForPreTraining
from .trainer import RANK_STATE_FILE, BYOLAPreTrainer, RankStateCallback


COMMAND = "byola-pretrain"


logger = logging.getLogger(__name__)
# The statistics of the run's data, computed once when it starts and read by its ranks and resumptions.
STATISTICS_FILE = "pretraining_statistics.json"
# What the command writes in --output_dir: Trainer's checkpoints and logs, the encoder's model directory (with the
# code saved for trust_remote_code), its card, the results and the statistics.
OUTPUTS = (
    "checkpoint-*", "runs", "README.md", "*_results.json", "trainer_state.json", "config.json", "model.safetensors",
    "preprocessor_config.json", STATISTICS_FILE, "*.py",
)  # fmt: skip
VARIANT_ALIASES = {"v1": "AudioNTT2020", "v2": "AudioNTT2022"}
# The original configs' training values (config.yaml, config_v2.yaml) used when the flag is not given.
ORIGINAL_DEFAULTS = {"per_device_train_batch_size": 256, "num_train_epochs": 100, "seed": 42}
# DataLoader workers decoding the clips when --dataloader_num_workers is not given: decoding in the training process
# (Trainer's 0) left the network waiting; issue 33's trial measured 6-12 clips/s with 0 against 41-47 with 2 on 2
# cores. More workers were not measured.
MAX_DECODING_WORKERS = 2


def decoding_workers() -> int:
    """The default `--dataloader_num_workers`: `MAX_DECODING_WORKERS`, at most the CPU cores this process may use,
    and 0 on a single core (a worker would only take turns with the training step there)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_DECODING_WORKERS, cores) if cores > 1 else 0


@dataclass
class PreTrainingModelArguments:
    variant: str | None = field(
        default=None, metadata={"help": "New network: AudioNTT2020 (v1, the default) or AudioNTT2022 (v2)"}
    )
    feature_d: int | None = field(default=None, metadata={"help": "New network's width (default: 2048 v1, 3072 v2)"})
    init_from: str | None = field(default=None, metadata={"help": "Further pre-train this BYOL-A model directory"})
    mean: float | None = field(default=None, metadata={"help": "Given log-mel mean of the data (with --std)"})
    std: float | None = field(default=None, metadata={"help": "Given log-mel std of the data (default: computed)"})
    projection_size: int = field(default=256, metadata={"help": "BYOL projector/predictor output"})
    projection_hidden_size: int = field(default=4096, metadata={"help": "BYOL projector/predictor hidden size"})
    ema_decay: float = field(default=0.99, metadata={"help": "Target EMA decay"})
    mixup_memory_size: int = field(default=2048, metadata={"help": "Mixup memory bank (FIFO) length"})
    public: bool = field(
        default=False, metadata={"help": "With --push_to_hub: create the repository public (private otherwise)"}
    )


@dataclass
class PreTrainingDataArguments:
    dataset_name: str = field(
        metadata={"help": "Folder or glob of audio files, audiofolder, Hub id, save_to_disk dir"}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    data_dir: str | None = field(default=None, metadata={"help": "Local folder for --dataset_name audiofolder"})
    split: str = field(default="train", metadata={"help": "Split to train on"})
    audio_column_name: str = field(default="audio", metadata={"help": "Audio column"})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most N clips, drawn at random with --seed (a stream: its first N)"}
    )
    streaming: bool = field(
        default=False, metadata={"help": "Read the clips as they stream, not downloaded first (needs --max_steps)"}
    )
    preprocessing_batch_size: int = field(default=16, metadata={"help": "Clips per batch of the statistics pass"})
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Labelled task for a linear evaluation every --eval_steps (default 500)"}
    )
    eval_label_column_name: str | None = field(default=None, metadata={"help": "Its label column"})
    eval_audio_column_name: str = field(default="audio", metadata={"help": "Its audio column"})
    eval_dataset_config_name: str | None = field(default=None, metadata={"help": "Its Hub configuration"})
    eval_data_dir: str | None = field(default=None, metadata={"help": "Its folder for audiofolder"})
    eval_train_split: str = field(default="train", metadata={"help": "Its split to train the linear layer on"})
    eval_test_split: str = field(default="test", metadata={"help": "Its split to report the accuracy on"})


def pretraining_config(model_args: PreTrainingModelArguments) -> tuple[BYOLAPreTrainingConfig, BYOLAModel | None]:
    """The learner's config (new network, or the `--init_from` model's) and the encoder to start from, if any."""
    pretraining = {
        "projection_size": model_args.projection_size,
        "projection_hidden_size": model_args.projection_hidden_size,
        "ema_decay": model_args.ema_decay,
        "mixup_memory_size": model_args.mixup_memory_size,
    }
    if model_args.init_from is not None:
        for flag in ("variant", "feature_d"):
            if getattr(model_args, flag) is not None:
                raise ValueError(
                    f"--{flag} makes a new network; --init_from continues an existing one as it is: drop one."
                )
        encoder_config, _ = load_byola_front_end(model_args.init_from)
        encoder = BYOLAModel.from_pretrained(model_args.init_from, config=encoder_config)
        return BYOLAPreTrainingConfig.from_encoder_config(encoder_config, **pretraining), encoder
    variant = new_network_variant(model_args)
    if variant not in VARIANTS:
        raise ValueError(f"--variant must be AudioNTT2020 (v1) or AudioNTT2022 (v2), got {model_args.variant!r}.")
    sizes = {} if model_args.feature_d is None else {"feature_d": model_args.feature_d}
    try:
        encoder_config = BYOLAConfig.from_variant(variant, **sizes)
    except ValueError as error:
        default = BYOLAConfig.from_variant(variant).feature_d
        message = f"--feature_d {model_args.feature_d} does not fit {variant} (default {default}): {error}"
        raise ValueError(message) from None
    return BYOLAPreTrainingConfig.from_encoder_config(encoder_config, **pretraining), None


def new_network_variant(model_args: PreTrainingModelArguments) -> str:
    """The variant of a new network: `--variant` (v1 and v2 stand for their names), AudioNTT2020 when not given."""
    variant = model_args.variant or "AudioNTT2020"
    return VARIANT_ALIASES.get(variant, variant)


def run_fingerprint(model_args, data_args, training_args: TrainingArguments, dataset) -> dict[str, Any]:
    """What makes a run: a re-run into the same folder must match it to resume. Every argument but those that may
    change on a resumption ([`~tools.outputs.MAY_CHANGE_ON_RESUME`] and the linear probe's `--eval_*`, which
    evaluates without changing the training), and the `source`: the clips count, with a fingerprint of them, since
    a folder with files added or written again is other data, whose statistics and crop order the run does not
    hold. (A stream is not read again to check.)"""
    probe = frozenset(name for name in data_args.__dataclass_fields__ if name.startswith("eval_"))
    data = recorded_arguments(data_args, may_change=MAY_CHANGE_ON_RESUME | probe)
    source = {}
    if not data_args.streaming:
        # datasets fingerprints a folder or glob of files by their names only: a file written again under its name
        # would pass, so such a source is fingerprinted by each file's size and modification time.
        files = is_audio_file_source(data_args.dataset_name)
        source = {
            "clips": len(dataset),
            "fingerprint": source_fingerprint(dataset, data_args.audio_column_name) if files else dataset._fingerprint,
        }
    else:  # each DataLoader worker reads its own shards of a stream and draws its own crops
        data |= {"dataloader_num_workers": training_args.dataloader_num_workers}
    model = recorded_arguments(model_args)
    if model_args.init_from is None:  # the variant trained, whether given or not
        model["variant"] = new_network_variant(model_args)
    training = {**recorded_arguments(training_args), "world_size": training_args.world_size}
    return {"model": model, "data": data, "training": training, "source": source}


def statistics(model_args, data_args, dataset, feature_extractor, crop_samples: int) -> dict[str, Any]:
    """Exact statistics of the clips (or the given ones), after checking that some clip fills a crop."""
    given = model_args.mean is not None or model_args.std is not None
    if given and (model_args.mean is None or model_args.std is None):
        raise ValueError("Pass both --mean and --std, or neither (then they are computed on the data).")
    if given:
        check_statistics(model_args.mean, model_args.std)
    column, batch_size = data_args.audio_column_name, data_args.preprocessing_batch_size
    if given and data_args.streaming:  # nothing to compute: the stream is read only up to a clip that fills a crop
        longest = longest_until(dataset, column, feature_extractor.sampling_rate, crop_samples)
        check_crop_filled(longest, crop_samples, feature_extractor.sampling_rate)
        source = provenance(data_args, None, "given")
        return {"mean": model_args.mean, "std": model_args.std, "provenance": source, "audio_seconds": None}
    scan = scan_stream if data_args.streaming else scan_clips
    summary = scan(dataset, feature_extractor, column, not given, batch_size)
    check_crop_filled(summary.longest_samples, crop_samples, feature_extractor.sampling_rate)
    mean, std = (model_args.mean, model_args.std) if given else (summary.moments.mean, summary.moments.std)
    return {
        "mean": mean,
        "std": std,
        "provenance": provenance(data_args, summary, "given" if given else "exact"),
        "audio_seconds": summary.audio_seconds,
    }


def check_crop_filled(longest: int, crop_samples: int, sampling_rate: int) -> None:
    """Refuse clips of which the `longest` (samples) is shorter than one training crop: every crop would be padding
    around a whole clip."""
    if longest < crop_samples:
        raise ValueError(
            f"Every clip is shorter than one training crop ({crop_samples} samples = {crop_samples / sampling_rate:g} "
            f"s; the longest has {longest}); BYOL-A learns from crops of that length: use longer audio."
        )


def provenance(data_args: PreTrainingDataArguments, summary, method: str) -> dict[str, Any]:
    """Where the statistics come from, as `config.stats_provenance` records it (counts when the data was read)."""
    return {
        "dataset": data_args.dataset_name,
        "config": data_args.dataset_config_name,
        "data_dir": data_args.data_dir,
        "split": data_args.split,
        "audio_column": data_args.audio_column_name,
        "num_examples": summary.num_examples if summary else None,
        "num_frames": summary.moments.num_frames if summary else None,
        "method": method,
    }


def training_clips(data_args: PreTrainingDataArguments, sampling_rate: int, training_args: TrainingArguments):
    """The training clips (undecoded audio column): a dataset of at least one batch, or a stream (`--streaming`)."""
    source = (data_args.dataset_name, data_args.dataset_config_name, data_args.data_dir, data_args.split)
    if data_args.streaming:
        if training_args.max_steps <= 0:
            raise ValueError("--streaming reads clips without knowing their number: give the run's --max_steps.")
        stream = load_stream(*source, data_args.audio_column_name, sampling_rate)
        return stream if data_args.max_train_samples is None else stream.take(data_args.max_train_samples)
    dataset = load_source(*source, data_args.audio_column_name, sampling_rate)
    dataset = draw_rows(dataset, data_args.max_train_samples, training_args.seed)
    if len(dataset) < training_args.per_device_train_batch_size * training_args.world_size:
        # Too few to train, and few enough to read now: a clip that cannot be used is the first thing to fix.
        for row in dataset:
            decode_undecoded_audio(row[data_args.audio_column_name], sampling_rate)
    check_one_batch(len(dataset), training_args)
    return dataset


def check_arguments(data_args: PreTrainingDataArguments, training_args: TrainingArguments) -> None:
    """Refuse what Trainer or the data flags would take and silently not do as asked."""
    if training_args.resume_from_checkpoint is not None:
        raise ValueError(
            "byola-pretrain resumes by itself: re-run the same command with the run's --output_dir (drop "
            "--resume_from_checkpoint); to start from another run's encoder, pass it as --init_from."
        )
    check_training_length_and_values(training_args)
    if data_args.max_train_samples is not None and data_args.max_train_samples < 1:
        raise ValueError(f"--max_train_samples must be a positive number of clips, got {data_args.max_train_samples}.")
    if data_args.eval_dataset_name is None:
        given = [
            f"--{field.name}"
            for field in fields(data_args)
            if field.name.startswith("eval_") and getattr(data_args, field.name) != field.default
        ]
        if given:
            raise ValueError(f"{', '.join(given)} describe a linear evaluation task: add its --eval_dataset_name.")


def check_batch_size(training_args: TrainingArguments) -> None:
    """BYOL-A's BatchNorm layers normalise over the batch: one clip a device cannot train."""
    if training_args.per_device_train_batch_size < 2:
        raise ValueError(
            "BYOL-A's BatchNorm layers need at least 2 clips per device and step: raise --per_device_train_batch_size."
        )


def check_one_batch(clips: int, training_args: TrainingArguments) -> None:
    """Refuse fewer clips than one batch over all ranks: no epoch would give a step (a stream's would end in
    accelerate's error on an empty batch)."""
    global_batch = training_args.per_device_train_batch_size * training_args.world_size
    if clips < 2:
        raise ValueError(f"{clips} clip(s): BYOL-A's BatchNorm layers need batches of at least 2 clips; add audio.")
    if clips < global_batch:
        raise ValueError(
            f"{clips} clips are fewer than one batch ({global_batch}); lower --per_device_train_batch_size."
        )


def linear_probe_data(data_args: PreTrainingDataArguments, sampling_rate: int) -> LinearProbeData | None:
    """The `--eval_dataset_name` task, decoded, or `None` without one."""
    if data_args.eval_dataset_name is None:
        return None
    if data_args.eval_label_column_name is None:
        raise ValueError("--eval_dataset_name needs --eval_label_column_name (the column of class labels).")
    try:
        return load_linear_probe_data(
            data_args.eval_dataset_name,
            data_args.eval_label_column_name,
            sampling_rate,
            data_args.eval_dataset_config_name,
            data_args.eval_data_dir,
            data_args.eval_train_split,
            data_args.eval_test_split,
            data_args.eval_audio_column_name,
        )
    except ValueError as error:  # the loaders name the training data's flags; here they are the --eval_ ones
        flags = r"--(dataset_name|dataset_config_name|data_dir|audio_column_name)\b"
        message = re.sub(flags, r"--eval_\1", str(error)).replace("--split", "--eval_train_split/--eval_test_split")
        raise ValueError(message) from None


def pretrain(
    model_args: PreTrainingModelArguments,
    data_args: PreTrainingDataArguments,
    training_args: TrainingArguments,
    callbacks: list | None = None,
) -> Path:
    """
    Pre-train (or resume pre-training) and write the encoder's model directory into `training_args.output_dir`.
    Returns that directory. `callbacks` are added to the Trainer's.
    """
    check_trainer_world_size(training_args)
    check_arguments(data_args, training_args)
    check_batch_size(training_args)
    push = trainer_push_arguments(training_args, model_args.public)  # before any work; Trainer's pushes off
    config, start_encoder = pretraining_config(model_args)
    feature_extractor = BYOLAFeatureExtractor.from_model_config(config)
    dataset = training_clips(data_args, feature_extractor.sampling_rate, training_args)
    linear_probe = linear_probe_data(data_args, config.sampling_rate)
    output_dir = Path(training_args.output_dir)
    record, resuming = run_record(model_args, data_args, training_args, dataset, feature_extractor, config)
    stats = record["statistics"]
    config.mean, config.std, config.stats_provenance = stats["mean"], stats["std"], stats["provenance"]
    world_size = training_args.world_size
    rank_files = [RANK_STATE_FILE.format(rank) for rank in range(world_size)] if world_size > 1 else []
    checkpoint = last_complete_checkpoint(output_dir, rank_files) if resuming else None
    if checkpoint is not None:
        logger.info(f"Resuming from {checkpoint}")
    trainer = build_trainer(
        config, start_encoder, dataset, data_args, training_args, feature_extractor, linear_probe,
        [RankStateCallback(checkpoint), *(callbacks or [])],
    )  # fmt: skip
    result = run_training(trainer, checkpoint)
    if trainer.is_world_process_zero():
        batch_size = training_args.train_batch_size * world_size * training_args.gradient_accumulation_steps
        # The whole run's log (restored on resume), not train()'s own mean: that covers only the steps since resuming.
        losses = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
        info = {
            "init_from": model_args.init_from,
            "steps": trainer.state.global_step,
            "epochs": epochs_trained(trainer.state, data_args, stats, batch_size),
            "batch_size": batch_size,
            "learning_rate": training_args.learning_rate,
            "logged_losses": [losses[0], losses[-1]] if losses else [],
            "audio_hours": stats["audio_seconds"] / 3600 if stats["audio_seconds"] is not None else None,
        }
        save_outputs(trainer, output_dir, info, None if result is None else result.metrics)
        if push.push_to_hub:  # the encoder's folder with its card, privately unless --public
            url = push_to_hub(output_dir, push.hub_model_id, private=not push.public, token=training_args.hub_token)
            logger.info(f"Pushed to {url}")
    return output_dir


def epochs_trained(state, data_args: PreTrainingDataArguments, stats: dict, batch_size: int) -> float | None:
    """Passes over the data: Trainer's epochs, or for a stream (one endless Trainer epoch) the clips trained over the
    clips the statistics pass counted; `None` for a stream never counted (its statistics were given)."""
    if not data_args.streaming:
        return state.epoch
    clips = stats["provenance"]["num_examples"]
    return None if clips is None else state.global_step * batch_size / clips


def crop_dataset(dataset, data_args, config, seed: int) -> torch.utils.data.Dataset:
    """Crops of the clips: indexed by [`EpochCropSampler`]'s draws, or as a stream arrives."""
    cropper = ClipCropper(data_args.audio_column_name, config.sampling_rate, config.crop_samples, config.pad_both_ends)
    return StreamingCropDataset(dataset, cropper, seed) if data_args.streaming else CropDataset(dataset, cropper)


def run_record(model_args, data_args, training_args, dataset, feature_extractor, config) -> tuple[dict, bool]:
    """The run's record and whether it resumes: a new run (rank 0 first) claims the output folder
    ([`~tools.outputs.claim_output_dir`], refusing another run's or a folder it did not write), computes the
    statistics and writes them beside the checkpoints, which the other ranks and every resumption then read."""
    output_dir = Path(training_args.output_dir)
    record = run_fingerprint(model_args, data_args, training_args, dataset)
    with training_args.main_process_first(desc="statistics of the data"):
        owned = claim_output_dir(output_dir, COMMAND, record, OUTPUTS, overwrite=None)  # no such flag
        with tempfile.TemporaryFile(dir=output_dir):  # can the run write its checkpoints there? (before training)
            pass
        stats_path = output_dir / STATISTICS_FILE
        if stats_path.is_file():  # written once the run's statistics pass ended: the run's, whatever rank reads it
            return {"fingerprint": record, "statistics": json.loads(stats_path.read_text())}, owned.resumed
        stats = statistics(model_args, data_args, dataset, feature_extractor, config.crop_samples)
        if data_args.streaming and stats["provenance"]["num_examples"] is not None:  # the statistics pass counted
            check_one_batch(stats["provenance"]["num_examples"], training_args)
        write_json_atomic(stats_path, stats)
        return {"fingerprint": record, "statistics": stats}, False


def build_trainer(
    config, start_encoder, dataset, data_args, training_args, feature_extractor, linear_probe, callbacks
) -> BYOLAPreTrainer:
    """A new learner (seeded; from `start_encoder` when given) in a [`BYOLAPreTrainer`] over crops of `dataset`."""
    from transformers import set_seed

    set_seed(training_args.seed)
    model = BYOLAForPreTraining(config)
    if start_encoder is not None:
        model.load_encoder(start_encoder)
    return BYOLAPreTrainer(
        model=model,
        args=training_args,
        train_dataset=crop_dataset(dataset, data_args, config, training_args.seed),
        data_collator=collate_waveforms,
        feature_extractor=feature_extractor,
        # Trainer asks for an evaluation set under an eval_strategy; BYOLAPreTrainer.evaluate is the linear probe.
        eval_dataset=linear_probe.test.waveforms if linear_probe is not None else None,
        linear_probe=linear_probe,
        callbacks=callbacks,
    )


def save_outputs(trainer: BYOLAPreTrainer, output_dir: Path, info: dict[str, Any], metrics: dict | None) -> None:
    """
    Write the online encoder ([`BYOLAForPreTraining.save_encoder`]: weights, config with the statistics, feature
    extractor) and its card into `output_dir`, with, as transformers' example scripts do, the run's
    `trainer_state.json` (the whole log: losses, linear probes) and `train_results.json` (`train()`'s `metrics`, of
    the steps this invocation trained). `metrics` is `None` when it trained nothing (a finished run re-run): the two
    files of the invocation that trained are kept. Those two are written first, each atomically, so that a run
    killed while saving the encoder is completed by its re-run; the encoder is saved in a temporary folder, then
    each file renamed into place, `config.json` last, so the folder never loads as half a model.
    """
    if not all(torch.isfinite(tensor).all() for tensor in trainer.model.encoder.state_dict().values()):
        raise ValueError("Pre-training diverged: the encoder has NaN or infinite weights; lower --learning_rate.")

    # The run's records first, each atomically: a run killed while saving the encoder is finished by its re-run,
    # which trains nothing (no metrics) but saves the encoder again, and must find them.
    if metrics is not None or not (output_dir / "trainer_state.json").is_file():
        with atomic_path(output_dir / "trainer_state.json") as staged:
            trainer.state.save_to_json(str(staged))
    if metrics is not None:
        write_json_atomic(output_dir / "train_results.json", metrics)

    def save(staging: Path) -> None:
        encoder = trainer.model.save_encoder(staging)
        pretraining_card(encoder.config, info).save(staging / "README.md")

    save_into(output_dir, save)


def build_parser() -> HfArgumentParser:
    parser = make_parser(
        COMMAND,
        (PreTrainingModelArguments, PreTrainingDataArguments, TrainingArguments),
        usage="byola-pretrain --dataset_name DATA --output_dir OUT [--variant V --feature_d D | --init_from DIR]",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Our flags come first; the rest are transformers' TrainingArguments, with the original's training setup "
            "(per variant) as defaults."
        ),
    )
    # What --help shows; parse_command_line sets the run's (the learning rate by variant).
    parser.set_defaults(**original_training_defaults("AudioNTT2020"), dataloader_num_workers=decoding_workers())
    # argparse shows one default per flag: the help states each variant's
    rates = ", ".join(f"{values['learning_rate']} {variant}" for variant, values in VARIANT_PRETRAINING.items())
    parser._option_string_actions["--learning_rate"].help = f"Adam's learning rate (default: {rates})"
    parser._option_string_actions["--dataloader_num_workers"].help = (
        f"Processes decoding the audio beside training (default here: {decoding_workers()}, that is "
        f"{MAX_DECODING_WORKERS} or fewer on fewer CPU cores, 0 on one core; 0 decodes in the training process, "
        "several times slower)"
    )
    return parser


def original_training_defaults(variant: str) -> dict[str, Any]:
    """The original's training setup: Adam (AdamW without weight decay), the variant's learning rate, constant, no
    gradient clipping, batch 256, 100 epochs, seed 42; per-rank BatchNorm and memory banks under DDP (no buffer
    broadcast, no search for unused parameters); the model's own inputs (no column removal); no report_to."""
    return {
        **ORIGINAL_DEFAULTS,
        "learning_rate": VARIANT_PRETRAINING.get(variant, VARIANT_PRETRAINING["AudioNTT2020"])["learning_rate"],
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "weight_decay": 0.0,
        "ddp_broadcast_buffers": False,
        "ddp_find_unused_parameters": False,  # every trainable parameter takes part in each step
        "remove_unused_columns": False,
        "report_to": "none",
    }


def pretraining_defaults(model_args: PreTrainingModelArguments, data_args: PreTrainingDataArguments) -> dict:
    """[`original_training_defaults`] of the run's variant (`--init_from`'s, read from its config), and a linear
    probe every 500 steps when `--eval_dataset_name` is given."""
    if model_args.init_from is not None:
        variant = load_byola_front_end(model_args.init_from)[0].variant
    else:
        variant = new_network_variant(model_args)
    defaults = original_training_defaults(variant)
    if data_args.eval_dataset_name is not None:
        defaults.update({"eval_strategy": "steps", "eval_steps": 500})
    return defaults


def parse_command_line(argv: list[str]) -> tuple:
    """The three argument dataclasses of `argv`, with the defaults of [`pretraining_defaults`] for the flags not
    given. They are the parser's defaults, not flags added to `argv`: argparse also takes a flag spelled with
    dashes or abbreviated, and an added flag would override it."""
    parser = build_parser()
    model_args, data_args, _ = parse_arguments(parser, argv)
    # Reads --init_from's config: a mistake there is one line. Not through run_command, whose teardown destroyed the
    # process group the first parse joined under torchrun: the second parse then joined it again under the same keys
    # of torchrun's store, and a rank that read the other's old gloo address hung or lost the other (issue 34).
    with user_errors(COMMAND):
        parser.set_defaults(**pretraining_defaults(model_args, data_args))
    return parse_arguments(parser, argv)


def main(argv: list[str] | None = None) -> None:
    require_extras(COMMAND, ("datasets", "accelerate"), "pretrain")
    model_args, data_args, training_args = parse_command_line(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output_dir = run_command(COMMAND, pretrain, model_args, data_args, training_args)
    if is_main_process():
        print(f"BYOL-A encoder saved to {output_dir}")


if __name__ == "__main__":
    main()

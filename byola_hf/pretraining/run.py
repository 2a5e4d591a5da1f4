"""`byola-pretrain`'s run: claim the output folder with the run's record, compute the statistics once, pre-train
with [`~byola_hf.pretraining.trainer.BYOLAPreTrainer`] (resuming from the last complete checkpoint), then save the
online encoder as a BYOL-A model directory with its card. The command line is in [`~byola_hf.pretraining.cli`].
"""

import json
import logging
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from ..configuration_byola import VARIANTS, BYOLAConfig, BYOLAPreTrainingConfig, check_statistics_kept
from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..hub import push_to_hub, trainer_push_arguments
from ..modeling_byola import BYOLAModel
from ..tools.cli import check_training_length_and_values, run_training
from ..tools.data import load_byola_front_end, source_record
from ..tools.distributed import check_trainer_world_size
from ..tools.outputs import (
    MAY_CHANGE_ON_RESUME,
    atomic_path,
    claim_output_dir,
    holds_claimed_folders,
    last_complete_checkpoint,
    recorded_arguments,
    save_into,
    write_json_atomic,
)
from .data import check_one_batch, statistics, training_clips
from .linear_probe import linear_probe_data
from .model_card import pretraining_card
from .trainer import RANK_STATE_FILE, BYOLAPreTrainer, RankStateCallback, build_trainer


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
# Trainer flags about labels, which Trainer ignores without a word when the batches hold none.
LABEL_FLAGS = ("label_names", "include_for_metrics", "label_smoothing_factor")


def pretraining_config(model_args) -> tuple[BYOLAPreTrainingConfig, BYOLAModel | None]:
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


def new_network_variant(model_args) -> str:
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
        source = source_record(dataset, data_args.audio_column_name)
    else:  # each DataLoader worker reads its own shards of a stream and draws its own crops
        data |= {"dataloader_num_workers": training_args.dataloader_num_workers}
    model = recorded_arguments(model_args)
    if model_args.init_from is None:  # the variant trained, whether given or not
        model["variant"] = new_network_variant(model_args)
    training = {**recorded_arguments(training_args), "world_size": training_args.world_size}
    return {"model": model, "data": data, "training": training, "source": source}


def check_arguments(data_args, training_args: TrainingArguments) -> None:
    """Refuse what Trainer or the data flags would take and silently not do as asked."""
    if training_args.resume_from_checkpoint is not None:
        raise ValueError(
            "byola-pretrain resumes by itself: re-run the same command with the run's --output_dir (drop "
            "--resume_from_checkpoint); to start from another run's encoder, pass it as --init_from."
        )
    check_training_length_and_values(training_args)
    for flag in LABEL_FLAGS:  # self-supervised: no label for them to act on, and the probe scores its own
        default = next(field.default for field in fields(training_args) if field.name == flag)
        if getattr(training_args, flag) not in (default, []):
            raise ValueError(
                f"--{flag}: pre-training has no labels for it to act on (the probe scores its own): drop it."
            )
    if training_args.per_device_train_batch_size < 2:  # BYOL-A's BatchNorm layers normalise over the batch
        raise ValueError(
            "BYOL-A's BatchNorm layers need at least 2 clips per device and step: raise --per_device_train_batch_size."
        )
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


@holds_claimed_folders()
def pretrain(model_args, data_args, training_args: TrainingArguments, callbacks: list | None = None) -> Path:
    """Pre-train (or resume pre-training) and write the encoder's model directory into `training_args.output_dir`.
    Returns that directory. `callbacks` are added to the Trainer's."""
    check_trainer_world_size(training_args)
    check_arguments(data_args, training_args)
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


def epochs_trained(state, data_args, stats: dict, batch_size: int) -> float | None:
    """Passes over the data: Trainer's epochs, or for a stream (one endless Trainer epoch) the clips trained over the
    clips the statistics pass counted; `None` for a stream never counted (its statistics were given)."""
    if not data_args.streaming:
        return state.epoch
    clips = stats["provenance"]["num_examples"]
    return None if clips is None else state.global_step * batch_size / clips


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
            stats = json.loads(stats_path.read_text())
            check_statistics_kept(output_dir, stats["mean"], stats["std"], "the run saved its encoder", False)
            return {"fingerprint": record, "statistics": stats}, owned.resumed
        stats = statistics(model_args, data_args, dataset, feature_extractor, config.crop_samples)
        if data_args.streaming and stats["provenance"]["num_examples"] is not None:  # the statistics pass counted
            check_one_batch(stats["provenance"]["num_examples"], training_args)
        write_json_atomic(stats_path, stats)
        return {"fingerprint": record, "statistics": stats}, False


def save_outputs(trainer: BYOLAPreTrainer, output_dir: Path, info: dict[str, Any], metrics: dict | None) -> None:
    """Write the online encoder ([`BYOLAForPreTraining.save_encoder`]: weights, config with the statistics, feature
    extractor) and its card into `output_dir`, with, as transformers' example scripts do, the run's
    `trainer_state.json` (the whole log: losses, linear probes) and `train_results.json` (`train()`'s `metrics`, of the
    steps this invocation trained). `metrics` is `None` when it trained nothing (a finished run re-run): the two files
    of the invocation that trained are kept. Those two are written first, each atomically, so that a run killed while
    saving the encoder is completed by its re-run; the encoder is saved in a temporary folder, then each file renamed
    into place, `config.json` last, so the folder never loads as half a model."""
    if not all(torch.isfinite(tensor).all() for tensor in trainer.model.encoder.state_dict().values()):
        raise ValueError("Pre-training diverged: the encoder has NaN or infinite weights; lower --learning_rate.")

    if metrics is not None or not (output_dir / "trainer_state.json").is_file():
        with atomic_path(output_dir / "trainer_state.json") as staged:
            trainer.state.save_to_json(str(staged))
    if metrics is not None:
        write_json_atomic(output_dir / "train_results.json", metrics)

    def save(staging: Path) -> None:
        encoder = trainer.model.save_encoder(staging)
        pretraining_card(encoder.config, info).save(staging / "README.md")

    save_into(output_dir, save)

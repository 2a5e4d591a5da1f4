"""`byola-pretrain`: pre-train BYOL-A (v1 or v2) on any audio with Trainer, or further pre-train a BYOL-A model.

byola-pretrain --dataset_name FOLDER|audiofolder|HUB_ID|SAVED_DIR --output_dir OUT
    [--variant AudioNTT2020|AudioNTT2022 --feature_d D | --init_from MODEL_DIR] [--mean M --std S] [TrainingArguments]

A re-run of the same command resumes from the last checkpoint in OUT. OUT ends as a BYOL-A model directory (the
online encoder, the statistics of the data, a card) that AutoModel and every byola_hf command load.
"""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from ..configuration_byola import VARIANT_PRETRAINING
from ..tools.cli import make_parser, parse_arguments, require_extras, run_command, user_errors
from ..tools.data import load_byola_front_end
from ..tools.distributed import is_main_process
from .run import COMMAND, new_network_variant, pretrain


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
    """The original's training setup (Adam without weight decay at the variant's constant learning rate, no
    clipping), with per-rank BatchNorm and memory banks under DDP, as the original's DDP keeps them."""
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

"""One runner for every console script: parse, run, and turn a user's mistake into one line and exit code 2.

Expected failures are the user's to fix and end in `COMMAND: error: WHAT (HOW TO FIX)` on stderr with exit code 2:
bad arguments, `ValueError`s raised by the commands (missing files, columns or statistics, bad audio, a folder
the command does not own, a mismatched re-run), missing extras, and the file system saying no (full, read-only,
permission denied). Anything else is a bug and keeps its traceback.
"""

import argparse
import ctypes
import dataclasses
import errno
import logging
import math
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from transformers import HfArgumentParser, TrainingArguments

from ..audio import AUDIO_EXTENSIONS
from ..extras import require_extra


logger = logging.getLogger(__name__)
EXIT_USER_ERROR = 2
# What the file system says when the user's disk or folder cannot take the output, as errno and as the text that
# libraries which wrap OSError (safetensors, datasets, Arrow) pass on.
FILE_SYSTEM_ERRORS = {
    errno.ENOSPC: ("No space left on device", "free some space or choose another --output_dir"),
    errno.EDQUOT: ("Disk quota exceeded", "free some space or choose another --output_dir"),
    errno.EROFS: ("Read-only file system", "choose an --output_dir on a writable disk"),
    errno.EACCES: ("Permission denied", "choose a folder you can write, or fix its permissions"),
    errno.EPERM: ("Operation not permitted", "choose a folder you can write, or fix its permissions"),
}


def user_error_message(error: BaseException) -> str | None:
    """The one-line message for an expected failure, or `None` for a bug."""
    import torch

    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.errno in FILE_SYSTEM_ERRORS:
        reason, fix = FILE_SYSTEM_ERRORS[error.errno]
        where = f" ({error.filename})" if error.filename else ""
        return f"{reason}{where}: {fix}."
    for reason, fix in FILE_SYSTEM_ERRORS.values():
        if reason in text:
            return f"{reason}: {fix}. ({text[:300]})"
    if type(error).__module__ == "soundfile":  # raised while datasets decodes a file: the message names it
        text = re.sub(r"<_io\.\w+ name='([^']*)'>", r"\1", text)
        return f"Could not decode audio: {text} Remove or convert the file (formats: {', '.join(AUDIO_EXTENSIONS)})."
    if type(error).__module__.startswith("librosa"):  # raised while datasets resamples a file
        return f"Could not decode audio: {text} (a file holds NaN or infinite samples, or cannot be resampled)."
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        where = "the GPU" if isinstance(error, torch.OutOfMemoryError) else "memory"
        return (
            f"Ran out of {where} ({text[:200]}): lower the batch size (--per_device_train_batch_size, --batch_size)."
        )
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return f"{text.rstrip('.')}: check the path."
    if isinstance(error, (ValueError, ImportError)):
        return text
    return None


# Trainer flags that make a resumed run differ from the run never stopped, and why.
INEXACT_RESUME = {
    "save_only_model": "its checkpoints lack the optimizer, schedule and random states; --save_total_limit keeps "
    "fewer checkpoints",
    "ignore_data_skip": "the stopped epoch would start over on its first batches instead of going on",
}


def check_training_length_and_values(training_args: Any) -> None:
    """Refuse a training length Trainer would not train as given (`--max_steps 0` trains one step, no epochs train
    none and save the untrained model, `--gradient_accumulation_steps 0` divides by zero), a non-finite value of
    any flag (Trainer takes a NaN `--max_grad_norm` as no clipping), and the flags with which Trainer resumes a
    stopped run other than it would have gone on, without a word (`INEXACT_RESUME`: the re-run of a killed command
    ended with other weights)."""
    for field in dataclasses.fields(training_args):
        value = getattr(training_args, field.name)
        if field.init and isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{field.name} must be a finite number, got {value}.")
    for flag, why in INEXACT_RESUME.items():
        if getattr(training_args, flag):
            raise ValueError(f"--{flag}: a re-run would not resume a stopped run exactly ({why}): drop it.")
    if training_args.gradient_accumulation_steps < 1:  # Trainer divides by it, after the data was read
        raise ValueError(
            f"--gradient_accumulation_steps must be at least 1 (1: no accumulation), got "
            f"{training_args.gradient_accumulation_steps}."
        )
    if training_args.max_steps == 0:
        raise ValueError("--max_steps 0 would still train one step: give a positive --max_steps, or -1 for epochs.")
    if training_args.max_steps < 0 and training_args.num_train_epochs <= 0:
        raise ValueError(f"--num_train_epochs {training_args.num_train_epochs} trains nothing: give more than 0.")


def check_scored_evaluation(training_args: Any, command: str, scored: str) -> None:
    """Refuse the Trainer flags that keep `compute_metrics` from the split's predictions, which `command` scores
    (`scored`, e.g. "every evaluation on the task's metric (accuracy)") and may keep its best checkpoint by: with
    `--prediction_loss_only` Trainer skips the metric; with `--eval_do_concat_batches false` it hands over one array
    per batch. Either ended in a traceback after the training it allowed; `--batch_eval_metrics` (a metric fed batch
    by batch) in Trainer's message to change the code of `compute_metrics`; `--label_names` and
    `--include_for_metrics` (which change the inputs the model and `compute_metrics` get) in tracebacks."""
    for flag, given in (("label_names", training_args.label_names not in (None, ["labels"])),
                        ("include_for_metrics", bool(training_args.include_for_metrics))):  # fmt: skip
        if given:
            raise ValueError(
                f"--{flag}: {command} gives the model its own label column and scores {scored} from the predictions "
                "and labels alone: drop it."
            )
    if training_args.prediction_loss_only:
        raise ValueError(f"--prediction_loss_only: {command} scores {scored}, which that flag turns off: drop it.")
    if not training_args.eval_do_concat_batches:
        raise ValueError(
            f"--eval_do_concat_batches false: {command} scores {scored} over the whole split's predictions, which "
            "that flag splits into batches: drop it."
        )
    if training_args.batch_eval_metrics:
        raise ValueError(
            f"--batch_eval_metrics: {command} scores {scored} over the whole split's predictions, not batch by "
            "batch: drop it."
        )


@contextmanager
def random_state_kept(device: Any) -> Iterator[None]:
    """Leave torch's generators (the CPU's, and that of `device` when a GPU) as they were before the block."""
    import torch

    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        yield


class EvaluationLeavesRandomState:
    """`Trainer` mixin: evaluation leaves torch's generators as it found them ([`random_state_kept`]). Each evaluation
    drew from them (every DataLoader iterator draws a seed), so how often a run evaluated (`--eval_steps`,
    `--eval_on_start`: flags that may change on a resume) moved the training's later shuffles and dropout masks: two
    runs that differed only in it ended with other weights."""

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with random_state_kept(self.args.device):
            return super().evaluate(*args, **kwargs)


def run_training(trainer: Any, checkpoint: str | None) -> Any:
    """
    `trainer.train(resume_from_checkpoint=checkpoint)`, and its `TrainOutput`, or `None` when no step was left to
    train (a finished run re-run: its metrics are the run's that trained, not these). Two of Trainer's ways are
    changed:

    - When `checkpoint` already is the run's last step (`--max_steps`), its state and weights (the best
      checkpoint's with `load_best_model_at_end`, as Trainer ends a run) are loaded and nothing is trained: Trainer
      resumed there in the middle of an epoch trains one more step before it checks the limit, so each re-run of a
      finished command changed the model. (In epoch mode Trainer trains none, but still returns metrics, of no
      step.)
    - When training raises, Trainer's progress bars are closed first, so that the command's one-line error starts a
      line of its own instead of trailing a half-drawn bar.
    """
    from safetensors.torch import load_file
    from transformers import TrainerState
    from transformers.trainer_callback import ProgressCallback

    start_step = 0
    if checkpoint is not None:
        saved = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        start_step = saved.global_step
        if 0 < trainer.args.max_steps <= start_step:
            logger.info(f"{checkpoint} is the run's last step: nothing left to train.")
            weights = Path(checkpoint)
            if trainer.args.load_best_model_at_end and saved.best_model_checkpoint:
                # As Trainer ends a run: the best checkpoint's weights (found beside this one if the folder moved).
                weights = weights.parent / Path(saved.best_model_checkpoint).name
            trainer.model.load_state_dict(load_file(weights / "model.safetensors"))
            trainer.state = saved
            return None
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException:
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, ProgressCallback):
                for bar in (callback.training_bar, callback.prediction_bar):
                    if bar is not None:
                        bar.close()
        raise
    return result if trainer.state.global_step > start_step else None


def check_whole_numbers(*checks: tuple[str, Any, int]) -> None:
    """A one-line `ValueError` for the first `(flag, value, least)` whose value is not a whole number >= `least`."""
    for name, value, least in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"--{name} must be a whole number >= {least}, got {value!r}.")


def fail(command: str, message: str) -> NoReturn:
    """Print `COMMAND: error: MESSAGE` on one line of stderr and exit with code 2."""
    print(f"{command}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def require_extras(command: str, modules: Sequence[str], extra: str) -> None:
    """Exit with one line naming the extra when a module a command needs is missing."""
    for module in modules:
        try:
            require_extra(module, extra)
        except ImportError as error:
            fail(command, str(error))


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` with each default said once: not for flags whose default is nothing (`None`, `False`; a 0 is said),
    nor when the help text already says what happens by default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        nothing = action.default is None or action.default is False
        if nothing or "default" in text.lower() or "not given" in text.lower():
            return text
        return super()._get_help_string(action)


def trainer_defaults() -> dict[str, Any]:
    """The `TrainingArguments` defaults of every training command where transformers' do not suit it: the loss
    logged every 10 steps (Trainer's 500 showed none for a run of fewer steps, as most of ours on small tasks are),
    and memory pinned only where an accelerator can use it (on a CPU-only machine torch warns at every DataLoader)."""
    import torch

    return {"logging_steps": 10, "dataloader_pin_memory": torch.accelerator.is_available()}


def make_parser(command: str, argument_types: tuple[type, ...], **kwargs: Any) -> HfArgumentParser:
    """An `HfArgumentParser` for `command` whose errors (unknown flags, bad values) are one line and exit code 2,
    with [`trainer_defaults`] when it takes `TrainingArguments`. Abbreviated flags are refused: the commands choose
    defaults by which flags were given, and `--learning_r` taken for `--learning_rate` unseen would let a default
    replace the user's value."""
    from transformers import TrainingArguments

    kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
    parser = HfArgumentParser(argument_types, prog=command, allow_abbrev=False, **kwargs)
    parser.error = lambda message: fail(command, f"{message} (see {command} --help)")
    if TrainingArguments in argument_types:
        parser.set_defaults(**trainer_defaults())
        pin_memory = parser._option_string_actions["--dataloader_pin_memory"]
        pin_memory.help = (
            "Pin batches in memory for faster copies to the accelerator (default here: only when one is available)"
        )
    return parser


def parse_arguments(parser: HfArgumentParser, argv: list[str] | None) -> tuple:
    """The parser's dataclasses from `argv` (the command line when `None`); unknown flags, empty values
    ([`check_no_empty_values`]) and values the dataclasses refuse are one line and exit code 2."""
    try:
        parsed = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        fail(parser.prog, f"{' '.join(str(error).split())} (see {parser.prog} --help)")
    check_no_empty_values(parser.prog, parsed)
    return parsed


def check_no_empty_values(command: str, parsed: Sequence[Any]) -> None:
    """An empty value names nothing, typically an unset shell variable (`--data_dir "$DATA"`): a folder flag would
    read, or write into, the working directory, another flag would take "" as a name. Refused for every argument of
    ours and Trainer's folder flags, `--output_dir` and `--resume_from_checkpoint` (an empty one named the working
    directory, and the run failed on its missing trainer_state.json; Trainer's other flags are its own to check)."""
    for arguments in parsed:
        if isinstance(arguments, TrainingArguments):
            values = {name: getattr(arguments, name[2:]) for name in ("--output_dir", "--resume_from_checkpoint")}
        elif isinstance(arguments, argparse.Namespace):  # positional arguments
            values = vars(arguments)
        else:
            values = {f"--{item.name}": getattr(arguments, item.name) for item in dataclasses.fields(arguments)}
        for name, value in values.items():
            if value == "" or (isinstance(value, list) and "" in value):
                fail(command, f"{name} is empty (an unset shell variable?): give it a value, or drop it if optional.")


@contextmanager
def user_errors(command: str) -> Iterator[None]:
    """Expected failures inside as one line and exit code 2 (see the module doc), Ctrl-C as one line and exit code
    130. For work before the command's `run`, such as choosing defaults between two parses of the command line."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"{command}: interrupted; re-run the same command to resume where it can.", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        fail(command, message)


def run_command(command: str, run: Callable[..., Any], *arguments: Any) -> Any:
    """`run(*arguments)` under [`user_errors`], with the torchrun process group torn down on the way out: the command's
    end, so call it once, after the command line is parsed. A group destroyed and joined again within one launch is
    joined under the same keys of torchrun's store, where a rank can read the other's old gloo address."""
    try:
        with user_errors(command):
            return run(*arguments)
    finally:
        import torch

        # Under torchrun, a gloo/nccl group left to interpreter exit can abort a rank after the work is done.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def die_with_parent() -> None:
    """Ask Linux to kill this (worker) process when its parent dies, so `kill -9` of a command leaves no workers
    behind. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass

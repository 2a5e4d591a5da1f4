"""Output folders a command owns, fingerprints of what made them, and atomic writes.

A command writes only into a folder that is new, empty, or carries its own marker (`MARKER`, JSON: the command, the
fingerprint of what made the outputs, the run record where the command keeps one, and the top-level names it
writes). A folder with other content, or another command's marker, is refused with one line and left untouched; a
folder holding only a marker (a run that stopped before writing anything) is taken over by any run of the same
command. A run holds its folder until its command (the function under [`holds_claimed_folders`]) returns: an
exclusive `flock`, which the kernel also drops when the process ends, `kill -9` included. Another run into a folder
in use is refused, since two runs would train into, or remove, each other's files. A re-run with the same
fingerprint resumes; with a different one it refuses, naming what differs, or with `overwrite=True` removes the
names the marker lists (and only those) and starts over. Files are written under a temporary name and renamed, so an
interrupted or disk-full run never leaves something that loads as complete.

Run records are fail-closed: a command records every argument ([`recorded_arguments`]) except the short list of
what may change between a run and its resumption ([`MAY_CHANGE_ON_RESUME`]).
"""

import dataclasses
import enum
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


try:
    import fcntl
except ImportError:  # Windows: folders are claimed without a lock (hold_output_dir warns)
    fcntl = None

MARKER = ".byola_hf_output.json"
logger = logging.getLogger(__name__)
# The folders this process holds, by (device, inode), each with the open descriptor that holds its lock.
HELD_FOLDERS: dict[tuple[int, int], int] = {}

# The arguments that may differ between a run and its resumption; every other argument of a command (its own
# dataclasses' fields and every `TrainingArguments` field, read from the dataclasses at run time) is in its run
# record, so a flag that a new release adds changes the record until it is named here. They are: where the run
# writes and logs, how often it saves and evaluates, its length, its data-loading workers, its progress output,
# what it does after training (evaluation, prediction) and the Hub options.
MAY_CHANGE_ON_RESUME = frozenset(
    {
        # where it writes and logs
        "output_dir", "overwrite_output_dir", "report_to", "run_name", "project", "trackio_space_id",
        "trackio_bucket_id", "trackio_static_space_id", "logging_dir", "logging_strategy", "logging_steps",
        "logging_first_step", "log_on_each_node", "logging_nan_inf_filter", "log_level", "log_level_replica",
        "skip_memory_metrics", "include_num_input_tokens_seen", "save_corpus_to",
        # how often it saves and evaluates, and what it evaluates after training
        "save_strategy", "save_steps", "save_total_limit", "save_on_each_node", "save_only_model",
        "enable_jit_checkpoint", "eval_strategy", "eval_steps", "eval_delay", "eval_on_start",
        "per_device_eval_batch_size", "eval_accumulation_steps", "eval_do_concat_batches", "eval_use_gather_object",
        "batch_eval_metrics", "do_train", "do_eval", "do_predict", "resume_from_checkpoint",
        # its length
        "num_train_epochs", "max_steps",
        # workers and progress output (the order of the data does not depend on them)
        "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_persistent_workers",
        "dataloader_pin_memory", "preprocessing_num_workers", "preprocessing_batch_size", "disable_tqdm",
        "torch_empty_cache_steps", "ddp_timeout", "local_rank",
        # the Hub
        "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push",
        "hub_revision", "public",
    }
)  # fmt: skip


def recorded_arguments(*arguments: Any, may_change: frozenset[str] = MAY_CHANGE_ON_RESUME) -> dict[str, Any]:
    """Every field of the argument dataclasses `arguments` (those a caller can set) except `may_change`, by name, as
    JSON values (enums by value, others by `str`): what a run records so that a re-run with any other value of any of
    them is refused."""
    record = {}
    for instance in arguments:
        for field in dataclasses.fields(instance):
            if field.init and field.name not in may_change:
                value = getattr(instance, field.name)
                record[field.name] = json.loads(json.dumps(_plain(value), default=str))
    return record


def _plain(value: Any) -> Any:
    """`value` with enums replaced by their values, inside lists and dicts too."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def changed_parts(recorded: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys (dotted into nested dicts) whose values differ between two run records."""
    changed = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += changed_parts(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key}")
    return changed


def fingerprint(**parts: Any) -> str:
    """A short stable hash of `parts` (JSON-serialisable values; others by `str`), for markers and caches."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class OwnedOutput:
    """A folder a command may write into. `resumed`: it already holds this fingerprint's (partial) outputs."""

    path: Path
    resumed: bool


def read_marker(path: Path) -> dict | None:
    """The marker of `path`, or `None` when it has none (or one that is not ours to read)."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and "command" in marker else None


def claim_output_dir(
    path: str | Path, command: str, run_fingerprint: str | dict, outputs: Sequence[str], overwrite: bool | None = False
) -> OwnedOutput:
    """
    Make `path` this command's output folder, or raise a one-line `ValueError` (see the module doc).

    Args:
        path: the `--output_dir`.
        command: the command's name, e.g. `"byola-extract"`.
        run_fingerprint: [`fingerprint`] of everything that changes the outputs (source and its files, model and
            config, result-changing arguments), or the run record itself (a JSON dict, e.g. holding
            [`recorded_arguments`]), kept in the marker so that a mismatched re-run is told what differs; its
            `source` part, where there is one, describes the data's content (a re-run that differs only there is
            told that the data changed).
        outputs: the top-level names (or glob patterns, e.g. `"checkpoint-*"`) the command writes in the folder
            (removed by `overwrite`).
        overwrite: start over in a folder this command wrote for another fingerprint (`--overwrite_output_dir`);
            `None` for a command without that flag (its refusal does not offer it).
    """
    path = Path(path)
    own_marker(path, command)  # a file, or a folder holding what the command did not write: refused, not created
    path.mkdir(parents=True, exist_ok=True)
    hold_output_dir(path, command)
    marker = own_marker(path, command)  # again, now that no other run can be claiming it
    record = run_fingerprint if isinstance(run_fingerprint, dict) else None
    if record is not None:
        record = json.loads(json.dumps(record, default=str))
        run_fingerprint = fingerprint(**record)
    if marker is not None and marker.get("fingerprint") == run_fingerprint:
        return OwnedOutput(path, resumed=True)
    if marker is not None and follows_rank_zero():
        # Trainer's main_process_first lets the other ranks in when rank 0 fails, refused by the lock included: a
        # rank without the lock that removed or re-marked the folder would wipe the run that holds it.
        raise ValueError(
            f"--output_dir {path} holds another {command} run's outputs, which rank 0 of this launch did not take "
            "over (see its error): the other ranks change nothing in the folder."
        )
    if marker is not None and all(entry.name == MARKER for entry in path.iterdir()):
        marker = None  # a run that stopped before writing anything: nothing of it to keep or resume
    if marker is not None and not overwrite:
        differs = changed_parts(marker.get("record") or {}, record) if record is not None else []
        refuse_other_run(path, command, differs, overwrite)
    if marker is not None:
        for name in marker.get("outputs", []):
            for target in sorted(path.glob(name)):  # a name, or a pattern such as "checkpoint-*"
                remove_path(target)
    marker = {"command": command, "fingerprint": run_fingerprint, "outputs": list(outputs)}
    write_json_atomic(path / MARKER, marker if record is None else {**marker, "record": record})
    return OwnedOutput(path, resumed=False)


def own_marker(path: Path, command: str) -> dict | None:
    """The marker of `command`'s earlier run in `path` (`None`: a new or empty folder); a one-line `ValueError` for a
    file, or a folder holding what `command` did not write."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {path} is a file: choose a folder.")
    marker = read_marker(path) if path.is_dir() else None
    if marker is None and path.is_dir() and any(path.iterdir()):
        raise ValueError(
            f"--output_dir {path} already holds files that {command} did not write: choose a new or empty folder "
            "(nothing in it was changed)."
        )
    if marker is not None and marker["command"] != command:
        raise ValueError(
            f"--output_dir {path} holds the outputs of {marker['command']}, not {command}: choose another folder."
        )
    return marker


def hold_output_dir(path: Path, command: str) -> None:
    """Hold `path` until the command running ends ([`holds_claimed_folders`]; without one, until this process ends),
    or a one-line `ValueError` when another process holds it; a warning where the file system has no locks (NFS,
    Lustre without `flock`). The other ranks of a torchrun launch claim the folder their rank 0 holds."""
    if follows_rank_zero():
        return
    status = path.stat()
    if (status.st_dev, status.st_ino) in HELD_FOLDERS:  # a re-run within this process
        return
    if fcntl is None:
        warn_unlocked(path, "this system has no flock")
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise ValueError(
            f"--output_dir {path} is in use by another run that is still going (two runs would write into, or "
            f"remove, each other's files): wait for it to end, or give this {command} run another folder."
        ) from None
    except OSError as error:  # NFS (its exclusive locks need a descriptor open for writing), Lustre without flock
        os.close(descriptor)
        warn_unlocked(path, f"its file system: {error.strerror}")
        return
    HELD_FOLDERS[(status.st_dev, status.st_ino)] = descriptor


def follows_rank_zero() -> bool:
    """Whether this process is a rank other than 0 of a torchrun launch (`WORLD_SIZE` above 1), which uses the folder
    its rank 0 claims and holds. A `RANK` without such a launch (left in the environment) is not one: the process
    claims its folder itself. Read from the launcher's variables so this module needs no torch."""
    return int(os.environ.get("WORLD_SIZE") or 1) > 1 and int(os.environ.get("RANK") or 0) != 0


def warn_unlocked(path: Path, why: str) -> None:
    logger.warning(
        f"--output_dir {path} cannot be locked ({why}): another run started into it would not be refused, so start "
        "only one."
    )


@contextmanager
def holds_claimed_folders() -> Iterator[None]:
    """The folders claimed inside the block (or the decorated command function) are held until it ends, then free for
    the next run; those held before it stay held (a command run inside another keeps the outer one's folder)."""
    held_before = set(HELD_FOLDERS)
    try:
        yield
    finally:
        for key in [key for key in HELD_FOLDERS if key not in held_before]:
            os.close(HELD_FOLDERS.pop(key))  # closing the descriptor drops its lock


def release_in_forked_child() -> None:
    """A forked process (a `datasets.map` or DataLoader worker) closes its copies of the descriptors holding its
    parent's folders: a copy kept the folder locked after the parent returned or was killed, and orphaned pool
    workers outlive a `kill -9`. The parent's lock stays: it goes only when every copy is closed."""
    for descriptor in HELD_FOLDERS.values():
        os.close(descriptor)
    HELD_FOLDERS.clear()


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has neither fork nor the lock (see fcntl above)
    os.register_at_fork(after_in_child=release_in_forked_child)


def refuse_other_run(path: Path, command: str, differs: list[str], overwrite: bool | None) -> None:
    """The one-line refusal of a re-run into `path` whose record `differs` in these parts from the folder's run: the
    data alone changed, or arguments (`overwrite=None`: the command has no --overwrite_output_dir to offer)."""
    start_over = "" if overwrite is None else " pass --overwrite_output_dir to start over,"
    if differs and all(part.startswith("source.") for part in differs):
        raise ValueError(
            f"The data changed since the run in {path} began (clips added, removed, written again or relabelled, a "
            f"dataset saved again, a Hub dataset's new revision): restore it to resume that run,{start_over} or "
            "choose another --output_dir to start one on the data as it is now."
        )
    what = f"it differs in {', '.join(differs)}" if differs else "model, data or result-changing flags differ"
    raise ValueError(
        f"--output_dir {path} holds a {command} run made with other inputs or arguments ({what}): re-run "
        f"with the same arguments to resume,{start_over} or choose another folder."
    )


def remove_path(path: Path) -> None:
    """Remove a file or folder this command wrote (never follows a link out of the folder)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """A temporary path beside `final` to write a file or folder into; renamed to `final` when the block succeeds (an
    existing `final` is replaced), removed when it fails. Beside, so the rename stays on one file system."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    staged = temporary / final.name
    try:
        yield staged
        if final.is_dir() and not final.is_symlink():
            os.replace(final, temporary / ".previous")
        os.replace(staged, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def save_into(output_dir: str | Path, save: Callable[[Path], Any], last: str = "config.json") -> None:
    """Call `save(staging_folder)` (e.g. `save_pretrained`), then move what it wrote into `output_dir` file by file
    with `last` moved last: a model directory never has a `config.json` (so never loads) before its weights are
    complete, even when the run is killed or the disk fills up."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(".staging.*"):  # an earlier save's, killed before its clean-up
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=output_dir))
    try:
        save(staging)
        names = sorted(path.name for path in staging.iterdir())
        for name in sorted(names, key=lambda name: name == last):
            target = output_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def last_complete_checkpoint(output_dir: str | Path, extra_files: Sequence[str] = ()) -> str | None:
    """The newest Trainer `checkpoint-N` in `output_dir` that was saved to the end (its `trainer_state.json`, which
    Trainer writes last, whole; and every one of `extra_files`, which callbacks add after it), or `None`. Trainer
    writes a checkpoint file by file in place, so a run killed while saving leaves a folder that `get_last_checkpoint`
    would pick and the resume would fail on."""
    steps = {path: path.name.removeprefix("checkpoint-") for path in Path(output_dir).glob("checkpoint-*")}
    folders = sorted((path for path, step in steps.items() if step.isdigit()), key=lambda p: -int(steps[p]))
    for folder in folders:
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logger.warning(f"Not resuming from {folder}: the run was stopped while saving it.")
            continue
        if all((folder / name).is_file() for name in extra_files):
            return str(folder)
        logger.warning(f"Not resuming from {folder}: the run was stopped while its ranks saved their state.")
    return None


def write_json_atomic(path: str | Path, value: Any) -> None:
    """Write `value` as indented JSON to `path` atomically."""
    with atomic_path(path) as staged:
        staged.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")

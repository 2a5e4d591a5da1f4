"""Output folders a command owns, fingerprints of what made them, and atomic writes.

A command writes only into a folder that is new, empty, or carries its own marker (`MARKER`, JSON: the command, the
fingerprint of what made the outputs, and the top-level names it writes). A folder with other content, or another
command's marker, is refused with one line and left untouched. A re-run with the same fingerprint resumes; with a
different one it refuses, or with `overwrite=True` removes the names the marker lists (and only those) and starts
over. Files are written under a temporary name and renamed, so an interrupted or disk-full run never leaves
something that loads as complete.
"""

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


MARKER = ".byola_hf_output.json"
logger = logging.getLogger(__name__)


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
    path: str | Path, command: str, run_fingerprint: str, outputs: Sequence[str], overwrite: bool = False
) -> OwnedOutput:
    """
    Make `path` this command's output folder, or raise a one-line `ValueError` (see the module doc).

    Args:
        path: the `--output_dir`.
        command: the command's name, e.g. `"byola-extract"`.
        run_fingerprint: [`fingerprint`] of everything that changes the outputs (source and its files, model and
            config, result-changing arguments).
        outputs: the top-level names (or glob patterns, e.g. `"checkpoint-*"`) the command writes in the folder
            (removed by `overwrite`).
        overwrite: start over in a folder this command wrote for another fingerprint.
    """
    path = Path(path)
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
    if marker is not None and marker.get("fingerprint") == run_fingerprint:
        return OwnedOutput(path, resumed=True)
    if marker is not None and not overwrite:
        raise ValueError(
            f"--output_dir {path} holds a {command} run made with other inputs or arguments (model, data or "
            "result-changing flags differ): re-run with the same arguments to resume, pass --overwrite_output_dir "
            "to start over, or choose another folder."
        )
    if marker is not None:
        for name in marker.get("outputs", []):
            for target in sorted(path.glob(name)):  # a name, or a pattern such as "checkpoint-*"
                remove_path(target)
    path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path / MARKER, {"command": command, "fingerprint": run_fingerprint, "outputs": list(outputs)})
    return OwnedOutput(path, resumed=False)


def remove_path(path: Path) -> None:
    """Remove a file or folder this command wrote (never follows a link out of the folder)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """
    A temporary path beside `final` to write a file or folder into; renamed to `final` when the block succeeds (an
    existing `final` is replaced), removed when it fails. Beside, so the rename stays on one file system.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    staged = temporary / final.name
    try:
        yield staged
        if final.is_dir() and not final.is_symlink():
            previous = temporary / ".previous"
            os.replace(final, previous)
        os.replace(staged, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def save_into(output_dir: str | Path, save: Callable[[Path], Any], last: str = "config.json") -> None:
    """
    Call `save(staging_folder)` (e.g. `save_pretrained`), then move what it wrote into `output_dir` file by file
    with `last` moved last: a model directory never has a `config.json` (so never loads) before its weights are
    complete, even when the run is killed or the disk fills up.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
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
    """
    The newest Trainer `checkpoint-N` in `output_dir` that was saved to the end (its `trainer_state.json`, which
    Trainer writes last, whole; and every one of `extra_files`, which callbacks add after it), or `None`. Trainer
    writes a checkpoint file by file in place, so a run killed while saving leaves a folder that
    `get_last_checkpoint` would pick and the resume would fail on.
    """
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

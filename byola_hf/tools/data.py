"""Loading what the commands work on: an audio dataset split, its fingerprint, and a model's front-end. The one
home of data sources: every command reads its audio through this module.

Every command takes the same sources: a Hub dataset, `audiofolder` with `--data_dir`, a `save_to_disk` directory,
or a folder or glob of audio files (`byola_hf.audio.AUDIO_EXTENSIONS`, read with soundfile); `byola-extract`,
`byola-finetune` and `byola-pretrain` also an EVAR-style task CSV (`file_name` relative to `data_dir`, and any other
columns: `label`, `split` or `fold`...). [`load_audio_dataset`] decodes mono audio at the model's rate through
`datasets.Audio`; [`load_source`] leaves the audio column undecoded (`{"path", "bytes"}`) so that each clip is
decoded by `byola_hf.audio` in a DataLoader worker and a bad file is reported by its path.
"""

import fnmatch
import functools
import glob
import hashlib
import importlib.metadata
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..audio import AUDIO_EXTENSIONS, UNDECODED_AUDIO_EXTENSIONS, display_path
from ..configuration_byola import BYOLAConfig, BYOLAPreTrainingConfig
from ..extras import require_extra
from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..modeling_byola import PretrainingCheckpointError
from .outputs import fingerprint


logger = logging.getLogger(__name__)


def load_audio_dataset(
    dataset_name: str,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    audio_column_name: str = "audio",
    sampling_rate: int = 16000,
    streaming: bool = False,
):
    """Load one split of a Hub dataset, a local `audiofolder` (`dataset_name="audiofolder"`, `data_dir=...`), a dataset
    saved with `save_to_disk`, or a folder or glob of audio files (one `audio` and one `path` column), check its audio
    column and cast it to decode mono audio at `sampling_rate`."""
    datasets = require_extra("datasets", "stats")
    check_data_dir_use(dataset_name, data_dir)
    check_local_source(dataset_name, data_dir)
    path = Path(dataset_name)
    dataset = read_split(dataset_name, dataset_config_name, data_dir, split, audio_column_name, streaming)
    if is_audio_file_source(dataset_name) or (is_saved_dataset(path) and not (path / "dataset_dict.json").exists()):
        # After read_split, whose errors (no audio files, split folders) come first.
        check_read_whole(f"--dataset_name {display_path(dataset_name)}", dataset_config_name, split)
    if not streaming and len(dataset) == 0:
        raise ValueError(f"Split '{split}' of {dataset_name} is empty: there is nothing to work on.")
    check_audio_column(dataset, audio_column_name)
    return dataset.cast_column(audio_column_name, datasets.Audio(sampling_rate=sampling_rate, mono=True))


def check_local_source(dataset_name: str, data_dir: str | None) -> None:
    """Refuse a local path that does not exist (`datasets` would say the Hub is unreachable) and a folder that is
    not a valid audiofolder, before anything is read."""
    path = Path(dataset_name)
    if (dataset_name.startswith(("/", "./", "../", "~")) or dataset_name.endswith("/")) and not is_audio_file_source(
        dataset_name
    ):  # a path, not a Hub name (a glob's files are listed below): datasets would say the Hub is unreachable
        if not path.expanduser().exists():
            raise ValueError(f"{dataset_name} does not exist: pass an existing folder or file of audio.")
    if dataset_name == "audiofolder":
        check_audiofolder(data_dir)
    elif path.is_dir() and not is_saved_dataset(path) and not is_audio_file_source(dataset_name):
        check_audiofolder(dataset_name)  # a folder with metadata.csv: datasets reads it as an audiofolder


def read_split(
    dataset_name: str,
    dataset_config_name: str | None,
    data_dir: str | None,
    split: str,
    audio_column_name: str,
    streaming: bool,
):
    """One split of the source, as `datasets` reads it (a folder or glob of files listed here); a missing split, an
    unreachable Hub or a missing file is a one-line `ValueError`."""
    datasets = require_extra("datasets", "stats")
    path = Path(dataset_name)
    try:
        if is_audio_file_source(dataset_name):
            dataset = audio_files_dataset(dataset_name, audio_column_name)
        elif is_saved_dataset(path):
            # Memory-mapped, whatever HF_DATASETS_IN_MEMORY_MAX_SIZE says: its Arrow files identify the data.
            dataset = datasets.load_from_disk(str(path), keep_in_memory=False)
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise ValueError(f"Split '{split}' not found in {path}; it has {sorted(dataset)}.")
                dataset = dataset[split]
            if streaming:
                dataset = dataset.to_iterable_dataset()
        else:
            dataset = datasets.load_dataset(
                dataset_name, dataset_config_name, data_dir=data_dir, split=split, streaming=streaming
            )
    except ValueError as error:
        if "split" in str(error).lower():
            raise ValueError(f"Could not load split '{split}' of {dataset_name}: {error}") from error
        raise
    except (ConnectionError, FileNotFoundError, OSError) as error:
        offline = " The Hub is unreachable (HF_HUB_OFFLINE is set or no network)." if _hub_offline() else ""
        raise ValueError(
            f"Could not load the dataset '{dataset_name}'"
            f"{f' ({dataset_config_name})' if dataset_config_name else ''}: {str(error).splitlines()[0]}.{offline} "
            "Pass a Hub dataset name, `audiofolder` with --data_dir, or a directory saved with `save_to_disk`."
        ) from error
    return dataset


def draw_rows(dataset, count: int | None, seed: int):
    """At most `count` rows of `dataset`, drawn at random with `seed` as transformers' example scripts draw them (all,
    in order, when `count` is `None` or not smaller): corpora are stored sorted by class, speaker or folder, and
    their first rows would hold a few of them."""
    if count is not None and count < 1:
        raise ValueError(f"--max_train_samples / --max_eval_samples must be a positive number of clips, got {count}.")
    if count is None or dataset is None or count >= len(dataset):
        return dataset
    return shuffled(dataset, seed).select(range(count))


def cache_file(dataset, *transform: Any) -> tuple[str, str | None]:
    """The fingerprint of `transform` (what it does and its settings) applied to `dataset`, and where `datasets` is to
    write its result: a file in [`cache_folder`] (`None` for a dataset in memory, whose result stays in memory). Not
    beside the files the dataset reads, where datasets writes it: a `save_to_disk` folder is the user's, often on a
    read-only share, and not a command's to write into. [`code_fingerprint`] stands for the transform's code (datasets
    hashes an importable function by its name), and [`saved_files`] for what a saved folder holds."""
    datasets = require_extra("datasets", "stats")
    fingerprint = datasets.fingerprint.Hasher.hash(
        [code_fingerprint(), dataset._fingerprint, *transform, saved_files(dataset)]
    )
    if not dataset.cache_files:
        return fingerprint, None
    return fingerprint, str(cache_folder() / f"cache-{fingerprint}.arrow")


def cache_folder() -> Path:
    """byola_hf's folder of datasets' cache (`HF_DATASETS_CACHE/byola_hf`), made if missing: every cache the commands
    write (transforms of file-backed datasets, SUPERB corpora's splits). Each entry is named by what made it, so the
    folder may be deleted at any time between runs (it is then built again)."""
    datasets = require_extra("datasets", "stats")
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "byola_hf"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def package_fingerprint(package: Path) -> str:
    """A hash of the source files (`*.py`, names and bytes) under `package`, leaving out hidden files and folders (an
    editor's lock or backup file, which may be a broken link)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package)
        if path.is_file() and not any(part.startswith(".") for part in name.parts):
            digest.update(f"{name}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# The packages whose code computes what the commands cache besides byola_hf's: the decoders, the resampler, the
# tensors' arithmetic, the mel filters (transformers' audio_utils).
COMPUTING_PACKAGES = ("torch", "numpy", "soundfile", "soxr", "librosa", "datasets", "transformers")


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Each installed distribution's version (`None` when it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# Hashed once, as a command starts (it imports this module before any work): a file edited while a run computes does
# not give the old code's cached results the new code's name, and every rank of a run names its caches alike.
_CODE_FINGERPRINT = fingerprint(
    source=package_fingerprint(Path(__file__).resolve().parents[1]), packages=package_versions(COMPUTING_PACKAGES)
)


def code_fingerprint() -> str:
    """What the caches are named by: [`package_fingerprint`] of byola_hf's own source and the versions of the
    [`COMPUTING_PACKAGES`]. A cached log-mel, moment or corpus split made by other code (another release, an edited
    checkout, another resampler) is not read back as this code's."""
    return _CODE_FINGERPRINT


def shuffled(dataset, seed: int):
    """`dataset.shuffle(seed=seed)`, its fingerprint and index file as [`cache_file`] says."""
    fingerprint, indices = cache_file(dataset, "shuffle", seed)
    return dataset.shuffle(seed=seed, indices_cache_file_name=indices, new_fingerprint=fingerprint)


def check_audio_column(dataset, audio_column_name: str) -> None:
    """A one-line `ValueError` unless `audio_column_name` is an audio column of `dataset`."""
    datasets = require_extra("datasets", "stats")
    features = dataset.features
    if features is None or audio_column_name not in features:
        columns = sorted(features) if features is not None else dataset.column_names
        raise ValueError(
            f"The dataset has no column '{audio_column_name}'; its columns are {columns}. Pass the audio column with "
            "--audio_column_name."
        )
    if not isinstance(features[audio_column_name], datasets.Audio):
        audio_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Audio)]
        raise ValueError(
            f"Column '{audio_column_name}' is not an audio column (it is {type(features[audio_column_name]).__name__})"
            f"; audio columns: {audio_columns or 'none'}."
        )


def is_audio_file_source(dataset_name: str) -> bool:
    """Whether `dataset_name` is a glob, or a folder that is neither a saved dataset nor an audiofolder with
    metadata (a folder of audio files). An existing path is never a glob: a folder named `takes [2024]` is that
    folder, not a pattern that matches `takes 2`."""
    path = Path(dataset_name)
    if not path.exists() and any(character in dataset_name for character in "*?["):
        return True
    return path.is_dir() and not is_saved_dataset(path) and not any(path.glob("**/metadata.csv"))


def files_under(folder: str) -> list[str]:
    """The files under `folder`, recursively, hidden ones left out as a glob leaves them; each folder is listed once:
    a symlink to a parent folder or to a sibling would list its files again (a glob follows such cycles until the
    path is too long, with two of them for ever)."""
    seen, files = set(), []
    for root, folders, names in os.walk(folder, followlinks=True):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        if os.path.realpath(root) in seen:
            folders.clear()
            continue
        seen.add(os.path.realpath(root))
        files += [os.path.join(root, name) for name in names if not name.startswith(".")]
    return files


def audio_files_dataset(source: str, audio_column_name: str = "audio"):
    """A dataset of the audio files in a folder (recursively) or matching a glob: `audio` and `path` columns. A
    folder whose audio is laid out in splits ([`check_no_splits`]) is refused: read whole, `--split` would be ignored
    and every split mixed (statistics of the training split computed with the test audio)."""
    datasets = require_extra("datasets", "stats")
    names = files_under(source) if Path(source).is_dir() else glob.glob(source, recursive=True)
    check_no_undecoded_audio(names, source)
    files = sorted(name for name in names if Path(name).suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) found at {display_path(source)}.")
    if Path(source).is_dir():
        check_no_splits(source, files)
    dataset = datasets.Dataset.from_dict({audio_column_name: files, "path": files})
    return dataset.cast_column(audio_column_name, datasets.Audio())


def check_no_splits(source: str, files: list[str]) -> None:
    """Refuse a folder whose audio `files` are laid out in splits as datasets' audiofolder reads them ([`split_of`]):
    audio in a folder named a split keyword alone (`train/`, `Test/`, at any depth), or every file in folders named
    for splits (`train-clean-100/`, `test-clean/`) or named for two splits or more (`train_1.wav` beside
    `test_1.wav`). Recordings beside which one folder or file happens to name a split (`Mic test/`, `test_tone.wav`)
    are no split layout."""
    relative = [Path(file).relative_to(source) for file in files]
    folder_of = {parts: split_folder(parts) for parts in {path.parent.parts for path in relative}}
    folders = {folder for folder, _ in folder_of.values() if folder}
    named = {path.name: split_of(path.name, folder=False) for path in relative if not folder_of[path.parent.parts][0]}
    exact = any(alone for _, alone in folder_of.values())
    whole = None not in named.values() and (folders or len(set(named.values())) > 1)
    if not (exact or whole):
        return
    raise ValueError(split_layout_message(display_path(str(Path(source))), sorted(folders), named))


def split_layout_message(shown: str, folders: list[str], named: dict[str, str | None]) -> str:
    """[`check_no_splits`]' refusal of the folder `shown`: its split `folders`, else its files `named` for splits,
    and the ways to read it (audiofolder's `--split` where audiofolder reads those names: lower case only)."""
    examples = sorted({split: name for name, split in named.items()}.values())  # a file of each split
    found = f"split folders ({', '.join(folders)})" if folders else f"files named for splits ({', '.join(examples)})"
    read_one = f"read one with --dataset_name audiofolder --data_dir {shown} --split NAME (train, validation or test)"
    read_one += " or pass its folder" if folders else ""
    if any(name != name.lower() for name in [Path(folder).name for folder in folders] or named):
        read_one = f"pass the folder of one split (such as {folders[0]}/)" if folders else "pass one split's files"
    return f"{shown} holds {found}: {read_one}, or pass a glob such as '{shown}/**/*.wav' to read every file."


def split_folder(parts: tuple[str, ...]) -> tuple[str | None, bool]:
    """The folder of `parts` (a file's, from the source down) named for a split ([`split_of`]) as a path, the first
    named a split keyword alone if one is, else the first (`None` when none is); and whether one is alone."""
    named = [index for index, part in enumerate(parts) if split_of(part, folder=True)]
    alone = [index for index in named if parts[index].lower() in split_of_keywords()]
    first = (alone or named or [None])[0]
    return (None if first is None else str(Path(*parts[: first + 1]))), bool(alone)


def split_of(name: str, folder: bool) -> str | None:
    """The split datasets' audiofolder reads a folder or file `name` as (one of its split keywords alone, for a
    folder, or beside one of its separators: `test-clean`, `dev_2`, `train_0001.wav`), in any case; `None`."""
    lower = name.lower()
    return next((split for split, pattern in split_patterns(folder).items() if pattern.match(lower)), None)


@functools.cache
def split_of_keywords() -> frozenset[str]:
    """datasets' split keywords (`train`, `training`, `validation`, `valid`, `dev`, `val`, `test`, ...)."""
    keywords = require_extra("datasets", "stats").data_files.SPLIT_KEYWORDS
    return frozenset(word for words in keywords.values() for word in words)


@functools.cache
def split_patterns(folder: bool) -> dict[str, re.Pattern]:
    """[`split_of`]'s pattern of each split, from datasets' own split keywords and separators."""
    keywords = require_extra("datasets", "stats").data_files
    separator = f"[{keywords.NON_WORDS_CHARS}]"
    patterns = {}
    for split, words in keywords.SPLIT_KEYWORDS.items():
        globs = [f"{word}{separator}*" for word in words] + [f"*{separator}{word}{separator}*" for word in words]
        globs += [*words, *(f"*{separator}{word}" for word in words)] if folder else []
        patterns[str(split)] = re.compile("|".join(fnmatch.translate(pattern) for pattern in globs))
    return patterns


def check_no_undecoded_audio(names: list[str], source: str) -> None:
    """Refuse a folder (or glob) holding audio in a format soundfile cannot decode (`.m4a`, ...): the command would
    read the other files alone, without a word."""
    undecoded = sorted(Path(name).name for name in names if Path(name).suffix.lower() in UNDECODED_AUDIO_EXTENSIONS)
    if undecoded:
        raise ValueError(
            f"{display_path(source)} holds {len(undecoded)} audio file(s) soundfile cannot decode "
            f"({', '.join(undecoded[:3])}{' ...' if len(undecoded) > 3 else ''}), which would be left out: convert "
            f"them (e.g. `ffmpeg -i clip.m4a clip.wav`) or move them out ({', '.join(AUDIO_EXTENSIONS)} are read)."
        )


def check_data_dir_use(dataset_name: str, data_dir: str | None) -> None:
    """Refuse `--data_dir` beside a source that does not read it (a folder or glob of audio files, a `save_to_disk`
    folder): the command would read `dataset_name` and ignore the folder the user meant."""
    if dataset_name == "audiofolder" or data_dir is None:
        return
    if is_audio_file_source(dataset_name) or is_saved_dataset(Path(dataset_name)):
        raise ValueError(
            f"--data_dir {display_path(data_dir)} is not read with --dataset_name {display_path(dataset_name)} (a "
            "folder, glob or saved dataset is read as it is): drop --data_dir, or pass --dataset_name audiofolder "
            "to read that folder."
        )


def check_read_whole(source: str, dataset_config_name: str | None, split: str) -> None:
    """Refuse a split (other than the default `train`) or a configuration beside a source that has neither (`source`
    names it: a folder or glob of audio files, a saved dataset without splits, a task CSV whose `split` column says
    the splits): it is read whole, so the command would use other clips than the user meant (a `test` split that is
    the training clips)."""
    for flag, value, default in (("split", split, "train"), ("dataset_config_name", dataset_config_name, None)):
        if value != default:
            raise ValueError(
                f"--{flag} {value} is not read with {source}, which has no splits or configurations (it is read "
                f"whole): drop --{flag}, or pass a dataset that has them."
            )


def check_audiofolder(data_dir: str | None) -> None:
    """`audiofolder` needs `data_dir`, and reads fewer file types than soundfile: refuse a folder whose audio it
    would silently leave out (statistics and embeddings would come from different files)."""
    if data_dir is None:
        raise ValueError(
            "--dataset_name audiofolder needs --data_dir, the folder to read (it would scan the current one)."
        )
    if not Path(data_dir).is_dir():
        raise ValueError(f"--data_dir {display_path(data_dir)} is not a folder.")
    if any(character in str(data_dir) for character in "*?["):
        # datasets lists an audiofolder with a glob of its path: `takes[1]` would read the files of `takes1`.
        raise ValueError(
            f"datasets' audiofolder reads {display_path(data_dir)} as a pattern (it holds *, ? or [), which can match "
            "other folders: rename the folder, or link it under a name without those characters and pass that."
        )
    from datasets.packaged_modules.audiofolder.audiofolder import AudioFolder

    names = files_under(data_dir)
    check_no_undecoded_audio(names, data_dir)
    check_metadata_beside_splits(data_dir, names, AudioFolder.METADATA_FILENAMES)
    skipped = sorted(
        Path(name).name
        for name in names
        if Path(name).suffix.lower() in AUDIO_EXTENSIONS and Path(name).suffix.lower() not in AudioFolder.EXTENSIONS
    )
    if skipped:
        raise ValueError(
            f"datasets' audiofolder would leave out {len(skipped)} audio file(s) in {display_path(data_dir)} "
            f"({', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}): convert them (e.g. to .ogg or .wav), or "
            "pass the folder itself as --dataset_name to read every audio file."
        )


def check_metadata_beside_splits(data_dir: str, names: list[str], metadata_names: list[str]) -> None:
    """Refuse an audiofolder whose metadata file lies at its top while its audio lies in split folders: datasets
    reads a metadata file only inside each split's folder, and silently gave every clip its folder's name as label
    (`train`, `test`), the metadata's columns dropped."""
    metadata = [name for name in metadata_names if (Path(data_dir) / name).is_file()]
    parts = {Path(name).relative_to(data_dir).parts for name in names if Path(name).suffix.lower() in AUDIO_EXTENSIONS}
    folders = sorted({split_folder(path[:-1])[0] for path in parts} - {None})
    if metadata and folders:
        raise ValueError(
            f"{display_path(data_dir)}/{metadata[0]} lies beside split folders ({', '.join(folders[:3])}), and "
            "datasets' audiofolder reads a metadata file only inside each split's folder (it would label the clips by "
            f"their folder): move each split's rows into {metadata[0]} in its folder, file names relative to it."
        )


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / name).exists() for name in ("dataset_dict.json", "state.json"))


def load_checked_model(model_name_or_path: str):
    """`AutoModel.from_pretrained(model_name_or_path)` (the encoder, for an encoder's folder), refusing in one line a
    folder whose weights are missing, truncated, of other shapes or not finite: the model's own errors as they are,
    any other (safetensors, torch and transformers raise many types for damaged or absent files) naming the folder."""
    from transformers import AutoModel

    try:
        model, info = AutoModel.from_pretrained(model_name_or_path, output_loading_info=True)
    except ValueError:  # the model's own (mismatched, damaged or non-finite weights): one line naming the fixes
        raise
    except Exception as error:
        message = " ".join(str(error).split())[:300] or type(error).__name__
        raise ValueError(
            f"The weights in {model_name_or_path} cannot be loaded ({message}): convert them again."
        ) from None
    missing = [key for key in info["missing_keys"] if not key.endswith("num_batches_tracked")]
    if missing:  # weights of other shapes: refused by from_pretrained
        raise ValueError(
            f"The weights in {model_name_or_path} do not fit its config ({', '.join(missing[:3])}): convert them "
            "again."
        )
    non_finite = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    if non_finite:
        raise ValueError(f"The weights in {model_name_or_path} hold NaN or infinity ({', '.join(non_finite[:3])}).")
    return model


def load_byola_front_end(model_name_or_path: str) -> tuple[BYOLAConfig, BYOLAFeatureExtractor]:
    """The model's config and its feature extractor (built from the config when the directory has none)."""
    from transformers import AutoConfig, AutoFeatureExtractor

    if not Path(model_name_or_path).exists() and (_hub_offline() or model_name_or_path.startswith((".", "/", "~"))):
        raise ValueError(
            f"No model folder at {display_path(model_name_or_path)}: pass a directory written by byola-convert (or a "
            "Hub model id, with the network on)."
        )
    try:
        config = AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Could not load a BYOL-A model from '{model_name_or_path}': {str(error).splitlines()[0]} Pass a "
            "directory written by `byola-convert` (or a Hub model id)."
        ) from error
    if isinstance(config, BYOLAPreTrainingConfig):
        raise PretrainingCheckpointError(model_name_or_path)
    if not isinstance(config, BYOLAConfig):
        raise ValueError(f"'{model_name_or_path}' holds a '{config.model_type}' model, not a BYOL-A ('byola') one.")
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path)
    except OSError:
        feature_extractor = BYOLAFeatureExtractor.from_model_config(config)
    if not feature_extractor.matches_model_config(config):
        raise ValueError(
            f"The feature extractor saved in '{model_name_or_path}' does not match its config's front-end; "
            "re-create it with `BYOLAFeatureExtractor.from_model_config(config)`."
        )
    return config, feature_extractor


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# The EVAR metadata column holding each clip's path relative to the task's audio folder.
FILE_COLUMN = "file_name"


def load_source(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    audio_column_name: str = "audio",
    sampling_rate: int = 16000,
    metadata_csv: str | None = None,
):
    """
    The dataset to embed (see the module doc), its `audio_column_name` column undecoded.

    Raises:
        ValueError: neither or both of `dataset_name` and `metadata_csv`, no audio files found, a CSV without
            `file_name` or naming missing files, and what [`~byola_hf.tools.data.load_audio_dataset`] refuses.
    """
    datasets = require_extra("datasets", "stats")
    if (dataset_name is None) == (metadata_csv is None):
        raise ValueError("Give either --dataset_name (a dataset or audio folder) or --metadata_csv (a task CSV).")
    if metadata_csv is not None:
        check_read_whole("--metadata_csv (its split column says the splits)", dataset_config_name, split)
        return metadata_csv_source(metadata_csv, data_dir, audio_column_name)
    dataset = load_audio_dataset(dataset_name, dataset_config_name, data_dir, split, audio_column_name, sampling_rate)
    if is_audio_file_source(dataset_name):  # a folder or glob of files: its `path` column repeats the audio's
        dataset = dataset.remove_columns("path")
    return dataset.cast_column(audio_column_name, datasets.Audio(decode=False))


def metadata_csv_source(metadata_csv: str, data_dir: str | None, audio_column_name: str = "audio"):
    """An EVAR task CSV as a dataset: every column kept as it is, plus `audio_column_name` holding `data_dir/file_name`
    (the CSV's own folder when `data_dir` is not given). Missing files are listed in one error."""
    datasets = require_extra("datasets", "stats")
    pandas = require_extra("pandas", "stats")
    csv = Path(metadata_csv)
    if not csv.is_file():
        raise ValueError(f"--metadata_csv {display_path(csv)} is not a file: check the path.")
    try:
        table = pandas.read_csv(csv, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pandas.errors.ParserError) as error:
        raise ValueError(f"Could not read {display_path(csv)} as CSV: {str(error).splitlines()[0]}") from None
    if FILE_COLUMN not in table.columns:
        raise ValueError(
            f"{display_path(csv)} has no '{FILE_COLUMN}' column (EVAR's task CSVs name each clip there, relative to "
            f"--data_dir); its columns are {list(table.columns)}."
        )
    table = rows_with_a_split(table, csv)
    if len(table) == 0:
        raise ValueError(f"{display_path(csv)} lists no clips.")
    if audio_column_name in table.columns:
        raise ValueError(
            f"{display_path(csv)} already has a column '{audio_column_name}': pass another --audio_column_name."
        )
    root = Path(data_dir) if data_dir is not None else csv.parent
    paths = [str(root / str(name)) for name in table[FILE_COLUMN]]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(paths)} files named in {display_path(csv)} are not under {display_path(root)}"
            f" (first: {display_path(missing[0])}): pass the task's audio folder as --data_dir."
        )
    table[audio_column_name] = paths
    dataset = datasets.Dataset.from_pandas(table, preserve_index=False)
    return dataset.cast_column(audio_column_name, datasets.Audio(decode=False))


def rows_with_a_split(table, csv: Path):
    """`table` without the rows whose `split` cell is empty, with a warning that counts them: EVAR leaves them out of
    every split (its GTZAN CSV gives no split to the 70 clips outside the fault-filtered lists)."""
    if "split" not in table.columns:
        return table
    unsplit = table["split"].astype(str).str.strip() == ""
    if unsplit.any() and not unsplit.all():
        logger.warning(
            f"{int(unsplit.sum())} of the {len(table)} clips of {display_path(csv)} have no split: left out, as EVAR "
            "leaves them out."
        )
    return table[~unsplit].reset_index(drop=True) if not unsplit.all() else table


def source_record(dataset, audio_column_name: str) -> dict[str, Any]:
    """What a run records of the data it reads: the clip count and [`source_fingerprint`], the audio read
    undecoded (a decoding column is cast, never decoded)."""
    datasets = require_extra("datasets", "stats")
    undecoded = dataset.cast_column(audio_column_name, datasets.Audio(decode=False))
    return {"clips": len(dataset), "fingerprint": source_fingerprint(undecoded, audio_column_name)}


def source_fingerprint(dataset, audio_column_name: str) -> str:
    """A hash of what the examples of `dataset` (its audio column undecoded) are: every non-audio column's values and,
    per clip, its path with the file's size and modification time (local files: a file written again under its name, as
    the same length of audio, keeps its size). Clips stored in the dataset (a Hub or `save_to_disk` dataset, or one
    built in memory) are covered by `datasets`' own fingerprint of the dataset, made from its data files and revision
    on loading (from the table itself in memory) and carried through every transform, with the Arrow files of a saved
    folder ([`saved_files`]). Their bytes are not hashed again at each start. Reads the table in batches, never the
    decoded audio."""
    import pyarrow.compute as pc

    digest = hashlib.sha256()
    others = [name for name in dataset.column_names if name != audio_column_name]
    digest.update(json.dumps([others, str(dataset.features)]).encode())
    stored = False
    for batch in dataset.with_format("arrow").iter(batch_size=1000):
        digest.update(json.dumps({name: batch[name].to_pylist() for name in others}, default=str).encode())
        audio = batch[audio_column_name]
        held = pc.fill_null(pc.greater(pc.binary_length(pc.struct_field(audio, "bytes")), 0), False).to_pylist()
        for path, in_dataset in zip(pc.struct_field(audio, "path").to_pylist(), held):
            stored |= in_dataset
            if not in_dataset:
                digest.update(file_stamp(path or "").encode())
    if stored:
        digest.update(json.dumps([dataset._fingerprint, saved_files(dataset)]).encode())
    return digest.hexdigest()[:16]


def file_stamp(path: str, name: str | None = None) -> str:
    """`name` (default: the file's absolute path) with the file's size and modification time (`missing` when there
    is no such file)."""
    stat = os.stat(path) if os.path.isfile(path) else None
    return f"{name or os.path.abspath(path)}:{f'{stat.st_size}:{stat.st_mtime_ns}' if stat else 'missing'}"


def saved_files(dataset) -> list[str]:
    """[`file_stamp`] of each Arrow file `dataset`'s table reads from a `save_to_disk` folder (its `state.json` beside
    it), by file name: `save_to_disk` keeps the fingerprint of a dataset of paths while it stores their audio, so a
    clip written again and saved again, into the same folder or another, keeps it. datasets' own cache files are
    left out (its fingerprint names them; a cache built again, or another machine's, holds the same data), and so is
    the folder (a saved dataset moved or copied is the same data)."""
    from datasets.table import list_table_cache_files

    files = sorted(set(list_table_cache_files(dataset.data)))
    return [file_stamp(name, Path(name).name) for name in files if (Path(name).parent / "state.json").is_file()]

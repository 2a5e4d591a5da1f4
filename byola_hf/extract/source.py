"""What `byola-extract` embeds: a table of examples whose audio column is left undecoded, and its fingerprint.

Sources: a Hub dataset, `audiofolder` with `data_dir`, a `save_to_disk` directory, a folder or glob of audio files
(`byola_hf.audio.AUDIO_EXTENSIONS`), or an EVAR-style task CSV (`file_name` relative to `data_dir`, and any other
columns: `label`, `split` or `fold`...), which are all kept in the output. The audio stays undecoded
(`{"path", "bytes"}`) so that each clip is decoded in a DataLoader worker and a bad file is reported by its path.
"""

import hashlib
import json
import os
from pathlib import Path

from ..audio import display_path
from ..extras import require_extra
from ..tools.data import audio_files_dataset, check_data_dir_use, is_audio_file_source, load_audio_dataset


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
        return metadata_csv_source(metadata_csv, data_dir, audio_column_name)
    check_data_dir_use(dataset_name, data_dir)
    if is_audio_file_source(dataset_name):  # the files of a folder or glob, listed as every command lists them
        dataset = audio_files_dataset(dataset_name, audio_column_name).remove_columns("path")
    else:
        dataset = load_audio_dataset(
            dataset_name, dataset_config_name, data_dir, split, audio_column_name, sampling_rate
        )
    return dataset.cast_column(audio_column_name, datasets.Audio(decode=False))


def metadata_csv_source(metadata_csv: str, data_dir: str | None, audio_column_name: str = "audio"):
    """
    An EVAR task CSV as a dataset: every column kept as it is, plus `audio_column_name` holding `data_dir/file_name`
    (the CSV's own folder when `data_dir` is not given). Missing files are listed in one error.
    """
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


def source_fingerprint(dataset, audio_column_name: str) -> str:
    """
    A hash of what the examples are: every non-audio column's values and, per clip, its path with the file's size
    and modification time (local files: a file written again under its name, as the same length of audio, keeps
    its size) or a hash of its bytes (audio stored in the dataset). Reads the table in batches, never the decoded
    audio.
    """
    digest = hashlib.sha256()
    others = [name for name in dataset.column_names if name != audio_column_name]
    digest.update(json.dumps([others, str(dataset.features)]).encode())
    for batch in dataset.iter(batch_size=1000):
        digest.update(json.dumps({name: batch[name] for name in others}, default=str).encode())
        for item in batch[audio_column_name]:
            path = item.get("path") or ""
            if item.get("bytes"):
                digest.update(f"{path}:{hashlib.sha256(item['bytes']).hexdigest()}".encode())
            else:
                stat = os.stat(path) if os.path.isfile(path) else None
                written = f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "missing"
                digest.update(f"{os.path.abspath(path)}:{written}".encode())
    return digest.hexdigest()[:16]

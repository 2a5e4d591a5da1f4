"""SUPERB corpora in their native layouts, as `datasets` splits: `byola-run-superb --superb_corpus NAME`.

| corpus | task | layout under `--data_dir` | corpus files |
|---|---|---|---|
| `voxceleb1` | sid | `wav/<speaker>/<video>/<utterance>.wav` (or `*/wav/...`) | `--split_file` (`iden_split.txt`) |
| `libriphone` | pr | `train-clean-100/`, `dev-clean/`, `test-clean/` | `--lexicon` (repeatable), `--vocab_file` |
| `speech_commands` | ks | `<word>/*.wav`, `_background_noise_/` (v0.01) | `--test_dir` (the v0.01 test set) |
| `fluent_commands` | ic | `data/{train,valid,test}_data.csv`, `wavs/...` | |
| `iemocap` | er | `SessionN/dialog/EmoEvaluation/`, `SessionN/sentences/wav/` | `--fold N` (1-5) |
| `librimix` | sd | Kaldi-style `train/`, `dev/`, `test/` (`wav.scp`, `segments`, `utt2spk`) | |

The readers ([`~byola_hf.superb.corpora.readers`]) apply s3prl's split rules and label sets. The splits are saved
once under `datasets`' cache (`HF_DATASETS_CACHE/byola_hf/corpus-NAME-FINGERPRINT`), the fingerprint covering
byola_hf's code, its arguments, every listed file's path, size and modification time and every label; a changed
corpus gets a new folder, so `datasets`' own fingerprints (and the cached log-mels) follow the data.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...audio import display_path
from ...extras import require_extra
from ...tools.data import cache_folder, code_fingerprint, file_stamp
from ...tools.outputs import atomic_path, fingerprint
from .readers import READERS, CorpusRecords, CorpusRequest, Crop


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus: its SUPERB task, its label columns, the longest training clip in samples (s3prl's crop), and the
    flags of `byola-run-superb` that only its reader reads."""

    task: str
    columns: tuple[str, ...]
    train_max_samples: int | None = None
    flags: tuple[str, ...] = ()


CORPORA = {
    "voxceleb1": CorpusSpec("sid", ("label",), train_max_samples=128000, flags=("split_file",)),
    "libriphone": CorpusSpec("pr", ("phonemes",), flags=("lexicon", "vocab_file")),
    "speech_commands": CorpusSpec("ks", ("label",), flags=("test_dir",)),
    "fluent_commands": CorpusSpec("ic", ("action", "object", "location")),
    "iemocap": CorpusSpec("er", ("label",), flags=("fold",)),
    "librimix": CorpusSpec("sd", ("activity",)),
}


# The flags that choose a `datasets` source and its columns: a corpus's reader sets its own splits and columns, so
# with --superb_corpus they were ignored (--label_column_name action trained and scored all three IC slots,
# --train_split_name validation trained on the training split) or ended in a traceback (--audio_column_name).
SOURCE_FLAGS = (
    "dataset_name", "dataset_config_name", "train_split_name", "validation_split_percentage", "audio_column_name",
    "label_column_name", "text_column_name",
)  # fmt: skip


def check_corpus_flags(data_args) -> None:
    """Refuse a corpus file flag (`--split_file`, `--lexicon`, ...) given without the `--superb_corpus` whose reader
    reads it, and a `datasets` source flag ([`SOURCE_FLAGS`]) given with one: either would be ignored."""
    defaults = {field.name: field.default for field in dataclasses.fields(data_args)}
    for name, spec in CORPORA.items():
        for flag in spec.flags:
            value = getattr(data_args, flag)
            if data_args.superb_corpus != name and value not in (defaults[flag], [], None):
                raise ValueError(f"--{flag} is read by --superb_corpus {name} only, which this run is not: drop it.")
    given = [flag for flag in SOURCE_FLAGS if data_args.superb_corpus and getattr(data_args, flag) != defaults[flag]]
    if given:
        raise ValueError(
            f"--{given[0]} chooses a datasets source's splits or columns; --superb_corpus {data_args.superb_corpus} "
            "reads its own (docs/from_s3prl.md): drop it."
        )


@dataclass
class Corpus:
    """A corpus read for a run: its splits (`datasets.Dataset` with a decoded `audio` column), its [`CorpusSpec`]
    (label columns, longest training clip), and the class order per column and CTC vocabulary (s3prl's)."""

    name: str
    spec: CorpusSpec
    splits: dict[str, Any]
    label_names: dict[str, list[str]] | None
    vocabulary: list[str] | None


def corpus_request(data_args, seed: int, frames_per_second: float) -> CorpusRequest:
    """The reader's request from `byola-run-superb`'s data arguments."""
    if not data_args.data_dir:
        raise ValueError(f"--superb_corpus {data_args.superb_corpus} needs --data_dir (the corpus root).")
    root = Path(data_args.data_dir)
    if not root.is_dir():
        raise ValueError(f"--data_dir {display_path(root)} is not a folder: pass the {data_args.superb_corpus} root.")
    return CorpusRequest(
        root=root.resolve(),
        split_file=data_args.split_file,
        lexicon=list(data_args.lexicon or []),
        vocab_file=data_args.vocab_file,
        fold=data_args.fold,
        test_dir=data_args.test_dir,
        seed=seed,
        frames_per_second=frames_per_second,
    )


def records_fingerprint(name: str, request: CorpusRequest, records: CorpusRecords) -> str:
    """What the saved splits depend on: the reader, its request, and every file (path, size, modification time)."""
    files = sorted(
        {item.path if isinstance(item, Crop) else item for split in records.splits.values() for item in split["audio"]}
    )
    stats = [file_stamp(path) for path in files]
    return fingerprint(
        name=name,
        code=code_fingerprint(),
        request=vars(request),
        splits=records.splits,
        files=stats,
        label_names=records.label_names,
        vocabulary=records.vocabulary,
    )


def audio_items(audio: list, sampling_rate: int) -> list[dict[str, Any]]:
    """`datasets.Audio` items: a file by its path; a [`Crop`] as the bytes of a WAV of it (kept in the saved split)."""
    import io

    import soundfile as sf

    from ...audio import read_audio_file, resample

    items = []
    for item in audio:
        if not isinstance(item, Crop):
            items.append({"path": item, "bytes": None})
            continue
        waveform, rate = read_audio_file(item.path)
        start = item.start * sampling_rate // rate
        waveform = resample(waveform, rate, sampling_rate)[start : start + item.samples * sampling_rate // rate]
        buffer = io.BytesIO()
        sf.write(buffer, waveform, sampling_rate, format="WAV", subtype="FLOAT")
        items.append({"path": f"{Path(item.path).stem}-{item.start}.wav", "bytes": buffer.getvalue()})
    return items


def save_splits(records: CorpusRecords, folder: Path, sampling_rate: int) -> None:
    """Save the records as a `DatasetDict` at `folder`, atomically (an interrupted build leaves nothing that loads)."""
    datasets = require_extra("datasets", "superb")
    splits = {}
    for name, columns in records.splits.items():
        columns = {**columns, "audio": audio_items(columns["audio"], sampling_rate)}
        splits[name] = datasets.Dataset.from_dict(columns).cast_column("audio", datasets.Audio())
    with atomic_path(folder) as staged:
        datasets.DatasetDict(splits).save_to_disk(str(staged))


def load_corpus(data_args, config, seed: int) -> Corpus:
    """Read `--superb_corpus` under `--data_dir` (cached, fingerprinted; see the module doc) for a model `config`."""
    datasets = require_extra("datasets", "superb")
    name = data_args.superb_corpus
    request = corpus_request(data_args, seed, config.frames_per_second)
    records = READERS[name](request)
    empty = [split for split, columns in records.splits.items() if not columns["audio"]]
    if empty:  # datasets cannot even save an empty split (a ZeroDivisionError)
        raise ValueError(f"The {name} corpus under {data_args.data_dir} has no clips in its {', '.join(empty)} split.")
    key = records_fingerprint(name, request, records)
    folder = cache_folder() / f"corpus-{name}-{key}"
    if not folder.is_dir():
        save_splits(records, folder, config.sampling_rate)
    splits = datasets.load_from_disk(str(folder))
    audio = datasets.Audio(sampling_rate=config.sampling_rate, mono=True)
    return Corpus(
        name=name,
        spec=CORPORA[name],
        splits={split: splits[split].cast_column("audio", audio) for split in splits},
        label_names=records.label_names,
        vocabulary=records.vocabulary,
    )

"""Readers of the SUPERB corpora in their native layouts, with s3prl's split rules and label sets.

Each reader turns a corpus root into [`CorpusRecords`]: per split, the audio paths (or [`Crop`]s of a file) and the
label columns, plus the class order or token vocabulary s3prl uses. Anything missing or malformed is a `ValueError`
of one line naming the file and what was expected. The facts (layouts, rules, label sets) are s3prl's at commit
4f5ad57d, `s3prl/downstream/{voxceleb1,ctc,speech_commands,fluent_commands,emotion,diarization}/`; docs/from_s3prl.md
says where byola_hf differs.
"""

import csv
import hashlib
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...audio import display_path


@dataclass(frozen=True)
class Crop:
    """`samples` samples of `path` from sample `start`: a clip cut from a longer recording (Speech Commands'
    `_silence_`), written into the corpus cache as its own file."""

    path: str
    start: int
    samples: int


@dataclass
class CorpusRequest:
    """What a reader reads: the corpus root, the corpus files named on the command line, the seed of any random
    choice, and the model's output frame rate (frame labels)."""

    root: Path
    split_file: str | None = None
    lexicon: list[str] = field(default_factory=list)
    vocab_file: str | None = None
    fold: int = 1
    test_dir: str | None = None
    seed: int = 0
    frames_per_second: float = 12.5


@dataclass
class CorpusRecords:
    """Per split (`train`, `validation`, `test`), column -> values (`audio`: a path or a [`Crop`]); the class names
    per label column in s3prl's order; the CTC token vocabulary, when the corpus fixes one."""

    splits: dict[str, dict[str, list]]
    label_names: dict[str, list[str]] | None = None
    vocabulary: list[str] | None = None


def require_file(path: Path, what: str) -> Path:
    """`path`, or a one-line error saying what the file should be."""
    if not path.is_file():
        raise ValueError(f"Missing {display_path(path)}: expected {what}.")
    return path


def read_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a text file with their 1-based numbers, stripped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{display_path(path)} is not UTF-8 text ({error.reason} at byte {error.start}).") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def refuse_duplicates(keys: list[tuple[str, str]], what: str) -> None:
    """Refuse a corpus listing one `what` twice: `keys` are `(id, where it is listed)` pairs. A clip listed twice is
    counted twice (weighted, or scored twice), and one listed in two splits is trained on and then tested."""
    first: dict[str, str] = {}
    for key, where in keys:
        if key in first:
            raise ValueError(f"{what} {key} is listed twice ({first[key]}; {where}): list each once, in one split.")
        first[key] = where


# VoxCeleb1 (SID) -----------------------------------------------------------------------------------------------------

VOXCELEB_SPLITS = {"1": "train", "2": "validation", "3": "test"}
VOXCELEB_LINE = "'<1|2|3> <speaker>/<video>/<utterance>.wav'"


def read_voxceleb1(request: CorpusRequest) -> CorpusRecords:
    """VoxCeleb1 speaker identification: the split file's lines `<1|2|3> <speaker>/<video>/<utterance>.wav` (1 train, 2
    dev, 3 test); the WAV under `ROOT/wav/` or `ROOT/*/wav/` (the dev and test archives side by side, as s3prl
    searches); the label is the speaker folder; classes sorted by speaker id (s3prl's `id10001` = class 0)."""
    root = request.root
    split_file = Path(request.split_file) if request.split_file else root / "iden_split.txt"
    require_file(split_file, f"the VoxCeleb1 split file (lines {VOXCELEB_LINE}; pass it with --split_file)")
    wav_dirs = [path for path in [root / "wav", *sorted(root.glob("*/wav"))] if path.is_dir()]
    if not wav_dirs:
        raise ValueError(f"No wav/ folder in {display_path(root)} or its subfolders: expected ROOT/wav/<speaker>/...")
    splits: dict[str, dict[str, list]] = {name: {"audio": [], "label": []} for name in VOXCELEB_SPLITS.values()}
    lines = read_lines(split_file)
    for number, line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] not in VOXCELEB_SPLITS or parts[1].count("/") != 2:
            raise ValueError(f"{display_path(split_file)} line {number}: expected {VOXCELEB_LINE}, got '{line[:80]}'.")
    where = display_path(split_file)
    refuse_duplicates([(line.split()[1], f"{where} line {number}") for number, line in lines], "The clip")
    for number, line in lines:
        parts = line.split()
        found = next((folder / parts[1] for folder in wav_dirs if (folder / parts[1]).is_file()), None)
        if found is None:
            raise ValueError(
                f"{display_path(split_file)} line {number} names {parts[1]}, which is in none of "
                f"{', '.join(display_path(folder) for folder in wav_dirs)}."
            )
        split = splits[VOXCELEB_SPLITS[parts[0]]]
        split["audio"].append(str(found))
        split["label"].append(parts[1].split("/")[0])
    empty = [f"{number} ({name})" for number, name in VOXCELEB_SPLITS.items() if not splits[name]["audio"]]
    if empty:
        raise ValueError(
            f"{display_path(split_file)} lists no clip of split {', '.join(empty)}: it needs lines {VOXCELEB_LINE} "
            "of every split (1 train, 2 dev, 3 test); is it the whole iden_split.txt?"
        )
    # The classes are the training speakers: a speaker only in dev or test is refused by the recipe's check of
    # labels unseen in training (as for every corpus), instead of widening the head with a class never trained.
    speakers = sorted(set(splits["train"]["label"]))
    return CorpusRecords(splits, {"label": speakers})


# LibriSpeech phonemes (PR) -------------------------------------------------------------------------------------------

LIBRISPEECH_SPLITS = {"train": "train-clean-100", "validation": "dev-clean", "test": "test-clean"}
ARPABET_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
ARPABET_CONSONANTS = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()


def default_phonemes() -> list[str]:
    """s3prl's phoneme vocabulary (`downstream/ctc/vocab/phoneme.txt`): silence and spoken noise, every ARPAbet vowel
    with stress 0, 1 and 2, and the consonants, in alphabetical order."""
    stressed = [f"{vowel}{stress}" for vowel in ARPABET_VOWELS for stress in "012"]
    return ["SIL", "SPN", *sorted(stressed + ARPABET_CONSONANTS)]


def read_vocabulary(path: str | None) -> tuple[list[str], str]:
    """The phoneme vocabulary (one token per line) and how messages name it."""
    if path is None:
        return default_phonemes(), "s3prl's phoneme vocabulary"
    tokens = [line for _, line in read_lines(require_file(Path(path), "a phoneme vocabulary, one phoneme per line"))]
    if len(set(tokens)) != len(tokens) or any(" " in token for token in tokens):
        raise ValueError(f"{display_path(path)}: expected one distinct phoneme per line.")
    return tokens, display_path(path)


def read_lexicons(paths: list[str], vocabulary: list[str], vocabulary_name: str) -> dict[str, list[str]]:
    """Word -> phonemes from lexicon lines `WORD PH1 PH2 ...` (tabs allowed); a word listed several times keeps its
    first pronunciation (s3prl's rule); every phoneme must be in the vocabulary."""
    if not paths:
        raise ValueError(
            "libriphone needs --lexicon (repeatable): s3prl's librispeech-lexicon-200k-g2p.txt and "
            "librispeech-lexicon-allothers-g2p.txt, lines 'WORD PH1 PH2 ...'."
        )
    known, words = set(vocabulary), {}
    for path in paths:
        lexicon = require_file(Path(path), "a pronunciation lexicon, lines 'WORD PH1 PH2 ...'")
        for number, line in read_lines(lexicon):
            word, *phonemes = line.split()
            if not phonemes:
                raise ValueError(f"{display_path(lexicon)} line {number}: expected 'WORD PH1 PH2 ...', got '{line}'.")
            unknown = [phoneme for phoneme in phonemes if phoneme not in known]
            if unknown:
                raise ValueError(
                    f"{display_path(lexicon)} line {number}: phoneme '{unknown[0]}' of {word} is not in "
                    f"{vocabulary_name} (pass the matching list with --vocab_file)."
                )
            words.setdefault(word, phonemes)
    return words


def read_librispeech_split(folder: Path, lexicon: dict[str, list[str]]) -> dict[str, list]:
    """Every utterance of a LibriSpeech split folder (`<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` beside the
    `.flac` files) with its words as phonemes."""
    if not folder.is_dir():
        raise ValueError(f"Missing {display_path(folder)}: expected a LibriSpeech split folder <speaker>/<chapter>/.")
    records: dict[str, list] = {"audio": [], "phonemes": [], "text": []}
    transcripts = sorted(folder.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise ValueError(f"No <speaker>/<chapter>/*.trans.txt transcript in {display_path(folder)}.")
    untranscribed = sorted({path.parent for path in folder.glob("*/*/*.flac")} - {path.parent for path in transcripts})
    if untranscribed:
        raise ValueError(
            f"{display_path(untranscribed[0])} holds FLAC files but no <speaker>-<chapter>.trans.txt: restore the "
            "chapter's transcript (its utterances would be left out without a word)."
        )
    lines = [(transcript, number, line) for transcript in transcripts for number, line in read_lines(transcript)]
    keys = [(line.split()[0], f"{display_path(path)} line {number}") for path, number, line in lines]
    refuse_duplicates(keys, "The utterance")
    for transcript, number, line in lines:
        utterance, *words = line.split()
        audio = transcript.parent / f"{utterance}.flac"
        if not audio.is_file():
            raise ValueError(
                f"{display_path(transcript)} line {number} names {utterance}, but {audio.name} is missing."
            )
        missing = next((word for word in words if word not in lexicon), None)
        if missing is not None:
            raise ValueError(
                f"The word {missing} of {display_path(transcript)} (utterance {utterance}) is in no lexicon: "
                "add it to one passed with --lexicon."
            )
        records["audio"].append(str(audio))
        records["phonemes"].append(" ".join(phoneme for word in words for phoneme in lexicon[word]))
        records["text"].append(" ".join(words))
    # s3prl takes every FLAC of the split: one that no transcript line names would be left out without a word.
    unlisted = sorted(set(folder.rglob("*.flac")) - {Path(path) for path in records["audio"]})
    if unlisted:
        raise ValueError(
            f"{display_path(unlisted[0])} is in no line of a .trans.txt: restore its transcript line (or remove the "
            "file)."
        )
    return records


def read_libriphone(request: CorpusRequest) -> CorpusRecords:
    """LibriSpeech phoneme recognition: train-clean-100 / dev-clean / test-clean, words to phonemes by the lexicons,
    tokens from the phoneme vocabulary."""
    vocabulary, vocabulary_name = read_vocabulary(request.vocab_file)
    lexicon = read_lexicons(request.lexicon, vocabulary, vocabulary_name)
    splits = {
        split: read_librispeech_split(request.root / folder, lexicon) for split, folder in LIBRISPEECH_SPLITS.items()
    }
    return CorpusRecords(splits, vocabulary=vocabulary)


# Speech Commands v0.01 (KS) ------------------------------------------------------------------------------------------

KS_CLASSES = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]
BACKGROUND = "_background_noise_"
MAX_PER_CLASS = 2**27 - 1  # Speech Commands' split rule: a hash of the speaker, as its README defines


def speech_commands_split(file_name: str) -> str | None:
    """`train`, `validation` or `None` (the 10% s3prl discards) by the hash of the file's speaker part, as s3prl's
    `split_dataset` (and the dataset's own `validation_list.txt`) assign them."""
    speaker = re.sub(r"_nohash_.*$", "", file_name)
    hashed = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percentage = (hashed % (MAX_PER_CLASS + 1)) * (100.0 / MAX_PER_CLASS)
    return "validation" if percentage < 10 else None if percentage < 20 else "train"


def silence_crops(noises: list[Path], count: int, rng: random.Random) -> list[Crop]:
    """`count` one-second crops of the background recordings (one second at each file's own rate), spread over the
    files in turn, at random offsets."""
    import soundfile as sf

    infos = {path: sf.info(str(path)) for path in noises}
    crops = []
    for index in range(count):
        path = noises[index % len(noises)]
        rate, frames = infos[path].samplerate, infos[path].frames
        if frames < rate:
            raise ValueError(f"{display_path(path)} is shorter than one second: _silence_ clips are 1 s crops of it.")
        crops.append(Crop(str(path), rng.randint(0, frames - rate), rate))
    return crops


def read_speech_commands(request: CorpusRequest) -> CorpusRecords:
    """Speech Commands v0.01, 12 classes: the 10 words, `_unknown_` (every other word folder) and `_silence_` (1 s
    crops of `_background_noise_`); train/validation by the speaker hash; test from the separate v0.01 test set
    (`--test_dir`, one folder per class). s3prl reads one fresh crop per background file each time and balances the
    classes with a weighted sampler; here `_silence_` gets as many fixed crops as the average word has clips."""
    root = request.root
    noises = sorted((root / BACKGROUND).glob("*.wav"))
    if not noises:
        raise ValueError(f"No {BACKGROUND}/*.wav in {display_path(root)}: expected Speech Commands v0.01's layout.")
    splits: dict[str, dict[str, list]] = {split: {"audio": [], "label": []} for split in ("train", "validation")}
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and path.name != BACKGROUND):
        label = folder.name if folder.name in KS_CLASSES[:10] else "_unknown_"
        for audio in sorted(folder.glob("*.wav")):
            split = speech_commands_split(audio.name)
            if split is not None:
                splits[split]["audio"].append(str(audio))
                splits[split]["label"].append(label)
    rng = random.Random(request.seed)
    for name, split in splits.items():
        if not split["audio"]:
            raise ValueError(f"No word clips fall in the {name} split of {display_path(root)}: expected <word>/*.wav.")
        words = [label for label in split["label"] if label != "_unknown_"]
        count = max(1, round(len(words) / max(1, len(set(words)))))
        split["audio"] += silence_crops(noises, count, rng)
        split["label"] += ["_silence_"] * count
    if request.test_dir:
        splits["test"] = read_class_folders(Path(request.test_dir), KS_CLASSES)
    return CorpusRecords(splits, {"label": KS_CLASSES})


def read_class_folders(root: Path, classes: list[str]) -> dict[str, list]:
    """A test set of one folder of WAVs per class (Speech Commands' v0.01 test set)."""
    if not root.is_dir():
        raise ValueError(
            f"--test_dir {display_path(root)} is not a folder: expected one <class>/*.wav folder per class."
        )
    records: dict[str, list] = {"audio": [], "label": []}
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        if folder.name not in classes:
            raise ValueError(f"{display_path(folder)}: '{folder.name}' is not a class ({', '.join(classes)}).")
        files = sorted(folder.glob("*.wav"))
        records["audio"] += [str(path) for path in files]
        records["label"] += [folder.name] * len(files)
    if not records["audio"]:
        raise ValueError(f"No <class>/*.wav in --test_dir {display_path(root)}.")
    return records


# Fluent Speech Commands (IC) -----------------------------------------------------------------------------------------

FLUENT_SLOTS = ["action", "object", "location"]
FLUENT_SPLITS = {"train": "train_data.csv", "validation": "valid_data.csv", "test": "test_data.csv"}


def read_fluent_csv(root: Path, name: str) -> dict[str, list]:
    """One of `data/{train,valid,test}_data.csv`: `path` (relative to the root) and the three slots."""
    path = require_file(root / "data" / name, "a Fluent Speech Commands CSV with path, action, object, location")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = [column for column in ["path", *FLUENT_SLOTS] if not rows or column not in rows[0]]
    if missing:
        raise ValueError(
            f"{display_path(path)} has no column {', '.join(missing)}: expected path, action, object, location."
        )
    records: dict[str, list] = {"audio": [], "listed": [], **{slot: [] for slot in FLUENT_SLOTS}}
    for number, row in enumerate(rows, start=2):
        audio = root / row["path"]
        if not audio.is_file():
            raise ValueError(
                f"{display_path(path)} line {number} names {row['path']}, which is not in {display_path(root)}."
            )
        records["audio"].append(str(audio))
        records["listed"].append(f"{display_path(path)} line {number}")
        for slot in FLUENT_SLOTS:
            records[slot].append(row[slot])
    return records


def read_fluent_commands(request: CorpusRequest) -> CorpusRecords:
    """Fluent Speech Commands: three slots, each slot's classes in order of first appearance in training (s3prl)."""
    splits = {split: read_fluent_csv(request.root, name) for split, name in FLUENT_SPLITS.items()}
    listed = [(audio, where) for split in splits.values() for audio, where in zip(split["audio"], split.pop("listed"))]
    refuse_duplicates(listed, "The clip")
    names = {slot: list(dict.fromkeys(value for value in splits["train"][slot] if value)) for slot in FLUENT_SLOTS}
    return CorpusRecords(splits, names)


# IEMOCAP (ER) --------------------------------------------------------------------------------------------------------

EMOTIONS = ["neu", "hap", "ang", "sad"]
MERGED = {"exc": "hap"}  # excited counts as happy
VALID_RATIO = 0.2  # s3prl holds 20% of the training sessions out for validation
EMO_TIMES = re.compile(r"\[\s*\d+(\.\d*)?\s*-\s*\d+(\.\d*)?\s*\]")  # "[6.2901 - 8.2357]"


def read_emo_evaluation(root: Path, session: int) -> dict[str, list]:
    """A session's four-class utterances from `SessionN/dialog/EmoEvaluation/*.txt` (`[start - end] TURN EMOTION
    [V, A, D]` lines), the WAVs at `SessionN/sentences/wav/<dialog>/<turn>.wav`."""
    folder = root / f"Session{session}"
    evaluations = sorted((folder / "dialog" / "EmoEvaluation").glob("*.txt"))
    if not evaluations:
        raise ValueError(f"No {display_path(folder)}/dialog/EmoEvaluation/*.txt: expected IEMOCAP's session layout.")
    records: dict[str, list] = {"audio": [], "label": [], "listed": []}
    for evaluation in evaluations:
        turns = [(number, line) for number, line in read_lines(evaluation) if line.startswith("[")]
        if not turns:
            raise ValueError(
                f"{display_path(evaluation)} holds no '[start - end] TURN EMOTION [V, A, D]' line: restore IEMOCAP's "
                "file (its dialogue would be left out without a word)."
            )
        for number, line in turns:
            fields = line.split("\t")
            if len(fields) < 3 or not EMO_TIMES.fullmatch(fields[0].strip()):
                raise ValueError(
                    f"{display_path(evaluation)} line {number}: expected '[start - end] TURN EMOTION [V, A, D]' "
                    "(tab-separated)."
                )
            turn, emotion = fields[1].strip(), MERGED.get(fields[2].strip(), fields[2].strip())
            if emotion not in EMOTIONS:
                continue
            audio = folder / "sentences" / "wav" / turn.rsplit("_", 1)[0] / f"{turn}.wav"
            if not audio.is_file():
                raise ValueError(
                    f"{display_path(evaluation)} line {number} names {turn}, but {display_path(audio)} is missing."
                )
            records["audio"].append(str(audio))
            records["label"].append(emotion)
            records["listed"].append(f"{display_path(evaluation)} line {number}")
    return records


def read_meta_data(root: Path, path: Path) -> dict[str, list]:
    """s3prl's `meta_data/SessionN/{train,test}_meta_data.json` (`path` relative to the root, `label`)."""
    try:
        items = json.loads(path.read_text())["meta_data"]
        pairs = [(item["path"], MERGED.get(item["label"], item["label"])) for item in items]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{display_path(path)}: expected s3prl's meta data JSON ({{'meta_data': [{{'path', 'label'}}]}}): {error}."
        ) from None
    for relative, label in pairs:
        if not (root / relative).is_file() or label not in EMOTIONS:
            raise ValueError(
                f"{display_path(path)} names {relative} ({label}): the file is missing or the label is not one of "
                f"{EMOTIONS}."
            )
    refuse_duplicates([(relative, display_path(path)) for relative, _ in pairs], "The clip")
    return {"audio": [str(root / relative) for relative, _ in pairs], "label": [label for _, label in pairs]}


def hold_out(records: dict[str, list], ratio: float) -> list[dict[str, list]]:
    """`[training, validation]` records split by s3prl's own call: `random_split` seeded 0, the first
    `int((1 - ratio) * n)` for training."""
    import torch

    count = len(records["audio"])
    cut = int((1 - ratio) * count)
    parts = torch.utils.data.random_split(range(count), [cut, count - cut], torch.Generator().manual_seed(0))
    return [{column: [values[i] for i in part] for column, values in records.items()} for part in parts]


def read_iemocap(request: CorpusRequest) -> CorpusRecords:
    """IEMOCAP, 4 classes (neutral, happy with excited merged, angry, sad), fold N leaving Session N out for testing;
    20% of the other sessions held out for validation as s3prl does. s3prl's `meta_data/SessionN/*.json` under the root
    are used when present (the same utterances in s3prl's order), else the sessions' EmoEvaluation files."""
    if request.fold not in range(1, 6):
        raise ValueError(f"--fold must be 1..5 (the IEMOCAP session left out for testing), got {request.fold}.")
    meta = request.root / "meta_data" / f"Session{request.fold}"
    if (meta / "train_meta_data.json").is_file():
        train_all = read_meta_data(request.root, meta / "train_meta_data.json")
        test = read_meta_data(request.root, require_file(meta / "test_meta_data.json", "s3prl's test meta data JSON"))
        both = [(audio, f"{split} meta data") for split, records in (("train", train_all), ("test", test))
                for audio in records["audio"]]  # fmt: skip
        refuse_duplicates(both, "The clip")
    else:
        sessions = {session: read_emo_evaluation(request.root, session) for session in range(1, 6)}
        listed = [
            (audio, where)
            for records in sessions.values()
            for audio, where in zip(records["audio"], records.pop("listed"))
        ]
        refuse_duplicates(listed, "The turn")
        test = sessions.pop(request.fold)
        train_all = {column: [v for records in sessions.values() for v in records[column]] for column in test}
    train, validation = hold_out(train_all, VALID_RATIO)
    return CorpusRecords({"train": train, "validation": validation, "test": test}, {"label": EMOTIONS})


# LibriMix (SD) -------------------------------------------------------------------------------------------------------

LIBRIMIX_SPLITS = {"train": "train", "validation": "dev", "test": "test"}


def read_kaldi_table(path: Path, fields: int, what: str) -> list[tuple[int, list[str]]]:
    """Lines of a Kaldi table split into at least `fields` fields (the last one keeps its spaces)."""
    require_file(path, what)
    rows = []
    for number, line in read_lines(path):
        parts = line.split(None, fields - 1)
        if len(parts) < fields:
            raise ValueError(f"{display_path(path)} line {number}: expected {what}, got '{line[:80]}'.")
        rows.append((number, parts))
    return rows


def read_kaldi_dir(folder: Path, frames_per_second: float) -> dict[str, list]:
    """One Kaldi-style data folder (`wav.scp`, `segments`, `utt2spk`): per recording, speaker activity per model
    output frame (a segment covers frames round(start * fps) to round(end * fps); s3prl rounds start * 16000 / 1280,
    one frame apart at some exact half frames), speakers in sorted order."""
    import soundfile as sf

    wavs = {}
    for number, (recording, target) in read_kaldi_table(folder / "wav.scp", 2, "'RECORDING PATH' lines"):
        if target.rstrip().endswith("|") or not Path(target).is_file():
            raise ValueError(
                f"{display_path(folder / 'wav.scp')} line {number}: {target} is not an audio file (piped commands "
                "are not read)."
            )
        wavs[recording] = target
    speakers = dict(parts for _, parts in read_kaldi_table(folder / "utt2spk", 2, "'UTTERANCE SPEAKER' lines"))
    segments: dict[str, list] = {recording: [] for recording in wavs}
    for number, parts in read_kaldi_table(folder / "segments", 4, "'UTTERANCE RECORDING START END' lines"):
        utterance, recording, start, end = parts[0], parts[1], parts[2], parts[3].split()[0]
        if recording not in wavs or utterance not in speakers:
            raise ValueError(
                f"{display_path(folder / 'segments')} line {number}: {utterance} of {recording} is not in wav.scp "
                "and utt2spk."
            )
        try:
            times = (float(start), float(end))
        except ValueError:
            times = (math.nan, math.nan)
        if not 0 <= times[0] <= times[1] < math.inf:
            raise ValueError(
                f"{display_path(folder / 'segments')} line {number}: expected START and END in seconds with "
                f"0 <= START <= END, got '{start} {end}'."
            )
        segments[recording].append((speakers[utterance], *times))
    records: dict[str, list] = {"audio": [], "activity": []}
    for recording, path in wavs.items():
        info = sf.info(path)
        frames = int(info.frames / info.samplerate * frames_per_second)
        names = sorted({speaker for speaker, _, _ in segments[recording]})
        activity = np.zeros((frames, max(1, len(names))), np.int8)
        for speaker, start, end in segments[recording]:
            first, last = int(np.rint(start * frames_per_second)), int(np.rint(end * frames_per_second))
            activity[first:last, names.index(speaker)] = 1
        records["audio"].append(path)
        records["activity"].append(activity)
    return records


def read_librimix(request: CorpusRequest) -> CorpusRecords:
    """LibriMix diarization from Kaldi-style `train/`, `dev/`, `test/` folders; every recording gets as many speaker
    columns as the most in training (LibriMix: 2), unused ones silent."""
    splits = {
        split: read_kaldi_dir(request.root / folder, request.frames_per_second)
        for split, folder in LIBRIMIX_SPLITS.items()
    }
    speakers = max(activity.shape[1] for activity in splits["train"]["activity"])
    for name, split in splits.items():
        for index, activity in enumerate(split["activity"]):
            if activity.shape[1] > speakers:
                raise ValueError(
                    f"{split['audio'][index]} ({name}) has {activity.shape[1]} speakers; training recordings have at "
                    f"most {speakers}."
                )
            split["activity"][index] = np.pad(activity, ((0, 0), (0, speakers - activity.shape[1]))).tolist()
    return CorpusRecords(splits)


READERS: dict[str, Any] = {
    "voxceleb1": read_voxceleb1,
    "libriphone": read_libriphone,
    "speech_commands": read_speech_commands,
    "fluent_commands": read_fluent_commands,
    "iemocap": read_iemocap,
    "librimix": read_librimix,
}

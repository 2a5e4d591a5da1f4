"""Small labelled speech sets synthesised with espeak-ng, as `audiofolder` directories (mini-SUPERB).

Each set is a directory with `train/`, `validation/` and `test/` split folders of WAV files and a `metadata.csv`
(`file_name` plus label columns; `metadata.jsonl` for diarization's per-frame labels), loadable with
`datasets.load_dataset("audiofolder", data_dir=...)`. Voices play the part of speakers: for keyword spotting, intent
classification and phoneme recognition the validation and test voices are never heard in training; for speaker
identification and diarization every split has the same voices (speakers) saying different things.

`--layout native` writes the SUPERB corpora in their own layouts instead (`MINI_CORPORA`: VoxCeleb1, LibriSpeech,
Speech Commands, Fluent Speech Commands, IEMOCAP, LibriMix), for trying the commands of docs/from_s3prl.md without
the real data.
"""

import csv
import io
import json
import random
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from transformers import HfArgumentParser

from ..tools.cli import make_parser, parse_arguments, run_command
from ..tools.outputs import MAY_CHANGE_ON_RESUME, claim_output_dir, holds_claimed_folders, recorded_arguments
from .corpora.readers import KS_CLASSES, speech_commands_split


KS_WORDS = KS_CLASSES[:10]  # Speech Commands' ten words
IC_ACTIONS = {"activate": "turn on", "deactivate": "turn off", "increase": "turn up", "decrease": "turn down"}
IC_OBJECTS = ["lights", "music", "heat", "volume"]
IC_LOCATIONS = ["kitchen", "bedroom", "washroom", "none"]
PR_SENTENCES = [
    "the cat sat on the mat", "she sells sea shells", "open the window please", "a quick brown fox",
    "we went to the market", "it is cold outside", "turn left at the bridge", "my phone is on the table",
    "the sun is shining today", "bring me a cup of tea", "he plays the guitar", "they are reading books",
]  # fmt: skip
SID_SENTENCES = PR_SENTENCES + ["good morning to you", "where is the station", "call me later", "this is a test"]
# Voices (espeak-ng voice + variant): the held-out ones for validation/test differ from the training ones.
TRAIN_VOICES = ["en-us", "en-gb+f3", "en-gb-scotland+m3", "en-029+f2", "en-gb-x-rp+m5", "en-us+f4"]
VALIDATION_VOICES = ["en-gb-x-gbclan+f1", "en-gb+m7"]
TEST_VOICES = ["en-gb-x-gbcwmd", "en-us+f5"]


@dataclass(frozen=True)
class Utterance:
    """One clip to synthesise: the text, the voice, speed (words per minute) and pitch (0-99), and its labels."""

    text: str
    voice: str
    speed: int
    pitch: int
    labels: dict[str, str]


COMMAND = "byola-make-mini-superb"


def require_espeak() -> str:
    """Path of espeak-ng, or a one-line `ValueError` saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise ValueError("espeak-ng is not installed: `apt-get install espeak-ng` (scripts/setup.sh does it).")
    return path


def synthesise(utterance: Utterance, path: Path, sampling_rate: int | None = 16000, subtype: str = "FLOAT") -> None:
    """Speak `utterance` into a mono file at `path` (WAV, or FLAC by its suffix) of `subtype`, resampled to
    `sampling_rate` (espeak-ng's native 22050 Hz if None)."""
    command = [require_espeak(), "-v", utterance.voice, "-s", str(utterance.speed), "-p", str(utterance.pitch)]
    # From its pipe, not a file: espeak-ng exits 0 when it cannot write a file (a full disk), leaving an empty one.
    spoken = subprocess.run([*command, "--stdout", utterance.text], check=True, capture_output=True).stdout
    waveform, rate = sf.read(io.BytesIO(spoken), dtype="float32")
    if sampling_rate is not None and sampling_rate != rate:
        import librosa

        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=sampling_rate)
        rate = sampling_rate
    write_audio(path, waveform, rate, subtype)


def write_audio(path: Path, waveform: np.ndarray, rate: int, subtype: str) -> None:
    """Write `waveform (samples,)` to `path` (WAV or FLAC by its suffix): encoded in memory, written by Python. A
    file libsndfile cannot write (full or read-only disk) is only a "System error." to it, without the errno that
    names the cause; Python's `OSError` carries it and the file's name."""
    encoded = io.BytesIO()
    sf.write(encoded, waveform, rate, subtype=subtype, format=path.suffix.lstrip(".").upper())
    path.write_bytes(encoded.getvalue())


def speak(jobs: Sequence[tuple[Utterance, Path]], sampling_rate: int | None = 16000, subtype: str = "PCM_16") -> None:
    """Synthesise every `(utterance, path)`, creating folders, four at a time (espeak-ng is one process each)."""
    for _, path in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: synthesise(*job, sampling_rate, subtype), jobs))


def phonemes(text: str, voice: str = "en-us") -> str:
    """espeak-ng's phoneme transcription of `text`, stress marks removed, phonemes separated by single spaces."""
    result = subprocess.run(
        [require_espeak(), "-q", "-x", "--sep= ", "-v", voice, text], check=True, capture_output=True, text=True
    )
    return " ".join(result.stdout.replace("'", "").replace(",", "").split())


def write_split(directory: Path, utterances: Sequence[Utterance], sampling_rate: int | None) -> None:
    """Synthesise a split folder (float WAVs) with its `metadata.csv`."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"{index:05d}.wav" for index in range(len(utterances))]
    speak([(utterance, directory / name) for utterance, name in zip(utterances, names)], sampling_rate, "FLOAT")
    columns = list(utterances[0].labels) if utterances else []
    with open(directory / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", *columns])
        for name, utterance in zip(names, utterances):
            writer.writerow([name, *(utterance.labels[column] for column in columns)])


def _variants(rng: random.Random, count: int) -> list[tuple[int, int]]:
    return [(rng.randint(130, 200), rng.randint(25, 75)) for _ in range(count)]


def make_ks(output_dir: str | Path, repeats: int = 2, seed: int = 0, sampling_rate: int | None = 16000) -> Path:
    """Keyword spotting: `KS_WORDS` said by every voice `repeats` times at random speeds and pitches; `label`."""
    rng = random.Random(seed)
    output = Path(output_dir)
    for split, voices in (("train", TRAIN_VOICES), ("validation", VALIDATION_VOICES), ("test", TEST_VOICES)):
        utterances = [
            Utterance(word, voice, speed, pitch, {"label": word})
            for voice in voices
            for word in KS_WORDS
            for speed, pitch in _variants(rng, repeats)
        ]
        write_split(output / split, utterances, sampling_rate)
    return output


def make_ic(
    output_dir: str | Path, examples_per_voice: int = 12, seed: int = 0, sampling_rate: int | None = 16000
) -> Path:
    """Intent classification: "turn on the lights in the kitchen" style commands; `action`, `object`, `location`."""
    rng = random.Random(seed)
    output = Path(output_dir)
    for split, voices in (("train", TRAIN_VOICES), ("validation", VALIDATION_VOICES), ("test", TEST_VOICES)):
        utterances = []
        for voice in voices:
            for speed, pitch in _variants(rng, examples_per_voice):
                action, obj, location = rng.choice(list(IC_ACTIONS)), rng.choice(IC_OBJECTS), rng.choice(IC_LOCATIONS)
                text = f"{IC_ACTIONS[action]} the {obj}" + ("" if location == "none" else f" in the {location}")
                labels = {"action": action, "object": obj, "location": location, "text": text}
                utterances.append(Utterance(text, voice, speed, pitch, labels))
        write_split(output / split, utterances, sampling_rate)
    return output


def make_sid(
    output_dir: str | Path,
    sentences_per_split: tuple[int, int, int] = (8, 3, 3),
    seed: int = 0,
    sampling_rate: int | None = 16000,
) -> Path:
    """Speaker identification: each of `TRAIN_VOICES` is a speaker (`label`), with different sentences per split."""
    rng = random.Random(seed)
    output = Path(output_dir)
    sentences = SID_SENTENCES[:]
    rng.shuffle(sentences)
    start = 0
    for split, count in zip(("train", "validation", "test"), sentences_per_split):
        chosen = [sentences[(start + i) % len(sentences)] for i in range(count)]
        start += count
        utterances = [
            Utterance(text, voice, speed, pitch, {"label": voice})
            for voice in TRAIN_VOICES
            for text, (speed, pitch) in zip(chosen, _variants(rng, count))
        ]
        write_split(output / split, utterances, sampling_rate)
    return output


def make_pr(output_dir: str | Path, repeats: int = 1, seed: int = 0, sampling_rate: int | None = 16000) -> Path:
    """Phoneme recognition: `PR_SENTENCES` with espeak-ng's phoneme transcription (`phonemes`) and `text`.

    Speech is slowed (speed 110-140) so that every transcription fits BYOL-A's 12.5 output frames per second."""
    rng = random.Random(seed)
    output = Path(output_dir)
    transcriptions = {text: phonemes(text) for text in PR_SENTENCES}
    for split, voices in (("train", TRAIN_VOICES), ("validation", VALIDATION_VOICES), ("test", TEST_VOICES)):
        utterances = [
            Utterance(
                text,
                voice,
                rng.randint(110, 140),
                rng.randint(30, 70),
                {"phonemes": transcriptions[text], "text": text},
            )
            for voice in voices
            for text in PR_SENTENCES
            for _ in range(repeats)
        ]
        write_split(output / split, utterances, sampling_rate)
    return output


def make_sd(
    output_dir: str | Path,
    examples: tuple[int, int, int] = (24, 8, 8),
    seed: int = 0,
    sampling_rate: int = 16000,
    frame_seconds: float = 0.08,
) -> Path:
    """Speaker diarization: two voices of `TRAIN_VOICES` saying different sentences, the second starting part-way
    through the first, mixed. `activity` (in `metadata.jsonl`) holds per-frame speaker activity, one row of two 0/1
    values per `frame_seconds` (BYOL-A's 80 ms output frame) at any `sampling_rate`: a speaker is active in a frame
    when its own track's energy there is above 1 % of that track's peak frame energy."""
    rng = random.Random(seed)
    output = Path(output_dir)
    for split, count in zip(("train", "validation", "test"), examples):
        directory = output / split
        directory.mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(count):
            voices = rng.sample(TRAIN_VOICES, 2)
            tracks = []
            for voice, text in zip(voices, rng.sample(SID_SENTENCES, 2)):
                path = directory / f"track{index}.wav"
                synthesise(Utterance(text, voice, rng.randint(140, 180), rng.randint(30, 70), {}), path, sampling_rate)
                tracks.append(sf.read(path, dtype="float32")[0])
                path.unlink()
            offset = rng.randint(len(tracks[0]) // 3, 4 * len(tracks[0]) // 5)  # always some overlap
            length = max(len(tracks[0]), offset + len(tracks[1]))
            placed = [np.zeros(length, np.float32), np.zeros(length, np.float32)]
            placed[0][: len(tracks[0])] = tracks[0]
            placed[1][offset : offset + len(tracks[1])] = tracks[1]
            frame_samples = round(frame_seconds * sampling_rate)
            frames = length // frame_samples
            energy = np.stack([np.square(t[: frames * frame_samples]).reshape(frames, -1).mean(1) for t in placed], 1)
            activity = (energy > 0.01 * energy.max(0, keepdims=True)).astype(int)
            name = f"{index:05d}.wav"
            write_audio(directory / name, placed[0] + placed[1], sampling_rate, "FLOAT")
            rows.append({"file_name": name, "activity": activity.tolist(), "speakers": voices})
        with open(directory / "metadata.jsonl", "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return output


BUILDERS = {"ks": make_ks, "ic": make_ic, "sid": make_sid, "pr": make_pr, "sd": make_sd}


# --- the SUPERB corpora in their native layouts (`--layout native`, `MINI_CORPORA`) ---------------------------------
# Each has a few speakers (espeak-ng voices) and words, and the corner cases the readers must handle: a lexicon word
# with two pronunciations and one in a second lexicon file, Speech Commands words outside the ten (`_unknown_`) and
# `_background_noise_` recordings (Debian's sound-theme recordings when installed, else generated noise), an IEMOCAP
# `exc` turn (merged into happy) and a `fru` one (not one of the four classes), LibriMix mixtures with overlapping
# speakers.


# The native corpora's speakers: four of the training voices.
VOICES = TRAIN_VOICES[:4]
LEXICON = {  # ARPAbet pronunciations of the words the mini LibriSpeech says
    "THE": ["DH AH0", "DH IY0"], "CAT": ["K AE1 T"], "SAT": ["S AE1 T"], "ON": ["AA1 N"], "MAT": ["M AE1 T"],
    "DOG": ["D AO1 G"], "RAN": ["R AE1 N"], "HOME": ["HH OW1 M"], "SUN": ["S AH1 N"], "IS": ["IH1 Z"],
    "HOT": ["HH AA1 T"],
}  # fmt: skip
OTHER_LEXICON = {"GO": ["G OW1"], "UP": ["AH1 P"]}  # the second lexicon file (s3prl's "allothers")
LIBRI_SENTENCES = ["THE CAT SAT ON THE MAT", "THE DOG RAN HOME", "THE SUN IS HOT", "GO UP", "THE CAT RAN UP"]


def make_voxceleb1(root: Path) -> Path:
    """`wav/id1000N/<video>/0000K.wav` for 3 speakers and `iden_split.txt` (4 train, 1 dev, 1 test each)."""
    jobs, lines = [], []
    for number, voice in enumerate(VOICES[:3], start=1):
        speaker = f"id{10000 + number}"
        for index, text in enumerate(
            ["hello there", "good morning", "nice to meet you", "see you soon", "thank you", "goodbye"]
        ):
            relative = f"{speaker}/video{index % 2}/{index:05d}.wav"
            jobs.append((Utterance(text, voice, 150, 50, {}), root / "wav" / relative))
            lines.append(f"{1 if index < 4 else 2 if index == 4 else 3} {relative}")
    speak(jobs)
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def make_libriphone(root: Path) -> Path:
    """`{train-clean-100,dev-clean,test-clean}/<speaker>/<chapter>/` with FLAC and `.trans.txt`, and two lexicons
    (`lexicon.txt` with a two-pronunciation word and a tab, `lexicon-others.txt`)."""
    jobs = []
    for split, voices in (("train-clean-100", VOICES[:2]), ("dev-clean", VOICES[2:3]), ("test-clean", VOICES[3:])):
        for number, voice in enumerate(voices, start=1):
            folder = root / split / str(number) / "100"
            lines = []
            for index, text in enumerate(LIBRI_SENTENCES):
                utterance = f"{number}-100-{index:04d}"
                jobs.append((Utterance(text.lower(), voice, 110, 50, {}), folder / f"{utterance}.flac"))
                lines.append(f"{utterance} {text}")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{number}-100.trans.txt").write_text("\n".join(lines) + "\n")
    speak(jobs)
    entries = [f"{word}\t{pronunciation}" for word, prons in LEXICON.items() for pronunciation in prons]
    (root / "lexicon.txt").write_text("\n".join(entries) + "\n")
    (root / "lexicon-others.txt").write_text("".join(f"{w} {p[0]}\n" for w, p in OTHER_LEXICON.items()))
    return root


def speakers_per_split(count: int) -> dict[str, list[str]]:
    """Speaker hashes (file name prefixes) that Speech Commands' rule puts in training and in validation."""
    found: dict[str, list[str]] = {"train": [], "validation": []}
    index = 0
    while min(len(found["train"]), len(found["validation"])) < count:
        name = f"{index:08x}"
        split = speech_commands_split(f"{name}_nohash_0.wav")
        if split is not None and len(found[split]) < count:
            found[split].append(name)
        index += 1
    return found


def background_noise(path: Path, seconds: float, seed: int) -> None:
    """A background recording: Debian's ALSA noise sample looped when installed, else seeded pink-ish noise."""
    recording = Path("/usr/share/sounds/alsa/Noise.wav")
    samples = int(seconds * 16000)
    if recording.is_file():
        import librosa

        waveform, _ = librosa.load(recording, sr=16000, mono=True)
        waveform = np.resize(waveform, samples) * 0.3
    else:
        waveform = np.cumsum(np.random.default_rng(seed).standard_normal(samples)).astype(np.float32)
        waveform = 0.1 * (waveform - waveform.mean()) / (np.abs(waveform).max() + 1e-9)
    write_audio(path, waveform.astype(np.float32), 16000, "PCM_16")


def make_speech_commands(root: Path) -> tuple[Path, Path]:
    """Speech Commands v0.01: `yes/`, `no/`, `bed/` (an `_unknown_` word) by 3 training and 2 validation speakers,
    `_background_noise_/` with two recordings; and the separate test set (`yes`, `no`, `_unknown_`, `_silence_`)."""
    speakers = speakers_per_split(3)
    jobs = []
    for word in ("yes", "no", "bed"):
        for names in speakers.values():
            for name, voice in zip(names, VOICES):
                jobs.append((Utterance(word, voice, 160, 50, {}), root / "train" / word / f"{name}_nohash_0.wav"))
    test = root / "test"
    for folder, word in (("yes", "yes"), ("no", "no"), ("_unknown_", "bird")):
        jobs.append((Utterance(word, VOICES[3], 150, 40, {}), test / folder / "test_nohash_0.wav"))
    speak(jobs)
    (root / "train" / "_background_noise_").mkdir(parents=True)
    for index in range(2):
        background_noise(root / "train" / "_background_noise_" / f"noise{index}.wav", 3.0, index)
    (test / "_silence_").mkdir(parents=True)
    background_noise(test / "_silence_" / "silence_0.wav", 1.0, 7)
    return root / "train", test


def make_fluent_commands(root: Path) -> Path:
    """`wavs/speakers/<speaker>/<n>.wav` and `data/{train,valid,test}_data.csv` (`path`, `speakerId`,
    `transcription`, `action`, `object`, `location`)."""
    commands = [
        ("turn on the lights", "activate", "lights", "none"),
        ("turn off the lights", "deactivate", "lights", "none"),
        ("turn up the heat in the kitchen", "increase", "heat", "kitchen"),
        ("turn down the music", "decrease", "music", "none"),
    ]
    jobs, rows = [], {"train": [], "valid": [], "test": []}
    for split, voices in (("train", VOICES[:2]), ("valid", VOICES[2:3]), ("test", VOICES[3:])):
        for voice in voices:
            speaker = voice.replace("+", "_")
            for index, (text, action, obj, location) in enumerate(commands):
                relative = f"wavs/speakers/{speaker}/{index}.wav"
                jobs.append((Utterance(text, voice, 160, 50, {}), root / relative))
                rows[split].append([relative, speaker, text, action, obj, location])
    speak(jobs)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(root / "data" / f"{split}_data.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "path", "speakerId", "transcription", "action", "object", "location"])
            writer.writerows([index, *row] for index, row in enumerate(split_rows))
    return root


def make_iemocap(root: Path) -> Path:
    """`SessionN/dialog/EmoEvaluation/SesNNF_impro01.txt` and `SessionN/sentences/wav/...` for the 5 sessions, each
    with neu, hap, exc (-> hap), ang, sad and fru (not a class) turns."""
    emotions = ["neu", "hap", "exc", "ang", "sad", "fru"]
    texts = ["it is fine", "what a day", "this is great", "stop it now", "i miss you", "not again"]
    jobs = []
    for session in range(1, 6):
        dialog = f"Ses0{session}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for index, (emotion, text) in enumerate(zip(emotions, texts)):
            turn = f"{dialog}_F{index:03d}"
            lines.append(f"[{index * 2.0:.4f} - {index * 2.0 + 1.5:.4f}]\t{turn}\t{emotion}\t[2.5000, 2.5000, 2.5000]")
            lines.append(f"C-E1:\t{emotion};\t()")
            path = root / f"Session{session}" / "sentences" / "wav" / dialog / f"{turn}.wav"
            jobs.append((Utterance(text, VOICES[(session + index) % len(VOICES)], 150, 50, {}), path))
        evaluation = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text("\n".join(lines) + "\n")
    speak(jobs)
    return root


def make_librimix(root: Path, recordings: tuple[int, int, int] = (4, 2, 2), seed: int = 0) -> Path:
    """Kaldi-style `train/`, `dev/`, `test/` (`wav.scp`, `segments`, `utt2spk`, `reco2dur`) over two-voice mixtures
    whose second speaker starts while the first is still talking."""
    rng = random.Random(seed)
    texts = ["the cat sat on the mat", "we went to the market", "turn left at the bridge", "call me later"]
    for split, count in zip(("train", "dev", "test"), recordings):
        folder = root / split
        tracks_dir = folder / "tracks"
        jobs = []
        for index in range(count):
            for side, voice in enumerate(rng.sample(VOICES, 2)):
                jobs.append((Utterance(rng.choice(texts), voice, 160, 50, {}), tracks_dir / f"{index}-{side}.wav"))
        speak(jobs)
        scp, segments, utt2spk, durations = [], [], [], []
        for index in range(count):
            first, second = (sf.read(tracks_dir / f"{index}-{side}.wav", dtype="float32")[0] for side in (0, 1))
            offset = len(first) // 2
            mixture = np.zeros(max(len(first), offset + len(second)), np.float32)
            mixture[: len(first)] += first
            mixture[offset : offset + len(second)] += second
            recording = f"mix{index}"
            path = folder / "wav" / f"{recording}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_audio(path, mixture, 16000, "PCM_16")
            scp.append(f"{recording} {path}")
            for side, (start, samples) in enumerate(((0, len(first)), (offset, len(second)))):
                speaker = jobs[2 * index + side][0].voice.replace("+", "_")
                utterance = f"{speaker}-{recording}"
                segments.append(f"{utterance} {recording} {start / 16000:.3f} {(start + samples) / 16000:.3f}")
                utt2spk.append(f"{utterance} {speaker}")
            durations.append(f"{recording} {len(mixture) / 16000:.3f}")
        for name, lines in (("wav.scp", scp), ("segments", segments), ("utt2spk", utt2spk), ("reco2dur", durations)):
            (folder / name).write_text("\n".join(lines) + "\n")
    return root


MINI_CORPORA = {
    "voxceleb1": make_voxceleb1,
    "libriphone": make_libriphone,
    "speech_commands": make_speech_commands,
    "fluent_commands": make_fluent_commands,
    "iemocap": make_iemocap,
    "librimix": make_librimix,
}


@dataclass
class MiniSetArguments:
    output_dir: str = field(metadata={"help": "Each task goes to OUTPUT_DIR/<task>"})
    task: str = field(default="all", metadata={"help": "Which set to build", "choices": [*BUILDERS, "all"]})
    seed: int = field(
        default=0, metadata={"help": "Seed of the speeds, pitches and sentences (the native corpora's are fixed)"}
    )
    sampling_rate: int = field(
        default=16000,
        metadata={"help": "0 keeps espeak-ng's native 22050 Hz (but for sd: 16000; the native corpora are 16000)"},
    )
    layout: str = field(
        default="audiofolder",
        metadata={
            "help": "audiofolder: the mini-SUPERB sets; native: tiny copies of the SUPERB corpora in their own "
            "layouts (voxceleb1, libriphone, speech_commands, fluent_commands, iemocap, librimix), for "
            "byola-run-superb --superb_corpus",
            "choices": ["audiofolder", "native"],
        },
    )
    corpus: list[str] = field(
        default_factory=list,
        metadata={"help": "With --layout native: only this corpus (repeatable; default all six)", "action": "extend"},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Rebuild a folder this command filled with another seed or rate"}
    )


def build_parser() -> HfArgumentParser:
    return make_parser(
        COMMAND, (MiniSetArguments,), description="Build mini-SUPERB speech sets with espeak-ng (audiofolder layout)."
    )


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_arguments(build_parser(), argv)
    run_command(COMMAND, build_mini_sets, args)


# Which sets a run builds may differ between runs into one folder: each set goes to a subfolder of its own and is
# the same whichever others are built. Every other flag (the seed, the rate) is in the folder's record.
MAY_CHANGE = MAY_CHANGE_ON_RESUME | {"task", "layout", "corpus"}


def run_record(args: MiniSetArguments) -> dict:
    """The folder's record: every flag but [`MAY_CHANGE`]."""
    return {"arguments": recorded_arguments(args, may_change=MAY_CHANGE)}


def check_mini_set_arguments(args: MiniSetArguments) -> None:
    """Refuse, before the output folder is claimed, a bad value and a set the chosen layout does not build: --task
    names an audiofolder set, --corpus a native corpus. (--seed and --sampling_rate are the folder's, in its record,
    and a native corpus, built at 16 kHz from fixed voices and sentences, may join a folder built with others.)"""
    if args.sampling_rate < 0:
        raise ValueError(f"--sampling_rate must be a rate in Hz (0: espeak-ng's own 22050), got {args.sampling_rate}.")
    unknown = sorted(set(args.corpus) - set(MINI_CORPORA))
    if unknown:
        raise ValueError(f"--corpus {unknown[0]} is not one of {', '.join(MINI_CORPORA)}.")
    defaults = MiniSetArguments(output_dir=args.output_dir)
    unread = ["corpus"] if args.layout == "audiofolder" else ["task"]
    given = [name for name in unread if getattr(args, name) != getattr(defaults, name)]
    if given:
        layout = "native" if args.layout == "audiofolder" else "audiofolder"
        raise ValueError(f"--{given[0]} is read with --layout {layout} only: drop it, or pass --layout {layout}.")


@holds_claimed_folders()
def build_mini_sets(args: MiniSetArguments) -> None:
    """Build the chosen sets into a folder this command owns, and print their sizes. Sets built with another seed
    or rate are never mixed into the same folder (statistics and embeddings made from it would disagree)."""
    check_mini_set_arguments(args)
    require_espeak()
    names = [*BUILDERS, *MINI_CORPORA]
    claim_output_dir(args.output_dir, COMMAND, run_record(args), names, args.overwrite_output_dir)
    if args.layout == "native":
        for name in args.corpus or MINI_CORPORA:
            print(f"{name}: {MINI_CORPORA[name](Path(args.output_dir) / name)}")
        return
    tasks = list(BUILDERS) if args.task == "all" else [args.task]
    for task in tasks:
        rate = args.sampling_rate or (16000 if task == "sd" else None)  # make_sd times its label frames in samples
        path = BUILDERS[task](Path(args.output_dir) / task, seed=args.seed, sampling_rate=rate)
        counts = {split: sum(1 for _ in (path / split).glob("*.wav")) for split in ("train", "validation", "test")}
        print(f"{task}: {path} {counts}")


if __name__ == "__main__":
    main()

"""Small labelled speech sets synthesised with espeak-ng, as `audiofolder` directories (mini-SUPERB).

Each set is a directory with `train/`, `validation/` and `test/` split folders of WAV files and a `metadata.csv`
(`file_name` plus label columns; `metadata.jsonl` for diarization's per-frame labels), loadable with
`datasets.load_dataset("audiofolder", data_dir=...)`. Voices play the part of speakers: for keyword spotting, intent
classification and phoneme recognition the validation and test voices are never heard in training; for speaker
identification and diarization every split has the same voices (speakers) saying different things.
"""

import csv
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

from ..tools.cli import make_parser, parse_arguments, run_command
from ..tools.outputs import claim_output_dir, fingerprint


KS_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
IC_ACTIONS = {"activate": "turn on", "deactivate": "turn off", "increase": "turn up", "decrease": "turn down"}
IC_OBJECTS = ["lights", "music", "heat", "volume"]
IC_LOCATIONS = ["kitchen", "bedroom", "washroom", "none"]
PR_SENTENCES = [
    "the cat sat on the mat",
    "she sells sea shells",
    "open the window please",
    "a quick brown fox",
    "we went to the market",
    "it is cold outside",
    "turn left at the bridge",
    "my phone is on the table",
    "the sun is shining today",
    "bring me a cup of tea",
    "he plays the guitar",
    "they are reading books",
]
SID_SENTENCES = PR_SENTENCES + ["good morning to you", "where is the station", "call me later", "this is a test"]
# Voices (espeak-ng voice + variant): the held-out ones for validation/test differ from the training ones.
TRAIN_VOICES = ["en-us", "en-gb+f3", "en-gb-scotland+m3", "en-029+f2", "en-gb-x-rp+m5", "en-us+f4"]
VALIDATION_VOICES = ["en-gb-x-gbclan+f1", "en-gb+m7"]
TEST_VOICES = ["en-gb-x-gbcwmd", "en-us+f5"]
SPEAKERS = ["en-us", "en-gb+f3", "en-gb-scotland+m3", "en-029+f2", "en-gb-x-rp+m5", "en-us+f4"]


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
    """Path of espeak-ng, or a RuntimeError saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise ValueError("espeak-ng is not installed: `apt-get install espeak-ng` (scripts/setup.sh does it).")
    return path


def synthesise(utterance: Utterance, path: Path, sampling_rate: int | None = 16000) -> None:
    """Speak `utterance` into a mono float WAV at `path`, resampled to `sampling_rate` (native 22050 Hz if None)."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(
        [
            require_espeak(),
            "-v",
            utterance.voice,
            "-s",
            str(utterance.speed),
            "-p",
            str(utterance.pitch),
            "-w",
            str(raw),
            utterance.text,
        ],
        check=True,
        capture_output=True,
    )
    waveform, rate = sf.read(raw, dtype="float32")
    raw.unlink()
    if sampling_rate is not None and sampling_rate != rate:
        import librosa

        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=sampling_rate)
        rate = sampling_rate
    sf.write(path, waveform, rate, subtype="FLOAT")


def phonemes(text: str, voice: str = "en-us") -> str:
    """espeak-ng's phoneme transcription of `text`, stress marks removed, phonemes separated by single spaces."""
    result = subprocess.run(
        [require_espeak(), "-q", "-x", "--sep= ", "-v", voice, text], check=True, capture_output=True, text=True
    )
    return " ".join(result.stdout.replace("'", "").replace(",", "").split())


def write_split(directory: Path, utterances: Sequence[Utterance], sampling_rate: int | None, workers: int = 4) -> None:
    """Synthesise a split folder with its `metadata.csv`."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"{index:05d}.wav" for index in range(len(utterances))]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda item: synthesise(item[0], directory / item[1], sampling_rate), zip(utterances, names)))
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
    """Speaker identification: each voice of `SPEAKERS` is a speaker (`label`), with different sentences per split."""
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
            for voice in SPEAKERS
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
    frame_samples: int = 1280,
) -> Path:
    """
    Speaker diarization: two voices of `SPEAKERS` saying different sentences, the second starting part-way
    through the first, mixed. `activity` (in `metadata.jsonl`) holds per-frame speaker activity, one row of two 0/1
    values per `frame_samples` samples (BYOL-A's 80 ms output frame at 16 kHz): a speaker is active in a frame when
    its own track's energy there is above 1 % of that track's peak frame energy.
    """
    rng = random.Random(seed)
    output = Path(output_dir)
    for split, count in zip(("train", "validation", "test"), examples):
        directory = output / split
        directory.mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(count):
            voices = rng.sample(SPEAKERS, 2)
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
            frames = length // frame_samples
            energy = np.stack([np.square(t[: frames * frame_samples]).reshape(frames, -1).mean(1) for t in placed], 1)
            activity = (energy > 0.01 * energy.max(0, keepdims=True)).astype(int)
            name = f"{index:05d}.wav"
            sf.write(directory / name, placed[0] + placed[1], sampling_rate, subtype="FLOAT")
            rows.append({"file_name": name, "activity": activity.tolist(), "speakers": voices})
        with open(directory / "metadata.jsonl", "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return output


BUILDERS = {"ks": make_ks, "ic": make_ic, "sid": make_sid, "pr": make_pr, "sd": make_sd}


@dataclass
class MiniSetArguments:
    output_dir: str = field(metadata={"help": "Each task goes to OUTPUT_DIR/<task>"})
    task: str = field(default="all", metadata={"help": "Which set to build", "choices": [*BUILDERS, "all"]})
    seed: int = field(default=0, metadata={"help": "Seed of the speeds, pitches and sentences"})
    sampling_rate: int = field(default=16000, metadata={"help": "0 keeps espeak-ng's native 22050 Hz"})
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


def native_corpus_names() -> list[str]:
    """The folders `--layout native` writes."""
    from .corpora.mini import MINI_CORPORA

    return list(MINI_CORPORA)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(
        COMMAND, (MiniSetArguments,), description="Build mini-SUPERB speech sets with espeak-ng (audiofolder layout)."
    )
    (args,) = parse_arguments(parser, argv)
    run_command(COMMAND, build_mini_sets, args)


def build_mini_sets(args: MiniSetArguments) -> None:
    """Build the chosen sets into a folder this command owns, and print their sizes. Sets built with another seed
    or rate are never mixed into the same folder (statistics and embeddings made from it would disagree)."""
    if args.sampling_rate < 0:
        raise ValueError(f"--sampling_rate must be a rate in Hz (0: espeak-ng's own 22050), got {args.sampling_rate}.")
    require_espeak()
    run_fingerprint = fingerprint(seed=args.seed, sampling_rate=args.sampling_rate)
    names = [*BUILDERS, *native_corpus_names()]
    claim_output_dir(args.output_dir, COMMAND, run_fingerprint, names, args.overwrite_output_dir)
    if args.layout == "native":
        from .corpora.mini import MINI_CORPORA

        unknown = sorted(set(args.corpus) - set(MINI_CORPORA))
        if unknown:
            raise ValueError(f"--corpus {unknown[0]} is not one of {', '.join(MINI_CORPORA)}.")
        for name in args.corpus or MINI_CORPORA:
            print(f"{name}: {MINI_CORPORA[name](Path(args.output_dir) / name)}")
        return
    tasks = list(BUILDERS) if args.task == "all" else [args.task]
    for task in tasks:
        rate = args.sampling_rate or (16000 if task == "sd" else None)  # diarization labels assume 16 kHz frames
        path = BUILDERS[task](Path(args.output_dir) / task, seed=args.seed, sampling_rate=rate)
        counts = {split: sum(1 for _ in (path / split).glob("*.wav")) for split in ("train", "validation", "test")}
        print(f"{task}: {path} {counts}")


if __name__ == "__main__":
    main()

"""Tiny SUPERB corpora in their native layouts, spoken by espeak-ng, for tests and for trying the commands of
docs/from_s3prl.md without the real data: `make_mini_corpus(name, root)`.

Each has a few speakers (espeak-ng voices) and words, and the corner cases the readers must handle: a lexicon word
with two pronunciations and one in a second lexicon file, Speech Commands words outside the ten (`_unknown_`) and
`_background_noise_` recordings (Debian's sound-theme recordings when installed, else generated noise), an IEMOCAP
`exc` turn (merged into happy) and a `fru` one (not one of the four classes), LibriMix mixtures with overlapping
speakers.
"""

import csv
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from ..mini_sets import Utterance, synthesise
from .readers import speech_commands_split


VOICES = ["en-us", "en-gb+f3", "en-gb-scotland+m3", "en-029+f2"]
LEXICON = {  # ARPAbet pronunciations of the words the mini LibriSpeech says
    "THE": ["DH AH0", "DH IY0"],
    "CAT": ["K AE1 T"],
    "SAT": ["S AE1 T"],
    "ON": ["AA1 N"],
    "MAT": ["M AE1 T"],
    "DOG": ["D AO1 G"],
    "RAN": ["R AE1 N"],
    "HOME": ["HH OW1 M"],
    "SUN": ["S AH1 N"],
    "IS": ["IH1 Z"],
    "HOT": ["HH AA1 T"],
}
OTHER_LEXICON = {"GO": ["G OW1"], "UP": ["AH1 P"]}  # the second lexicon file (s3prl's "allothers")
LIBRI_SENTENCES = ["THE CAT SAT ON THE MAT", "THE DOG RAN HOME", "THE SUN IS HOT", "GO UP", "THE CAT RAN UP"]


def speak(jobs: list[tuple[Utterance, Path]], sampling_rate: int = 16000) -> None:
    """Synthesise every `(utterance, path)`, creating folders, a few at a time; FLAC when the path says so."""
    for _, path in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)

    def one(job: tuple[Utterance, Path]) -> None:
        utterance, path = job
        wav = path.with_suffix(".tmp.wav")
        synthesise(utterance, wav, sampling_rate)
        waveform, rate = sf.read(wav, dtype="float32")
        wav.unlink()
        sf.write(path, waveform, rate, subtype="PCM_16")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, jobs))


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
    sf.write(path, waveform.astype(np.float32), 16000, subtype="PCM_16")


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
            voice = VOICES[(session + index) % len(VOICES)]
            jobs.append(
                (
                    Utterance(text, voice, 150, 50, {}),
                    root / f"Session{session}" / "sentences" / "wav" / dialog / f"{turn}.wav",
                )
            )
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
            sf.write(path, mixture, 16000, subtype="PCM_16")
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

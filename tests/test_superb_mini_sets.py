"""The mini-SUPERB sets: layout, held-out voices, phoneme targets that fit BYOL-A's frame rate, determinism; they
never overwrite what they did not write."""

import datasets
import pytest
import soundfile as sf

from byola_hf import BYOLAConfig, BYOLAFeatureExtractor
from byola_hf.superb.mini_sets import (
    KS_WORDS,
    TEST_VOICES,
    TRAIN_VOICES,
    VALIDATION_VOICES,
    build_parser,
    make_ic,
    make_ks,
    make_pr,
    make_sd,
    make_sid,
    phonemes,
)

from conftest import assert_one_line, assert_rerun_refused_unless_it_may_change, every_flag, run_main


def test_voices_are_held_out():
    assert not set(TRAIN_VOICES) & set(VALIDATION_VOICES) and not set(TRAIN_VOICES) & set(TEST_VOICES)
    assert not set(VALIDATION_VOICES) & set(TEST_VOICES)


def test_keyword_set_layout_and_determinism(tmp_path):
    first = make_ks(tmp_path / "a", repeats=1, seed=3)
    second = make_ks(tmp_path / "b", repeats=1, seed=3)
    dataset = datasets.load_dataset("audiofolder", data_dir=str(first))
    assert set(dataset) == {"train", "validation", "test"}
    assert len(dataset["train"]) == len(KS_WORDS) * len(TRAIN_VOICES)
    assert sorted(set(dataset["test"]["label"])) == sorted(KS_WORDS)
    assert dataset["train"][0]["audio"]["sampling_rate"] == 16000
    for name in ("train/00000.wav", "test/00007.wav"):  # same audio (the WAV header's PEAK chunk has a timestamp)
        assert (sf.read(first / name)[0] == sf.read(second / name)[0]).all()
    assert (first / "train" / "metadata.csv").read_text() == (second / "train" / "metadata.csv").read_text()


def test_intent_and_speaker_sets(tmp_path):
    intents = datasets.load_dataset("audiofolder", data_dir=str(make_ic(tmp_path / "ic", examples_per_voice=2)))
    assert {"action", "object", "location", "text"} <= set(intents["train"].column_names)
    speakers = datasets.load_dataset("audiofolder", data_dir=str(make_sid(tmp_path / "sid", (2, 1, 1))))
    assert set(speakers["train"]["label"]) == set(speakers["test"]["label"]) == set(TRAIN_VOICES)


def test_phoneme_targets_fit_the_output_frame_rate(tmp_path):
    assert phonemes("the cat sat on the mat").split() == [
        "D",
        "@2",
        "k",
        "a",
        "t",
        "s",
        "a",
        "t",
        "O2",
        "n",
        "D",
        "@2",
        "m",
        "a",
        "t",
    ]
    root = make_pr(tmp_path / "pr")
    config, fe = BYOLAConfig(), BYOLAFeatureExtractor()
    worst = 0.0
    for split in ("train", "validation", "test"):
        dataset = datasets.load_dataset("audiofolder", data_dir=str(root), split=split)
        for example in dataset:
            frames = fe.num_frames(len(example["audio"]["array"])) // config.time_downsampling
            worst = max(worst, len(example["phonemes"].split()) / frames)
    print(f"\nPR: at most {worst:.2f} phonemes per output frame")
    assert worst <= 1.0


def test_native_rate_is_kept_on_request(tmp_path):
    root = make_ks(tmp_path / "native", repeats=1, sampling_rate=None)
    assert sf.info(next((root / "train").glob("*.wav"))).samplerate == 22050


@pytest.mark.parametrize("rate", [16000, 8000])
def test_diarization_set_labels_every_output_frame(tmp_path, rate):
    root = make_sd(tmp_path / "sd", examples=(3, 1, 1), sampling_rate=rate)
    dataset = datasets.load_dataset("audiofolder", data_dir=str(root), split="train")
    config, fe = BYOLAConfig(), BYOLAFeatureExtractor()
    overlapping = 0
    for example in dataset:  # the model sees the clip resampled to 16 kHz
        frames = fe.num_frames(len(example["audio"]["array"]) * 16000 // rate) // config.time_downsampling
        activity = example["activity"]
        assert abs(len(activity) - frames) <= 1 and all(len(row) == 2 for row in activity)
        assert any(row[0] for row in activity) and any(row[1] for row in activity)
        overlapping += any(row == [1, 1] for row in activity)
    assert overlapping > 0  # speech overlaps in some mixtures (others start in the first voice's final pause)


def test_mini_sets_never_overwrite_what_they_did_not_write(tmp_path, capsys):
    from byola_hf.superb.mini_sets import main as mini_main

    folder = tmp_path / "mine"
    (folder / "ks" / "train").mkdir(parents=True)
    (folder / "ks" / "train" / "00000.wav").write_bytes(b"the user's recording")
    code, stderr = run_main(mini_main, ["--task", "ks", "--output_dir", folder], capsys)
    assert_one_line(code, stderr, "byola-make-mini-superb", "did not write")
    assert (folder / "ks" / "train" / "00000.wav").read_bytes() == b"the user's recording"
    arguments = ["--task", "ks", "--output_dir", tmp_path / "new", "--sampling_rate", "-5"]
    code, stderr = run_main(mini_main, arguments, capsys)
    assert_one_line(code, stderr, "byola-make-mini-superb", "--sampling_rate must be a rate in Hz")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--layout", "native", "--corpus", "voxceleb"], "--corpus voxceleb is not one of voxceleb1, "),
        (["--layout", "native", "--task", "ks"], "--task is read with --layout audiofolder only"),
        (["--task", "ks", "--corpus", "voxceleb1"], "--corpus is read with --layout native only"),
    ],
)
def test_a_flag_the_layout_does_not_read_is_refused_before_the_folder_is_claimed(flags, message, tmp_path, capsys):
    """A misspelt --corpus was refused after the output folder was claimed (left behind, marked as this command's),
    and --task with --layout native, or --corpus without it, was silently ignored."""
    from byola_hf.superb.mini_sets import main as mini_main

    code, stderr = run_main(mini_main, [*flags, "--output_dir", tmp_path / "new"], capsys)
    assert_one_line(code, stderr, "byola-make-mini-superb", message)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("index, name", every_flag(build_parser()))
def test_a_rerun_with_any_flag_changed_is_refused_unless_it_may_change(index, name, tmp_path):
    """byola-make-mini-superb's record holds every flag but the shared may-change list and which sets it builds
    (each in a subfolder of its own): another --seed or --sampling_rate into the same folder is refused."""
    from byola_hf.superb.mini_sets import MAY_CHANGE, MiniSetArguments, run_record
    from byola_hf.tools.outputs import MAY_CHANGE_ON_RESUME

    (arguments,) = build_parser().parse_args_into_dataclasses(args=["--output_dir", str(tmp_path / "out")])
    assert isinstance(arguments, MiniSetArguments) and MAY_CHANGE - MAY_CHANGE_ON_RESUME == {
        "task",
        "layout",
        "corpus",
    }
    assert_rerun_refused_unless_it_may_change(run_record, arguments, name, MAY_CHANGE, tmp_path)


def spoken_sets(monkeypatch, tmp_path) -> tuple[dict, dict]:
    """Build the KS, IC and SID sets with a recording `speak` (no espeak-ng): `{set: {split: [(utterance, row)]}}`,
    each utterance beside its metadata.csv row, and every utterance by path (later builds' too)."""
    import csv

    from byola_hf.superb import mini_sets

    spoken = {}
    monkeypatch.setattr(mini_sets, "speak", lambda jobs, *_: spoken.update({path: u for u, path in jobs}))
    built = {
        "ks": make_ks(tmp_path / "ks", repeats=1, seed=3),
        "ic": make_ic(tmp_path / "ic", examples_per_voice=3),
        "sid": make_sid(tmp_path / "sid", (2, 1, 1)),
    }
    sets = {}
    for name, root in built.items():
        sets[name] = {}
        for split in ("train", "validation", "test"):
            with open(root / split / "metadata.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
            sets[name][split] = [(spoken[root / split / row["file_name"]], row) for row in rows]
    return sets, spoken


def test_each_row_labels_its_own_clip_and_splits_share_no_voice_or_sentence(monkeypatch, tmp_path):
    """A label row shifted against its clip, a validation split spoken by training voices, SID sentences repeated
    across splits, IC labels drawn apart from the spoken command and a --seed ignored all built sets that load and
    train."""
    from byola_hf.superb.mini_sets import IC_ACTIONS

    sets, spoken = spoken_sets(monkeypatch, tmp_path)
    voices = {"train": set(TRAIN_VOICES), "validation": set(VALIDATION_VOICES), "test": set(TEST_VOICES)}
    for split, pairs in sets["ks"].items():
        assert pairs and all(u.text == row["label"] and u.voice in voices[split] for u, row in pairs)
    for split, pairs in sets["ic"].items():
        for utterance, row in pairs:
            place = "" if row["location"] == "none" else f" in the {row['location']}"
            assert utterance.text == row["text"] == f"{IC_ACTIONS[row['action']]} the {row['object']}{place}"
            assert utterance.voice in voices[split]
    sentences = [{u.text for u, _ in pairs} for pairs in sets["sid"].values()]
    assert all(u.voice == row["label"] for pairs in sets["sid"].values() for u, row in pairs)
    assert not (sentences[0] & sentences[1] or sentences[0] & sentences[2] or sentences[1] & sentences[2])
    again = make_ks(tmp_path / "ks4", repeats=1, seed=4)  # another seed: other speeds and pitches
    variants = [(u.speed, u.pitch) for u, _ in sets["ks"]["train"]]
    assert variants != [
        (spoken[again / "train" / f"{i:05d}.wav"].speed, spoken[again / "train" / f"{i:05d}.wav"].pitch)
        for i in range(len(variants))
    ]


def test_diarization_activity_is_each_speakers_own(monkeypatch, tmp_path):
    """A speaker is active where its own track's energy passes 1 % of that track's peak: a voice 26 dB quieter than
    the other is still labelled where it speaks."""
    import numpy as np

    from byola_hf.superb import mini_sets

    calls = []

    def tone(utterance, path, rate, subtype="FLOAT"):
        calls.append(path)
        amplitude = 1.0 if len(calls) % 2 else 0.05  # every mixture's second voice is quiet
        sf.write(path, amplitude * np.sin(np.arange(rate) * 0.3).astype(np.float32), rate, subtype=subtype)

    monkeypatch.setattr(mini_sets, "synthesise", tone)
    root = make_sd(tmp_path / "sd", examples=(2, 1, 1))
    dataset = datasets.load_dataset("json", data_files=str(root / "train" / "metadata.jsonl"), split="train")
    for activity in dataset["activity"]:  # each voice speaks one second: 12 whole 80 ms frames at least
        assert min(sum(row[0] for row in activity), sum(row[1] for row in activity)) >= 12

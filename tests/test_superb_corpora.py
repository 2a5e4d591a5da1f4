"""SUPERB corpora in their native layouts (tiny espeak-ng copies built here), and run_superb's trust contract:
each corpus end to end, the readers' tricky cases as s3prl reads them, malformed layouts in one line, output folders
owned and resumed, pushes private by default."""

import copy
import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from byola_hf import BYOLAConfig
from byola_hf.superb.corpora.readers import (
    KS_CLASSES,
    CorpusRequest,
    default_phonemes,
    hold_out,
    read_iemocap,
    read_librimix,
    read_libriphone,
    read_librispeech_split,
    read_speech_commands,
    read_voxceleb1,
    speech_commands_split,
)
from byola_hf.superb.mini_sets import MINI_CORPORA, VOICES
from byola_hf.superb.run import build_parser, main, run_record
from byola_hf.superb.tasks import SUPERB_TASKS
from byola_hf.tools.outputs import MAY_CHANGE_ON_RESUME

from conftest import QUICK_TRAINER_FLAGS, every_flag, slow


TRAINING = ["--max_steps", "2", "--per_device_train_batch_size", "4", *QUICK_TRAINER_FLAGS]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Every mini corpus, built once (a few seconds of espeak-ng)."""
    root = tmp_path_factory.mktemp("corpora")
    built = {name: make(root / name) for name, make in MINI_CORPORA.items()}
    built["speech_commands"], built["speech_commands_test"] = built["speech_commands"]
    return built


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Each test's corpus caches and cached log-mels in its own folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


def run_superb(capsys, *arguments: str) -> tuple[int, str]:
    """`byola-run-superb ARGUMENTS` in this process: (exit code, stderr)."""
    try:
        main([*arguments])
        code = 0
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


def one_line_error(code: int, stderr: str) -> str:
    """The command's one error line (asserting there is exactly one and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.startswith("byola-run-superb: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def corpus_arguments(name: str, corpora: dict[str, Path]) -> list[str]:
    root = corpora[name]
    extra = {
        "libriphone": ["--lexicon", str(root / "lexicon.txt"), "--lexicon", str(root / "lexicon-others.txt")],
        "speech_commands": ["--test_dir", str(corpora["speech_commands_test"]), "--eval_split_name", "test"],
        "iemocap": ["--fold", "2", "--eval_split_name", "test"],
    }
    return ["--superb_corpus", name, "--data_dir", str(root), *extra.get(name, [])]


METRICS = {
    "voxceleb1": ("sid", "eval_accuracy"),
    "libriphone": ("pr", "eval_per"),
    "speech_commands": ("ks", "eval_accuracy"),
    "fluent_commands": ("ic", "eval_accuracy"),
    "iemocap": ("er", "eval_accuracy"),
    "librimix": ("sd", "eval_der"),
}


@pytest.mark.parametrize("name", list(METRICS))
def test_corpus_end_to_end(name, corpora, random2048_dir, tmp_path, capsys):
    output = tmp_path / name
    arguments = ["--model_name_or_path", str(random2048_dir), "--output_dir", str(output), *TRAINING]
    code, stderr = run_superb(capsys, *corpus_arguments(name, corpora), *arguments)
    assert code == 0, stderr[-3000:]
    task, key = METRICS[name]
    metrics = json.loads((output / "eval_results.json").read_text())
    assert np.isfinite(metrics[key]) and metrics[key] >= 0 and metrics["eval_samples"] > 0
    assert f"task: {task}" in (output / "README.md").read_text()
    config = json.loads((output / "config.json").read_text())
    if name == "speech_commands":
        assert list(config["id2label"].values()) == KS_CLASSES  # s3prl's 12 classes in s3prl's order
    if name == "iemocap":
        assert list(config["id2label"].values()) == ["neu", "hap", "ang", "sad"]
    if name == "fluent_commands":
        assert config["classifier_slots"] == [4, 3, 2]  # action, object, location values seen in training
    if name == "libriphone":
        vocab = json.loads((output / "vocab.json").read_text())
        assert len(vocab) == 2 + 71 and vocab["SIL"] == 2  # blank, unknown, then s3prl's phoneme list
    # The same command again: the corpus is read from its one cached copy.
    code, stderr = run_superb(capsys, *corpus_arguments(name, corpora), *arguments)
    assert code == 0, stderr[-3000:]
    assert len(list((tmp_path / "hf_datasets" / "byola_hf").glob("corpus-*"))) == 1


def test_libriphone_lexicon_as_s3prl_reads_it(corpora):
    root = corpora["libriphone"]
    request = CorpusRequest(root=root, lexicon=[str(root / "lexicon.txt"), str(root / "lexicon-others.txt")])
    records = read_libriphone(request)
    # THE has two pronunciations: the first (DH AH0) is taken; GO and UP come from the second lexicon file.
    assert records.splits["train"]["phonemes"][0] == "DH AH0 K AE1 T S AE1 T AA1 N DH AH0 M AE1 T"
    assert records.splits["train"]["phonemes"][3] == "G OW1 AH1 P"
    # Each utterance's text is its transcript line as written (the ASR references), beside its own FLAC.
    for split in records.splits.values():
        for audio, text in zip(split["audio"], split["text"]):
            utterance = Path(audio).stem
            lines = (Path(audio).parent / f"{utterance.rsplit('-', 1)[0]}.trans.txt").read_text().splitlines()
            assert [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == utterance] == [text]
    vocabulary = default_phonemes()
    assert len(vocabulary) == 71 and vocabulary[:4] == ["SIL", "SPN", "AA0", "AA1"] and vocabulary[-1] == "ZH"
    assert records.vocabulary == vocabulary


def test_libriphone_missing_word_and_unknown_phoneme_are_one_line(corpora, random2048_dir, tmp_path, capsys):
    root = tmp_path / "libri"
    shutil.copytree(corpora["libriphone"], root)
    base = ["--superb_corpus", "libriphone", "--data_dir", str(root), "--model_name_or_path", str(random2048_dir)]
    # Without the second lexicon, GO is in no lexicon: the word and its transcript file are named.
    code, stderr = run_superb(
        capsys, *base, "--lexicon", str(root / "lexicon.txt"), "--output_dir", str(tmp_path / "a")
    )
    line = one_line_error(code, stderr)
    assert "The word GO of " in line and "1-100.trans.txt (utterance 1-100-0003) is in no lexicon" in line
    (root / "bad-lexicon.txt").write_text("CAT K AE1 T\nDOG D AOX G\n")
    code, stderr = run_superb(
        capsys, *base, "--lexicon", str(root / "bad-lexicon.txt"), "--output_dir", str(tmp_path / "b")
    )
    line = one_line_error(code, stderr)
    assert "bad-lexicon.txt line 2: phoneme 'AOX' of DOG is not in s3prl's phoneme vocabulary" in line
    code, stderr = run_superb(capsys, *base, "--output_dir", str(tmp_path / "c"))
    assert "libriphone needs --lexicon" in one_line_error(code, stderr)


def test_librispeech_flac_missing_from_its_transcript_is_refused(tmp_path):
    """A FLAC file its chapter's transcript does not list was left out of the split without a word; s3prl reads
    every FLAC of the split (and stops on one without a transcript line)."""
    chapter = tmp_path / "train-clean-100" / "1" / "10"
    chapter.mkdir(parents=True)
    for utterance in ("1-10-0000", "1-10-0001"):
        (chapter / f"{utterance}.flac").touch()  # the reader lists files; it does not decode them
    (chapter / "1-10.trans.txt").write_text("1-10-0000 HELLO\n")
    with pytest.raises(ValueError, match=r"1/10/1-10-0001.flac is in no line of a .trans.txt"):
        read_librispeech_split(tmp_path / "train-clean-100", {"HELLO": ["HH", "AH0", "L", "OW1"]})


def test_speech_commands_unknown_and_silence_as_s3prl_builds_them(corpora):
    records = read_speech_commands(CorpusRequest(root=corpora["speech_commands"], seed=3))
    for split in ("train", "validation"):
        labels = records.splits[split]["label"]
        assert set(labels) == {"yes", "no", "_unknown_", "_silence_"}  # "bed" is one of the other words
        crops = [item for item in records.splits[split]["audio"] if not isinstance(item, str)]
        assert len(crops) == labels.count("_silence_") == 3  # as many as the average word has clips
        assert all(crop.samples == 16000 and "_background_noise_" in crop.path for crop in crops)
    # Every clip of a speaker falls in the same split (the hash of the name before "_nohash_").
    assert speech_commands_split("abc_nohash_0.wav") == speech_commands_split("abc_nohash_4.wav")
    train = {Path(path).name.split("_")[0] for path in records.splits["train"]["audio"] if isinstance(path, str)}
    validation = {Path(p).name.split("_")[0] for p in records.splits["validation"]["audio"] if isinstance(p, str)}
    assert train and validation and not train & validation


def test_speech_commands_split_is_the_readmes_which_set_with_its_testing_tenth_discarded():
    """Speech Commands' README assigns a speaker by `sha1(name before "_nohash_") % (2**27) * 100 / (2**27 - 1)`:
    below 10 validation, below 20 testing (s3prl discards it: the test set is separate), else training. Putting
    the testing tenth into training survived the speaker-disjointness check above."""
    import hashlib

    def readme_which_set(name: str) -> str:
        percentage = (int(hashlib.sha1(name.encode()).hexdigest(), 16) % 2**27) * (100.0 / (2**27 - 1))
        return "validation" if percentage < 10 else "testing" if percentage < 20 else "training"

    expected = {"validation": "validation", "testing": None, "training": "train"}
    names = [f"{index:08x}" for index in range(3000)]
    got = [speech_commands_split(f"{name}_nohash_{index % 5}.wav") for index, name in enumerate(names)]
    assert got == [expected[readme_which_set(name)] for name in names]
    shares = {split: got.count(split) / len(got) for split in ("validation", None, "train")}
    assert abs(shares["validation"] - 0.1) < 0.02 and abs(shares[None] - 0.1) < 0.02, shares


def test_librimix_segments_cover_the_rounded_frames(tmp_path):
    """A segment covers output frames round(start * fps) to round(end * fps) (s3prl's rounding): at 12.5 frames
    per second, 0.05-0.95 s is frames 1..11 (truncating gave 0..10) and 0.3-0.66 s frames 4..7."""
    import soundfile as sf

    from byola_hf.superb.corpora.readers import read_kaldi_dir

    sf.write(tmp_path / "mix.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "wav.scp").write_text(f"mix {tmp_path / 'mix.wav'}\n")
    (tmp_path / "utt2spk").write_text("b-1 b\na-1 a\n")
    (tmp_path / "segments").write_text("b-1 mix 0.05 0.95\na-1 mix 0.3 0.66\n")
    records = read_kaldi_dir(tmp_path, 12.5)
    expected = np.zeros((12, 2), np.int8)
    expected[4:8, 0] = 1  # speaker a (speakers in sorted order)
    expected[1:12, 1] = 1
    np.testing.assert_array_equal(records["activity"][0], expected)


def test_speech_commands_silence_is_one_second_of_a_background_file_at_any_rate(corpora, tmp_path):
    """A 44.1 kHz background recording gave 0.36 s `_silence_` clips (16,000 of its samples, read as 16 kHz)."""
    import soundfile as sf

    from byola_hf.superb.corpora import audio_items

    root = tmp_path / "speech_commands"
    shutil.copytree(corpora["speech_commands"], root)
    for noise in (root / "_background_noise_").glob("*.wav"):
        waveform, rate = sf.read(noise)
        assert rate == 16000
        sf.write(
            noise,
            np.interp(np.arange(len(waveform) * 44100 // rate) * rate / 44100, np.arange(len(waveform)), waveform),
            44100,
        )
    records = read_speech_commands(CorpusRequest(root=root, seed=3))
    crops = [item for item in records.splits["train"]["audio"] if not isinstance(item, str)]
    assert crops and all(crop.samples == 44100 for crop in crops)
    for item in audio_items(crops, 16000):
        waveform, rate = sf.read(io.BytesIO(item["bytes"]))
        assert rate == 16000 and len(waveform) == 16000


def test_iemocap_merges_excited_into_happy_and_holds_out_as_s3prl(corpora):
    records = read_iemocap(CorpusRequest(root=corpora["iemocap"], fold=3))
    test = records.splits["test"]
    assert all("Session3" in path for path in test["audio"])
    assert test["label"] == ["neu", "hap", "hap", "ang", "sad"]  # exc -> hap, fru dropped
    assert len(records.splits["train"]["audio"]) + len(records.splits["validation"]["audio"]) == 4 * 5
    # The validation split is s3prl's: torch.random_split of the training sessions after torch.manual_seed(0).
    # s3prl keeps int((1 - 0.2) * n) for training: 9 of 12, where rounding would keep 10.
    for count in (20, 12):
        items = list(range(count))
        records_in = {"audio": items, "label": items}
        torch.manual_seed(0)
        cut = int((1 - 0.2) * count)
        expected = torch.utils.data.random_split(items, [cut, count - cut])
        train, validation = hold_out(records_in, 0.2)
        assert train["audio"] == list(expected[0]) and validation["audio"] == list(expected[1])


def test_librimix_activity_follows_the_segments(corpora):
    records = read_librimix(CorpusRequest(root=corpora["librimix"], frames_per_second=12.5))
    segments = (corpora["librimix"] / "train" / "segments").read_text().split("\n")[:2]
    first_end = float(segments[0].split()[3])
    second_start = float(segments[1].split()[2])
    activity = np.array(records.splits["train"]["activity"][0])
    speakers = sorted(line.split()[0].split("-")[0] for line in segments)
    first = speakers.index(segments[0].split()[0].split("-")[0])
    assert activity.shape[1] == 2
    assert (
        activity[: int(np.rint(first_end * 12.5)), first].all()
        and not activity[int(np.rint(first_end * 12.5)) :, first].any()
    )
    assert not activity[: int(np.rint(second_start * 12.5)), 1 - first].any()
    assert activity[int(np.rint(second_start * 12.5)) :, 1 - first].any()


def test_voxceleb1_split_file_as_s3prl_reads_it(corpora, tmp_path):
    records = read_voxceleb1(CorpusRequest(root=corpora["voxceleb1"]))
    assert [len(records.splits[s]["audio"]) for s in ("train", "validation", "test")] == [12, 3, 3]
    assert records.label_names == {"label": ["id10001", "id10002", "id10003"]}
    # The dev and test archives side by side (ROOT/*/wav), as s3prl searches them.
    root = tmp_path / "vox"
    shutil.copytree(corpora["voxceleb1"] / "wav", root / "vox1_dev" / "wav")
    shutil.copy(corpora["voxceleb1"] / "iden_split.txt", root / "split.txt")
    moved = read_voxceleb1(CorpusRequest(root=root, split_file=str(root / "split.txt")))
    assert moved.splits["test"]["label"] == records.splits["test"]["label"]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no_split_file", "Missing {root}/iden_split.txt: expected the VoxCeleb1 split file"),
        ("missing_wav", "split.txt line 2 names id10001/video1/00001.wav, which is in none of {root}/wav"),
        ("bad_line", "split.txt line 1: expected '<1|2|3> <speaker>/<video>/<utterance>.wav', got '4 x.wav'"),
    ],
)
def test_malformed_voxceleb1_is_one_line(case, expected, corpora, random2048_dir, tmp_path, capsys):
    root = tmp_path / "vox"
    shutil.copytree(corpora["voxceleb1"], root)
    split = root / "split.txt"
    shutil.move(root / "iden_split.txt", split)
    if case == "missing_wav":
        (root / "wav" / "id10001" / "video1" / "00001.wav").unlink()
    if case == "bad_line":
        split.write_text("4 x.wav\n" + split.read_text())
    flags = [] if case == "no_split_file" else ["--split_file", str(split)]
    code, stderr = run_superb(
        capsys,
        *["--superb_corpus", "voxceleb1", "--data_dir", str(root), *flags],
        *["--model_name_or_path", str(random2048_dir), "--output_dir", str(tmp_path / "out")],
    )
    assert expected.format(root=root.resolve()) in one_line_error(code, stderr)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_malformed_other_layouts_are_one_line(corpora, random2048_dir, tmp_path, capsys):
    model = ["--model_name_or_path", str(random2048_dir)]
    fluent = tmp_path / "fluent"
    shutil.copytree(corpora["fluent_commands"], fluent)
    text = (fluent / "data" / "valid_data.csv").read_text().replace(",location", ",place")
    (fluent / "data" / "valid_data.csv").write_text(text)
    code, stderr = run_superb(
        capsys,
        "--superb_corpus",
        "fluent_commands",
        "--data_dir",
        str(fluent),
        *model,
        "--output_dir",
        str(tmp_path / "a"),
    )
    assert "valid_data.csv has no column location: expected path, action, object, location" in one_line_error(
        code, stderr
    )
    code, stderr = run_superb(
        capsys,
        "--superb_corpus",
        "iemocap",
        "--data_dir",
        str(corpora["iemocap"]),
        "--fold",
        "6",
        *model,
        "--output_dir",
        str(tmp_path / "b"),
    )
    assert "--fold must be 1..5" in one_line_error(code, stderr)
    mix = tmp_path / "mix"
    shutil.copytree(corpora["librimix"], mix)
    (mix / "dev" / "utt2spk").unlink()
    code, stderr = run_superb(
        capsys, "--superb_corpus", "librimix", "--data_dir", str(mix), *model, "--output_dir", str(tmp_path / "c")
    )
    assert f"Missing {mix.resolve()}/dev/utt2spk: expected 'UTTERANCE SPEAKER' lines" in one_line_error(code, stderr)
    code, stderr = run_superb(
        capsys,
        "--superb_corpus",
        "librimix",
        "--task",
        "ks",
        "--data_dir",
        str(mix),
        *model,
        "--output_dir",
        str(tmp_path / "d"),
    )
    assert "--superb_corpus librimix is for the sd task, not --task ks" in one_line_error(code, stderr)


# Trust: output folders, resume, labels, pushes ---------------------------------------------------------------------


def ks_arguments(corpora, model, output) -> list[str]:
    return [
        *["--superb_corpus", "speech_commands", "--data_dir", str(corpora["speech_commands"])],
        *["--model_name_or_path", str(model), "--output_dir", str(output)],
    ]


def test_output_folder_is_owned_resumed_and_refused(corpora, random2048_dir, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="byola_hf.superb.run")
    caplog.set_level(logging.INFO, logger="byola_hf.tools.cli")
    output = tmp_path / "run"
    steps = [a if a != "no" else "steps" for a in TRAINING] + ["--save_steps", "1", "--save_total_limit", "1"]
    code, stderr = run_superb(capsys, *ks_arguments(corpora, random2048_dir, output), *steps)
    assert code == 0, stderr[-3000:]
    assert (output / "checkpoint-2").is_dir()
    # The same run again, longer: it resumes from its last checkpoint, as transformers' example scripts do.
    longer = [*steps, "--max_steps", "3"]
    code, stderr = run_superb(capsys, *ks_arguments(corpora, random2048_dir, output), *longer)
    assert code == 0, stderr[-3000:]
    assert f"Resuming from {output}/checkpoint-2" in caplog.text
    assert json.loads((output / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    # Once more, finished: nothing trained (Trainer resumed mid-epoch at max_steps would take one more step), and
    # the training metrics of the run that trained are kept.
    train_results = (output / "train_results.json").read_text()
    code, stderr = run_superb(capsys, *ks_arguments(corpora, random2048_dir, output), *longer)
    assert code == 0, stderr[-3000:]
    assert "checkpoint-3 is the run's last step" in caplog.text and not (output / "checkpoint-4").exists()
    assert (output / "train_results.json").read_text() == train_results
    # Another learning rate, label smoothing or data order into the same folder: refused naming the flag (Trainer
    # would apply each to the resumed steps), nothing touched; --overwrite_output_dir starts over.
    for flag, value in (("learning_rate", "0.5"), ("label_smoothing_factor", "0.2"), ("data_seed", "11")):
        code, stderr = run_superb(capsys, *ks_arguments(corpora, random2048_dir, output), *longer, f"--{flag}", value)
        message = one_line_error(code, stderr)
        assert "holds a byola-run-superb run made with other inputs or arguments" in message
        assert f"it differs in arguments.{flag})" in message
    changed = [*steps, "--learning_rate", "0.5"]
    assert (output / "checkpoint-3").is_dir()
    for name in ("notes.md", "notes.txt", "labels.json", "plot.png", "my_script.py", "old.bin"):
        (output / name).write_text("mine")
    code, stderr = run_superb(
        capsys, *ks_arguments(corpora, random2048_dir, output), *changed, "--overwrite_output_dir"
    )
    assert code == 0, stderr[-3000:]
    assert (
        caplog.text.count("Resuming") == 2
        and (output / "checkpoint-2").is_dir()
        and not (output / "checkpoint-3").exists()
    )
    for name in ("notes.md", "notes.txt", "labels.json", "plot.png", "my_script.py", "old.bin"):
        assert (output / name).read_text() == "mine"  # not one of the command's outputs
    # A folder it did not write is refused; a missing --resume_from_checkpoint is one line.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.wav").write_bytes(b"x")
    code, stderr = run_superb(capsys, *ks_arguments(corpora, random2048_dir, foreign), *TRAINING)
    assert "already holds files that byola-run-superb did not write" in one_line_error(code, stderr)
    assert [p.name for p in foreign.iterdir()] == ["data.wav"]
    code, stderr = run_superb(
        capsys,
        *ks_arguments(corpora, random2048_dir, tmp_path / "x"),
        *TRAINING,
        "--resume_from_checkpoint",
        str(tmp_path / "nope"),
    )
    assert "--resume_from_checkpoint" in one_line_error(code, stderr) and "no such checkpoint folder" in stderr


def audiofolder(tmp_path: Path, corpora, rows: list[tuple[str, str]], header: str = "file_name,label") -> Path:
    """An audiofolder `train/` of the mini Speech Commands clips with the given (file, label) metadata rows."""
    folder = tmp_path / "folder" / "train"
    folder.mkdir(parents=True)
    clips = sorted((corpora["speech_commands"] / "yes").glob("*.wav"))
    for index, _ in enumerate(rows):
        shutil.copy(clips[index % len(clips)], folder / f"{index}.wav")
    (folder / "metadata.csv").write_text(header + "\n" + "".join(f"{name},{label}\n" for name, label in rows))
    return folder.parent


@pytest.mark.parametrize(
    "rows, header, flags, expected",
    [
        (
            [("0.wav", "yes"), ("1.wav", ""), ("2.wav", "no")],
            "file_name,label",
            [],
            "The train split has an empty 'label' label at ",
        ),
        (
            [("0.wav", "yes"), ("1.wav", "no")],
            "file_name,word",
            [],
            "The train split has no label column 'label'; its columns are ['audio', 'word']. Name the label column "
            "with --label_column_name.",
        ),
        (
            [("0.wav", "yes"), ("1.wav", "no")],
            "file_name,label",
            ["--eval_split_name", "train", "--label_column_name", "nope"],
            "has no label column 'nope'",
        ),
        (
            [("0.wav", "yes"), ("missing.wav", "no")],
            "file_name,label",
            [],
            "missing.wav (row 1), which does not exist",
        ),
    ],
)
def test_label_mistakes_are_one_line(rows, header, flags, expected, corpora, random2048_dir, tmp_path, capsys):
    data = audiofolder(tmp_path, corpora, rows, header)
    code, stderr = run_superb(
        capsys,
        *["--task", "ks", "--data_dir", str(data), "--model_name_or_path", str(random2048_dir)],
        *["--output_dir", str(tmp_path / "out"), "--validation_split_percentage", "0", *flags, *TRAINING],
    )
    line = one_line_error(code, stderr)
    assert expected in line and not (tmp_path / "out").exists()  # refused before anything is written
    if "empty" in expected:
        assert "1.wav (row 1)" in line and "an empty cell is not a class" in line


def test_mini_corpora_use_distinct_voices():
    assert len(set(VOICES)) == len(VOICES) >= 4


@slow
def test_from_s3prl_doc_commands_run_as_written(random2048_checkpoint, tmp_path):
    """docs/from_s3prl.md's tiny-corpora block, as written (the random 2048-d checkpoint for the official one)."""
    import os
    import subprocess
    import sys

    text = (Path(__file__).resolve().parents[1] / "docs" / "from_s3prl.md").read_text()
    script = text.split("## Try it on tiny copies")[1].split("```bash\n")[1].split("```")[0]
    script = script.replace("AudioNTT2020-BYOLA-64x96d2048.pth", str(random2048_checkpoint))
    bin_dir = str(Path(sys.executable).parent) + "/"
    script = "\n".join(bin_dir + line if line.startswith("byola-") else line for line in script.splitlines())
    environment = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    result_dir = tmp_path / "result"
    assert 0 <= json.loads((result_dir / "vc1" / "test_results.json").read_text())["test_accuracy"] <= 1
    assert json.loads((result_dir / "vc1-test" / "eval_results.json").read_text())["eval_split"] == "test"
    assert json.loads((result_dir / "pr" / "test_results.json").read_text())["test_per"] >= 0
    stats = json.loads((tmp_path / "byola-2048-vc1" / "config.json").read_text())
    assert stats["stats_provenance"]["split"] == "train" and np.isfinite(stats["mean"])


def test_vocab_file_is_read_and_checked(corpora, tmp_path):
    root = corpora["libriphone"]
    lexicons = [str(root / "lexicon.txt"), str(root / "lexicon-others.txt")]
    vocab = tmp_path / "phonemes.txt"
    vocab.write_text("\n".join(token for token in default_phonemes() if token != "HH") + "\n")
    with pytest.raises(ValueError, match=r"lexicon.txt line \d+: phoneme 'HH' of HOME is not in .*phonemes.txt"):
        read_libriphone(CorpusRequest(root=root, lexicon=lexicons, vocab_file=str(vocab)))
    vocab.write_text("SIL\nSIL\n")
    with pytest.raises(ValueError, match="expected one distinct phoneme per line"):
        read_libriphone(CorpusRequest(root=root, lexicon=lexicons, vocab_file=str(vocab)))
    vocab.write_text("\n".join(default_phonemes()) + "\n")
    records = read_libriphone(CorpusRequest(root=root, lexicon=lexicons, vocab_file=str(vocab)))
    assert records.vocabulary == default_phonemes()


def test_new_statistics_or_learning_rate_change_the_run_record():
    from transformers import TrainingArguments

    from byola_hf import BYOLAConfig
    from byola_hf.superb.run import DataTrainingArguments, ModelArguments, run_record
    from byola_hf.superb.tasks import SUPERB_TASKS

    model, data = ModelArguments(model_name_or_path="m"), DataTrainingArguments(task="ks")
    training = TrainingArguments(output_dir="unused", report_to="none")
    first = run_record(model, data, training, SUPERB_TASKS["ks"], BYOLAConfig(mean=-9.0, std=4.0), {})
    assert first == run_record(model, data, training, SUPERB_TASKS["ks"], BYOLAConfig(mean=-9.0, std=4.0), {})
    assert first != run_record(model, data, training, SUPERB_TASKS["ks"], BYOLAConfig(mean=-8.0, std=4.0), {})
    training.max_steps = 10  # training longer continues the same run
    assert first == run_record(model, data, training, SUPERB_TASKS["ks"], BYOLAConfig(mean=-9.0, std=4.0), {})
    training.learning_rate = 0.5
    assert first != run_record(model, data, training, SUPERB_TASKS["ks"], BYOLAConfig(mean=-9.0, std=4.0), {})


def test_a_keyword_spotting_run_begun_with_the_clips_as_they_are_is_not_resumed_class_balanced(tmp_path):
    """KS now draws its training clips class-balanced; a KS run stopped before that change (its record as it was then,
    the same arguments) resumed from its checkpoint with the other draw, half one training and half another, without a
    word. Its record lacks the draw, so the re-run is refused naming it; other tasks' records are unchanged."""
    from transformers import TrainingArguments

    from byola_hf import BYOLAConfig
    from byola_hf.superb.run import COMMAND, OUTPUT_PATTERNS, DataTrainingArguments, ModelArguments, run_record
    from byola_hf.tools.outputs import claim_output_dir

    model, training = ModelArguments(model_name_or_path="m"), TrainingArguments(output_dir="unused", report_to="none")
    config = BYOLAConfig(mean=-9.0, std=4.0)
    record = run_record(model, DataTrainingArguments(task="ks"), training, SUPERB_TASKS["ks"], config, {})
    other = run_record(model, DataTrainingArguments(task="er"), training, SUPERB_TASKS["er"], config, {})
    assert record["training_draw"] == "class-balanced" and "training_draw" not in other
    before = {key: value for key, value in record.items() if key != "training_draw"}
    claim_output_dir(tmp_path / "out", COMMAND, before, OUTPUT_PATTERNS)
    (tmp_path / "out" / "checkpoint-2").mkdir()
    with pytest.raises(ValueError, match="it differs in training_draw"):
        claim_output_dir(tmp_path / "out", COMMAND, record, OUTPUT_PATTERNS)


def test_weights_converted_again_change_the_run_record(tmp_path):
    """Another model's weights saved into the same folder with the same config: the checkpoints there hold the old
    encoder, so a re-run must not resume from them."""
    from transformers import TrainingArguments

    from byola_hf import BYOLAConfig, BYOLAModel
    from byola_hf.superb.run import DataTrainingArguments, ModelArguments, run_record
    from byola_hf.superb.tasks import SUPERB_TASKS

    config = BYOLAConfig(feature_d=64, mean=-9.0, std=4.0)
    BYOLAModel(config).save_pretrained(tmp_path / "model")
    model, data = ModelArguments(model_name_or_path=str(tmp_path / "model")), DataTrainingArguments(task="ks")
    training = TrainingArguments(output_dir="unused", report_to="none")
    first = run_record(model, data, training, SUPERB_TASKS["ks"], config, {})
    assert first == run_record(model, data, training, SUPERB_TASKS["ks"], config, {})
    weights = tmp_path / "model" / "model.safetensors"
    BYOLAModel(config).save_pretrained(tmp_path / "model")  # other random weights, same size
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert first != run_record(model, data, training, SUPERB_TASKS["ks"], config, {})


@pytest.mark.parametrize("index, name", every_flag(build_parser()))
def test_run_record_covers_every_flag_but_the_may_change_list(index, name, tmp_path):
    """byola-run-superb's record holds every flag of its three dataclasses (ours and TrainingArguments, as the
    installed releases define them) except the documented may-change list: changing any other changes the record,
    so the re-run is refused."""
    parsed = build_parser().parse_args_into_dataclasses(
        args=["--task", "ks", "--model_name_or_path", "m", "--output_dir", str(tmp_path), *QUICK_TRAINER_FLAGS]
    )
    record = run_record(*parsed, SUPERB_TASKS["ks"], BYOLAConfig(), {})
    changed = list(parsed)
    changed[index] = copy.copy(parsed[index])
    setattr(changed[index], name, f"another {name}")
    assert (run_record(*changed, SUPERB_TASKS["ks"], BYOLAConfig(), {}) != record) == (
        name not in MAY_CHANGE_ON_RESUME
    )


FOLDER = ["--task", "ks", "--dataset_name", "audiofolder"]


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--superb_corpus", "fluent_commands", "--split_file", "s"], "--split_file is read by --superb_corpus vox"),
        (["--superb_corpus", "speech_commands", "--fold", "3"], "--fold is read by --superb_corpus iemocap only"),
        ([*FOLDER, "--lexicon", "a.txt"], "--lexicon is read by --superb_corpus libriphone only"),
        ([*FOLDER, "--test_dir", "t"], "--test_dir is read by --superb_corpus speech_commands only"),
        ([*FOLDER, "--ctc_head", "bilstm"], "--ctc_head is for the CTC tasks (pr, asr), not ks"),
        *[
            (["--superb_corpus", "fluent_commands", flag, value], f"{flag} chooses a datasets source's splits or")
            for flag, value in [("--label_column_name", "action"), ("--train_split_name", "validation"),
                                ("--audio_column_name", "wav"), ("--dataset_name", "fsc-splits"),
                                ("--validation_split_percentage", "20")]
        ],
    ],
)  # fmt: skip
def test_a_flag_the_run_would_not_read_is_one_line(flags, expected, corpora, random2048_dir, tmp_path, capsys):
    """A corpus's file flag without that corpus, or a CTC flag on another task, was silently ignored; so were the
    flags of a datasets source with --superb_corpus (--label_column_name action trained and scored all three IC
    slots, --train_split_name validation trained on the training split), or --audio_column_name ended in a
    traceback."""
    arguments = [*flags, "--data_dir", str(corpora["fluent_commands"]), "--model_name_or_path", str(random2048_dir)]
    code, stderr = run_superb(capsys, *arguments, "--output_dir", str(tmp_path / "out"))
    assert expected in one_line_error(code, stderr)
    assert not (tmp_path / "out").exists()


def test_saved_splits_follow_every_files_size_and_time_and_voxceleb1_keeps_s3prls_cut(tmp_path):
    """The corpus cache's fingerprint changes when a listed file is rewritten, even at the same size (a re-recorded
    clip would otherwise be read from the old cache); and VoxCeleb1's training clips are cut at s3prl's 8 s."""
    from byola_hf.superb.corpora import CORPORA, records_fingerprint
    from byola_hf.superb.corpora.readers import CorpusRecords, CorpusRequest, Crop

    clip, noise = tmp_path / "a.wav", tmp_path / "noise.wav"
    clip.write_bytes(b"RIFF one")
    noise.write_bytes(b"RIFF noise")
    splits = {"train": {"audio": [str(clip), Crop(str(noise), 0, 16000)], "label": ["yes", "_silence_"]}}
    request, records = CorpusRequest(root=tmp_path), CorpusRecords(splits=splits)
    first = records_fingerprint("speech_commands", request, records)
    assert records_fingerprint("speech_commands", request, copy.deepcopy(records)) == first
    clip.write_bytes(b"RIFF two")  # the same size
    os.utime(clip, ns=(0, os.stat(clip).st_mtime_ns + 10**9))
    second = records_fingerprint("speech_commands", request, records)
    noise.write_bytes(b"RIFF longer noise")  # a crop's recording too
    assert len({first, second, records_fingerprint("speech_commands", request, records)}) == 3
    assert {name: spec.train_max_samples for name, spec in CORPORA.items() if spec.train_max_samples} == {
        "voxceleb1": 8 * 16000
    }

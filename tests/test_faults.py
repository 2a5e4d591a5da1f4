"""Fault cases that once gave silently wrong results (issue 33, section 2): each is now an error naming its cause and
fix, or the right answer. One test per case, on small real data, the commands run in this process."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import QUICK_TRAINER_FLAGS, assert_one_line, run_main


def save_embeddings(folder, embeddings, labels, **columns):
    """A `byola-extract`-like output: a saved dataset with `embedding` and `label` (and `columns`)."""
    import datasets

    data = {"embedding": np.asarray(embeddings, np.float32).tolist(), "label": list(labels), **columns}
    datasets.Dataset.from_dict(data).save_to_disk(str(folder))
    return folder


def blob_embeddings(seed: int, size: int, classes: int = 2) -> tuple[np.ndarray, list[int]]:
    """Separable classes of 8-d embeddings."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size)
    return rng.standard_normal((size, 8)) + 3.0 * labels[:, None], labels.tolist()


# 1. byola-linear-eval --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_linear_eval_refuses_non_finite_embeddings(tmp_path, capsys, split):
    from byola_hf.linear_eval.cli import main

    folders = {}
    for name, seed in (("train", 0), ("test", 1)):
        x, y = blob_embeddings(seed, 20)
        if name == split:
            x[5, 3] = np.nan if split == "train" else np.inf
        folders[name] = save_embeddings(tmp_path / name, x, y)
    arguments = ["--train_dir", folders["train"], "--test_dir", folders["test"], "--epochs", "2"]
    code, stderr = run_main(main, [*arguments, "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", f"row 5 ({split} split)", "NaN or infinite embedding")
    assert not (tmp_path / "out").exists()


def test_linear_eval_names_labels_of_another_type_as_such(tmp_path, capsys):
    """Integer labels in --train_dir and the same classes as strings in --test_dir were refused as "never seen in
    training: 0, 1", which read as the very labels training had; the message now tells the types apart."""
    from byola_hf.linear_eval.cli import main

    x, y = blob_embeddings(0, 20)
    folders = {"train": save_embeddings(tmp_path / "train", x, y)}
    folders["test"] = save_embeddings(tmp_path / "test", x, [str(label) for label in y])
    arguments = ["--train_dir", folders["train"], "--test_dir", folders["test"], "--epochs", "2"]
    code, stderr = run_main(main, [*arguments, "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", "(the same names as training's, of another type): '0', '1'.")


def test_linear_eval_refuses_non_finite_rows_of_a_task_table(tmp_path, capsys):
    from byola_hf.linear_eval.cli import main

    x, y = blob_embeddings(0, 30)
    x[25] = np.nan
    split = ["train"] * 20 + ["test"] * 10
    folder = save_embeddings(tmp_path / "task", x, y, split=split)
    code, stderr = run_main(main, ["--embeddings_dir", folder, "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", "row 25 (split test)")


def test_linear_eval_refuses_a_single_class(tmp_path, capsys):
    from byola_hf.linear_eval.cli import main

    x, _ = blob_embeddings(0, 20)
    train = save_embeddings(tmp_path / "train", x, ["dog"] * 20)
    test = save_embeddings(tmp_path / "test", x[:5], ["dog"] * 5)
    arguments = ["--train_dir", train, "--test_dir", test, "--epochs", "2", "--output_dir", tmp_path / "out"]
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-linear-eval", "has a single class")


# 5. The eval-mode cache of BatchNorm folded into the convolutions --------------------------------------------------


def test_folded_batch_norm_follows_running_statistics_parameters_and_loading(small_model, speech):
    """The CPU kernels fold BatchNorm into the convolutions once and cache the result: after a training-mode forward
    (the running statistics move), an in-place parameter edit and `load_state_dict`, they must compute what the
    reference modules compute, not the network the cache was made of."""
    from byola_hf import BYOLAFeatureExtractor, BYOLAModel
    from byola_hf.audio import load_audio

    features = BYOLAFeatureExtractor.from_pretrained(small_model)
    inputs = features(load_audio(str(speech), 16000), sampling_rate=16000, return_tensors="pt")["input_features"]
    model = BYOLAModel.from_pretrained(small_model).eval()
    other_weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    def both_kernels() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            model.inference_kernels = None
            default = model(inputs).last_hidden_state
            model.inference_kernels = "reference"
            reference = model(inputs).last_hidden_state
        model.inference_kernels = None
        return default, reference

    before, _ = both_kernels()  # fills the cache
    model.train()
    with torch.no_grad():
        model(torch.cat([inputs, inputs * 0.5 + 1.0]))  # moves the running statistics
    model.eval()
    after, reference = both_kernels()
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        model.conv_blocks[1].batch_norm.weight.mul_(1.5)
    edited, reference = both_kernels()
    assert not torch.equal(edited, after)
    torch.testing.assert_close(edited, reference, rtol=1e-4, atol=1e-4)
    model.load_state_dict(other_weights)
    loaded, reference = both_kernels()
    torch.testing.assert_close(loaded, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loaded, before, rtol=1e-4, atol=1e-4)


# 8. The audio-classification pipeline on an encoder without a trained head -----------------------------------------


def test_classification_pipeline_refuses_an_encoder_without_a_trained_head(small_model, classifier_dir, speech):
    """transformers builds a random head on a bare encoder folder; its scores looked like a classifier's. The same
    check as `byola-run-superb --do_eval` refuses it; a saved classifier still runs."""
    from transformers import pipeline

    with pytest.raises(ValueError, match="has no trained BYOLAForSequenceClassification head"):
        pipeline("audio-classification", model=str(small_model))
    scores = pipeline("audio-classification", model=str(classifier_dir))(str(speech), top_k=3)
    assert sorted(score["label"] for score in scores) == ["a", "b", "c"]


# 4 and 9. byola-run-superb on folder-name labels -----------------------------------------------------------------

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "cat"]  # 11: ids 10 and 2 exist


@pytest.fixture(scope="module")
def word_folders(tmp_path_factory) -> Path:
    """An audiofolder of spoken words, `train/<word>/*.wav` (two voices) and `validation/<word>/*.wav` (a third):
    datasets reads the folder names as a `ClassLabel`."""
    root = tmp_path_factory.mktemp("words")
    for split, voices in (("train", ("en", "en+f3")), ("validation", ("en+m3",))):
        for word in WORDS:
            (root / split / word).mkdir(parents=True)
            for index, voice in enumerate(voices):
                path = root / split / word / f"{word}_{index}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), word], check=True)
    return root


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """Each test's cached log-mels in its own folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


def run_superb_on_words(model, data, output, *extra: str) -> None:
    from byola_hf.superb.run import main

    arguments = ["--task", "ks", "--model_name_or_path", model, "--dataset_name", "audiofolder", "--data_dir", data]
    flags = ["--output_dir", output, "--max_steps", "2", "--per_device_train_batch_size", "4", *QUICK_TRAINER_FLAGS]
    main([str(argument) for argument in [*arguments, *flags, *extra]])


def test_run_superb_with_one_seed_gives_one_head(small_model, word_folders, tmp_path, datasets_cache):
    """The head was drawn before anything seeded it: two runs with the same --seed saved different models."""
    from safetensors.torch import load_file

    weights = []
    for name in ("first", "second"):
        run_superb_on_words(small_model, word_folders, tmp_path / name)
        weights.append(load_file(tmp_path / name / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_run_superb_names_folder_classes(small_model, word_folders, tmp_path, datasets_cache, monkeypatch):
    """audiofolder's folder names are a ClassLabel whose rows hold ids: the config, card, confusion matrix and
    pipeline said '0', '1', ... with the ids sorted as text ('10' before '2'). They carry the class names, in the
    ClassLabel's order."""
    from transformers import pipeline

    from byola_hf.tools import plots

    matrices = []
    monkeypatch.setattr(plots, "save_confusion_matrix", lambda *args, **kwargs: matrices.append(args[2]))
    run_superb_on_words(small_model, word_folders, tmp_path / "out")
    names = sorted(WORDS)  # audiofolder's ClassLabel: the folder names, sorted
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert list(config["id2label"].values()) == names and list(config["id2label"]) == [str(i) for i in range(11)]
    assert f"- labels: {', '.join(names)}" in (tmp_path / "out" / "README.md").read_text()
    assert matrices == [names]
    scores = pipeline("audio-classification", model=str(tmp_path / "out"))(str(word_folders / "validation" / "go"
                                                                                 / "go_0.wav"), top_k=11)  # fmt: skip
    assert sorted(score["label"] for score in scores) == names


def test_linear_eval_names_classlabel_classes(tmp_path):
    """byola-linear-eval reported a ClassLabel column's ids as the classes."""
    import datasets

    from byola_hf.linear_eval import LinearEvalArguments, linear_eval

    names = sorted(WORDS)
    features = datasets.Features({"embedding": datasets.Sequence(datasets.Value("float32")),
                                  "label": datasets.ClassLabel(names=names)})  # fmt: skip
    for split, seed in (("train", 0), ("test", 1)):
        x, y = blob_embeddings(seed, 220, classes=11)
        datasets.Dataset.from_dict({"embedding": x.tolist(), "label": y}, features=features).save_to_disk(
            str(tmp_path / split)
        )
    arguments = {"validation_fraction": 0.3, "epochs": 2}
    result = linear_eval(
        LinearEvalArguments(train_dir=str(tmp_path / "train"), test_dir=str(tmp_path / "test"), **arguments)
    )
    assert result.classes == names and set(result.per_class) == set(names)


# 3. SUPERB corpora in their native layouts -----------------------------------------------------------------------


def write_wav(path: Path, seconds: float = 0.5) -> Path:
    """A short tone, 16 kHz mono: the readers check files exist (and LibriMix reads their length)."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), 0.1 * np.sin(np.arange(int(16000 * seconds)) / 7.0), 16000)
    return path


def voxceleb(root: Path, lines: list[str]) -> Path:
    for line in lines:
        write_wav(root / "wav" / line.split()[1])
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


VOX_LINES = ["1 id1/v/1.wav", "1 id1/v/2.wav", "1 id2/v/1.wav", "1 id2/v/2.wav", "3 id1/v/3.wav", "3 id2/v/3.wav"]


@pytest.mark.parametrize("duplicate", ["1 id1/v/1.wav", "3 id1/v/1.wav"], ids=["same-split", "train-and-test"])
def test_voxceleb1_refuses_a_clip_listed_twice(tmp_path, duplicate):
    from byola_hf.superb.corpora.readers import CorpusRequest, read_voxceleb1

    root = voxceleb(tmp_path / "vox", [*VOX_LINES, duplicate])
    with pytest.raises(ValueError, match=r"The clip id1/v/1.wav is listed twice \(.*line 1; .*line 7\)"):
        read_voxceleb1(CorpusRequest(root=root))


def test_voxceleb1_refuses_a_test_speaker_never_trained(small_model, tmp_path, capsys, datasets_cache):
    """The head had a class for every speaker of every split, and scored test speakers it never trained on. The
    recipe's check of labels unseen in training, which refused the same in Fluent Commands, now refuses it."""
    from byola_hf.superb.run import main

    root = voxceleb(tmp_path / "vox", [*VOX_LINES, "2 id1/v/4.wav", "3 id3/v/1.wav"])
    arguments = ["--superb_corpus", "voxceleb1", "--data_dir", root, "--eval_split_name", "test"]
    arguments += ["--model_name_or_path", small_model, "--output_dir", tmp_path / "out", "--max_steps", "1"]
    code, stderr = run_main(main, [*arguments, *QUICK_TRAINER_FLAGS], capsys)
    assert_one_line(code, stderr, "byola-run-superb", "labels in 'label' that never occur in training: id3")


def librispeech(root: Path, chapters: dict[str, list[str]]) -> Path:
    """`root/<speaker>/<chapter>/` with FLAC files, and a transcript of the lines given (None: no transcript)."""
    for chapter, lines in chapters.items():
        folder = root / chapter.replace("-", "/")
        for utterance in [f"{chapter}-{index:04d}" for index in range(2)]:
            write_wav(folder / f"{utterance}.flac")
        if lines is not None:
            (folder / f"{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_refuses_a_chapter_without_transcript_and_a_duplicate_utterance(tmp_path):
    from byola_hf.superb.corpora.readers import read_librispeech_split

    lexicon = {"HELLO": ["HH", "AH0"], "THERE": ["DH", "EH1", "R"]}
    root = librispeech(tmp_path / "a", {"1-10": ["1-10-0000 HELLO", "1-10-0001 THERE"], "2-20": None})
    with pytest.raises(ValueError, match=r"a/2/20 holds FLAC files but no <speaker>-<chapter>.trans.txt"):
        read_librispeech_split(root, lexicon)
    root = librispeech(tmp_path / "b", {"1-10": ["1-10-0000 HELLO", "1-10-0001 THERE", "1-10-0000 THERE"]})
    with pytest.raises(ValueError, match=r"The utterance 1-10-0000 is listed twice \(.*line 1; .*line 3\)"):
        read_librispeech_split(root, lexicon)


def test_fluent_commands_refuses_a_row_listed_twice(tmp_path):
    from byola_hf.superb.corpora.readers import CorpusRequest, read_fluent_commands

    rows = {"train": ["a.wav", "b.wav"], "valid": ["c.wav"], "test": ["d.wav", "a.wav"]}
    for split, files in rows.items():
        lines = ["path,action,object,location", *[f"wavs/{name},activate,lights,none" for name in files]]
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n")
        for name in files:
            write_wav(tmp_path / "wavs" / name)
    with pytest.raises(ValueError, match=r"wavs/a.wav is listed twice \(.*train_data.csv line 2; .*test_data.csv"):
        read_fluent_commands(CorpusRequest(root=tmp_path))


def iemocap(root: Path, lines_of_session) -> Path:
    """Five IEMOCAP sessions; `lines_of_session(session, dialog)` gives each EmoEvaluation file's lines."""
    for session in range(1, 6):
        dialog = f"Ses0{session}F_impro01"
        for index in range(2):
            write_wav(root / f"Session{session}" / "sentences" / "wav" / dialog / f"{dialog}_F00{index}.wav")
        evaluation = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text("\n".join(lines_of_session(session, dialog)) + "\n")
    return root


def emo_lines(session: int, dialog: str) -> list[str]:
    return [f"[{index}.0 - {index}.5]\t{dialog}_F00{index}\tneu\t[2.5, 2.5, 2.5]" for index in range(2)]


@pytest.mark.parametrize("fault", ["empty", "malformed", "duplicate"])
def test_iemocap_refuses_an_empty_malformed_or_repeated_evaluation(tmp_path, fault):
    from byola_hf.superb.corpora.readers import CorpusRequest, read_iemocap

    def lines(session: int, dialog: str) -> list[str]:
        if session != 2:
            return emo_lines(session, dialog)
        return {
            "empty": ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"],
            "malformed": [f"[0.0 - 0.5] {dialog}_F000 neu [2.5, 2.5, 2.5]", *emo_lines(session, dialog)[1:]],
            "duplicate": [*emo_lines(session, dialog), emo_lines(session, dialog)[0]],
        }[fault]

    expected = {
        "empty": r"Ses02F_impro01.txt holds no '\[start - end\] TURN EMOTION",
        "malformed": r"Ses02F_impro01.txt line 1: expected '\[start - end\] TURN EMOTION \[V, A, D\]' \(tab",
        "duplicate": r"The turn .*Ses02F_impro01_F000.wav is listed twice \(.*line 1; .*line 3\)",
    }[fault]
    root = iemocap(tmp_path / "iemocap", lines)
    with pytest.raises(ValueError, match=expected):
        read_iemocap(CorpusRequest(root=root, fold=1))


@pytest.mark.parametrize("times", ["0.30 0.10", "-0.20 0.30"], ids=["end-before-start", "negative-start"])
def test_librimix_refuses_impossible_segments(tmp_path, times):
    from byola_hf.superb.corpora.readers import read_kaldi_dir

    recording = write_wav(tmp_path / "mix.wav", 1.0)
    (tmp_path / "wav.scp").write_text(f"mix {recording}\n")
    (tmp_path / "utt2spk").write_text("a-mix a\nb-mix b\n")
    (tmp_path / "segments").write_text(f"a-mix mix 0.00 0.50\nb-mix mix {times}\n")
    with pytest.raises(ValueError, match=rf"segments line 2: expected START and END .*got '{times}'"):
        read_kaldi_dir(tmp_path, 12.5)


# 2. Statistics, the feature extractor and decoding ---------------------------------------------------------------


def write_float_wav(path: Path, samples: np.ndarray) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples.astype(np.float32), 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize(
    "samples, message",
    [
        (np.zeros(16000), "std 0,"),
        (np.full(16000, 0.5), "all the same value up to float32 rounding (std 1.03e-06"),
        (np.full(16000, 1e30), "a.wav's log-mel holds NaN or infinity"),
    ],
    ids=["silence", "constant", "huge-finite"],
)
def test_compute_stats_refuses_unusable_statistics_before_saving(small_model, tmp_path, capsys, samples, message):
    """Silence saved std=0 and samples of 1e30 NaN statistics, with exit 0: the saved model then failed to load. A
    constant (DC) clip saved std=1.03e-06, float32's rounding of log-mels that are one value (float64: 7e-15), and
    the model then multiplied that noise by a million."""
    from byola_hf.stats.cli import main

    for name in ("a.wav", "b.wav"):
        write_float_wav(tmp_path / "audio" / name, samples)
    arguments = ["--model_name_or_path", small_model, "--dataset_name", tmp_path / "audio"]
    code, stderr = run_main(main, [*arguments, "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", message)
    assert not (tmp_path / "out" / "config.json").exists()


def test_the_quietest_recorded_audio_is_not_taken_for_constant_audio(small_model, tmp_path):
    """The refusal of constant audio stops at float32 rounding: a 16-bit recording's noise floor (+-1 LSB, the
    quietest sound a 16-bit file holds) is measured, not refused."""
    from byola_hf.stats import StatsArguments, compute_stats

    lsb = np.random.default_rng(0).integers(-1, 2, 16000) / 32768.0
    write_float_wav(tmp_path / "audio" / "a.wav", lsb)
    result = compute_stats(StatsArguments(str(small_model), str(tmp_path / "audio")))
    assert 0.01 < result.std < 1 and result.mean < -15


def test_feature_extractor_refuses_non_finite_features_of_finite_input():
    from byola_hf import BYOLAFeatureExtractor

    fine, huge = np.full(16000, 0.1, np.float32), np.full(16000, 1e30, np.float32)
    for padding in ("longest", False):
        with pytest.raises(ValueError, match=r"Example 1's log-mel holds NaN or infinity: its samples reach 1e\+30"):
            BYOLAFeatureExtractor()([fine, huge], sampling_rate=16000, padding=padding)


def test_a_truncated_wav_is_an_error_naming_it(speech, small_model, tmp_path, capsys):
    """libsndfile reads a WAV cut short (header: more frames than the file holds) as its surviving prefix, without
    an error: statistics, extraction and pre-training used the prefix. Every decode path now refuses it."""
    from byola_hf.audio import load_audio
    from byola_hf.extract.cli import main as extract_main
    from byola_hf.stats.cli import main as stats_main

    data = speech.read_bytes()
    truncated = tmp_path / "audio" / "cut.wav"
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    (tmp_path / "audio" / "whole.wav").write_bytes(data)
    with pytest.raises(ValueError, match="cut.wav is truncated"):
        load_audio(str(truncated), 16000)
    with pytest.raises(ValueError, match="the given bytes .* is truncated"):
        load_audio(truncated.read_bytes(), 16000)
    source = ["--model_name_or_path", small_model, "--dataset_name", tmp_path / "audio"]
    code, stderr = run_main(stats_main, [*source, "--output_dir", tmp_path / "stats"], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "cut.wav is truncated")
    code, stderr = run_main(extract_main, [*source, "--output_dir", tmp_path / "emb", "--num_workers", "0"], capsys)
    assert_one_line(code, stderr, "byola-extract", "cut.wav is truncated")


@pytest.mark.parametrize("placeholder", [0x7FFFF000, 0xFFFFFFFF])
def test_a_streamed_wav_is_read_whole(speech, tmp_path, placeholder):
    """A WAV written to a pipe leaves its sizes open: espeak-ng --stdout and sox write 0x7FFFF000, which was refused
    as truncated (and left out by --skip_bad) though libsndfile reads the whole file."""
    import struct

    from byola_hf.audio import load_audio

    data = bytearray(speech.read_bytes())
    start = data.index(b"data")
    data[4:8], data[start + 4 : start + 8] = struct.pack("<I", placeholder), struct.pack("<I", placeholder)
    (tmp_path / "streamed.wav").write_bytes(data)
    np.testing.assert_array_equal(load_audio(str(tmp_path / "streamed.wav"), 16000), load_audio(str(speech), 16000))


# 6 and 7. byola-pretrain -----------------------------------------------------------------------------------------

TINY_PRETRAINING = [
    "--feature_d", "64", "--projection_hidden_size", "64", "--projection_size", "32", "--mixup_memory_size", "16",
    "--per_device_train_batch_size", "4", "--logging_steps", "1", "--dataloader_num_workers", "0", "--max_steps", "1",
    "--report_to", "none", "--disable_tqdm", "true",
]  # fmt: skip


def test_streaming_with_given_statistics_refuses_clips_shorter_than_a_crop(tmp_path, capsys):
    """The in-memory path refused clips all shorter than a crop; --streaming with --mean/--std never read the clips
    before training and trained on padding."""
    from byola_hf.pretraining.cli import main

    rng = np.random.default_rng(0)
    for index in range(4):
        write_float_wav(tmp_path / "short" / f"{index}.wav", rng.normal(0, 0.1, 8000))
    arguments = ["--dataset_name", tmp_path / "short", "--streaming", "--mean", "-8", "--std", "4"]
    code, stderr = run_main(main, [*arguments, "--output_dir", tmp_path / "out", *TINY_PRETRAINING], capsys)
    assert_one_line(code, stderr, "byola-pretrain", "Every clip is shorter than one training crop")


class KilledWhileSaving(Exception):
    """Stands for the process being killed in the middle of the final save."""


def test_pretrain_killed_during_its_final_save_is_completed_by_a_rerun(speech, tmp_path, capsys, monkeypatch):
    """A run killed while saving its encoder left a `.staging.*` folder, and its re-run (nothing left to train)
    never wrote trainer_state.json or train_results.json."""
    import shutil

    from byola_hf.pretraining import cli, run
    from byola_hf.tools import outputs

    for index in range(4):
        write_float_wav(tmp_path / "audio" / f"{index}.wav", load_speech(speech) * (1 + index / 10))
    arguments = ["--dataset_name", tmp_path / "audio", "--output_dir", tmp_path / "out", *TINY_PRETRAINING]
    real_card = run.pretraining_card

    def card_then_kill(*args, **kwargs):
        raise KilledWhileSaving  # the encoder's weights are in the staging folder, nothing renamed yet

    with monkeypatch.context() as patch:
        patch.setattr(run, "pretraining_card", card_then_kill)
        patch.setattr(outputs.shutil, "rmtree", lambda *args, **kwargs: None)  # a kill runs no clean-up
        with pytest.raises(KilledWhileSaving):
            cli.main([str(argument) for argument in arguments])
    assert list((tmp_path / "out").glob(".staging.*"))
    assert run.pretraining_card is real_card and outputs.shutil.rmtree is shutil.rmtree
    cli.main([str(argument) for argument in arguments])
    output = tmp_path / "out"
    assert not list(output.glob(".staging.*"))
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 1
    assert "train_loss" in json.loads((output / "train_results.json").read_text())
    assert (output / "config.json").is_file() and (output / "model.safetensors").is_file()


def load_speech(path: Path) -> np.ndarray:
    from byola_hf.audio import load_audio

    return load_audio(str(path), 16000)


# Issue 33, section 3: what ended in a traceback is one line (exit 2), or a ValueError from a library call ----------


@pytest.mark.parametrize("fault", ["float16", "int32", "overflow"])
def test_convert_refuses_weights_of_other_types_or_that_overflow(random2048_checkpoint, tmp_path, capsys, fault):
    """fp16 and int32 tensors, and a finite weight of 3e38 (the network's output overflows to inf), were
    tracebacks."""
    from byola_hf.convert_byola_checkpoint import main

    weights = torch.load(random2048_checkpoint, map_location="cpu", weights_only=True)
    if fault == "overflow":
        weights["features.0.weight"][0, 0, 0, 0] = 3e38
    else:
        weights = {key: tensor.to(getattr(torch, fault)) for key, tensor in weights.items()}
    torch.save(weights, tmp_path / "byola.pth")
    code, stderr = run_main(main, [tmp_path / "byola.pth", tmp_path / "out"], capsys)
    expected = "overflow" if fault == "overflow" else f"holds {fault} tensors"
    assert_one_line(code, stderr, "byola-convert", "byola.pth", expected)
    assert not (tmp_path / "out").exists()


def test_a_truncated_model_safetensors_is_one_line(small_model, speech, tmp_path, capsys):
    """`byola-pretrain --init_from` a folder whose model.safetensors was cut short, and from_pretrained on it."""
    import shutil

    from byola_hf import BYOLAModel
    from byola_hf.pretraining.cli import main

    folder = tmp_path / "model"
    shutil.copytree(small_model, folder)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors .*truncated or damaged.*convert or download"):
        BYOLAModel.from_pretrained(folder)
    for index in range(4):
        write_float_wav(tmp_path / "audio" / f"{index}.wav", load_speech(speech))
    tiny = TINY_PRETRAINING[2:]  # not --feature_d: --init_from's network
    arguments = ["--dataset_name", tmp_path / "audio", "--init_from", folder, "--output_dir", tmp_path / "out", *tiny]
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-pretrain", str(folder / "model.safetensors"), "truncated or damaged")


def test_embedding_pipeline_refuses_no_input(small_model):
    from transformers import pipeline

    with pytest.raises(ValueError, match="given no audio"):
        pipeline("byola-audio-embedding", model=str(small_model))([])


def test_extract_refuses_a_unit_shorter_than_one_output_frame(small_model, speech, tmp_path, capsys):
    from byola_hf import BYOLAConfig
    from byola_hf.extract.cli import main

    minimum = BYOLAConfig.from_pretrained(small_model).min_samples / 16000
    arguments = ["--model_name_or_path", small_model, "--dataset_name", speech.parent, "--unit_seconds", "0.01"]
    code, stderr = run_main(main, [*arguments, "--output_dir", tmp_path / "out", "--num_workers", "0"], capsys)
    assert_one_line(code, stderr, "byola-extract", "--unit_seconds 0.01", f"at least {minimum:g} s")


@pytest.mark.parametrize("lines", [[], ["1 id1/v/1.wav", "1 id2/v/1.wav", "2 id1/v/2.wav"]], ids=["empty", "no-test"])
def test_voxceleb1_refuses_a_split_file_without_test_lines(small_model, tmp_path, capsys, datasets_cache, lines):
    """An empty iden_split.txt, or one without test lines, ended in a ZeroDivisionError."""
    from byola_hf.superb.run import main

    (tmp_path / "vox" / "wav").mkdir(parents=True)
    root = voxceleb(tmp_path / "vox", lines)
    arguments = ["--superb_corpus", "voxceleb1", "--data_dir", root, "--eval_split_name", "test"]
    arguments += ["--model_name_or_path", small_model, "--output_dir", tmp_path / "out", "--max_steps", "1"]
    code, stderr = run_main(main, [*arguments, *QUICK_TRAINER_FLAGS], capsys)
    assert_one_line(code, stderr, "byola-run-superb", "iden_split.txt")


# Issue 33, section 5: one-line errors that named the wrong cause or no file -------------------------------------


@pytest.mark.parametrize("statistics", [["nan", "4"], ["-8", "inf"], ["-8", "0"]], ids=["nan-mean", "inf-std", "zero"])
def test_convert_calls_non_finite_statistics_non_finite(random2048_checkpoint, tmp_path, capsys, statistics):
    """`--mean nan` was reported as the checkpoint's shapes making no valid network."""
    from byola_hf.convert_byola_checkpoint import main

    arguments = [random2048_checkpoint, tmp_path / "out", "--mean", statistics[0], "--std", statistics[1]]
    code, stderr = run_main(main, arguments, capsys)
    expected = "must be positive" if statistics[1] == "0" else "must be a finite number"
    assert_one_line(code, stderr, "byola-convert", expected, f"--mean {float(statistics[0])}")
    assert "shapes" not in stderr


def full_disk(tmp_path, monkeypatch) -> None:
    """The disk as full for what the command writes: espeak-ng on PATH behaves as the real one does on a full disk (it
    exits 0 and leaves an empty `-w` file; its --stdout pipe is no file), and Python's writes of bytes fail."""
    import errno
    import os
    import shutil

    fake = tmp_path / "bin" / "espeak-ng"
    fake.parent.mkdir()
    real = shutil.which("espeak-ng")
    fake.write_text(
        "#!/bin/bash\nargs=()\nwhile [ $# -gt 0 ]; do\n"
        '  if [ "$1" = -w ]; then : > "$2"; args+=(-w /dev/full); shift 2; else args+=("$1"); shift; fi\n'
        f'done\nexec {real} "${{args[@]}}"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")

    def no_space(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Path, "write_bytes", no_space)


def test_make_mini_superb_on_a_full_disk_says_the_disk_is_full(tmp_path, capsys, monkeypatch):
    """espeak-ng exits 0 on a full disk and leaves an empty file, which was then reported as audio that could not
    be decoded; libsndfile's own write error is a bare "System error." (no errno). The command now takes espeak-ng's
    audio from its pipe and writes its files with Python, whose error says the disk is full and names the file."""
    from byola_hf.superb.mini_sets import main

    full_disk(tmp_path, monkeypatch)
    code, stderr = run_main(main, ["--task", "ks", "--output_dir", tmp_path / "mini"], capsys)
    assert_one_line(code, stderr, "byola-make-mini-superb", "No space left on device", ".wav", "free some space")
    assert "decode" not in stderr


def test_pretrain_names_a_lone_clip_with_infinite_samples(speech, tmp_path, capsys):
    """One clip holding infinity was refused as too few clips ("add audio"): adding audio would then stop at the clip.
    Fewer clips than a batch are read first, so the bad one is named with its cause."""
    from byola_hf.pretraining.cli import main

    waveform = load_speech(speech)
    waveform[100] = np.inf
    write_float_wav(tmp_path / "audio" / "lone.wav", waveform)
    arguments = ["--dataset_name", tmp_path / "audio", "--output_dir", tmp_path / "out", *TINY_PRETRAINING]
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-pretrain", "lone.wav contains NaN or infinite samples")
    assert not (tmp_path / "out").exists()


def test_extract_skip_bad_skips_a_clip_whose_log_mel_overflows(speech, small_model, tmp_path, capsys):
    """Finite samples of 1e30 decode, then their log-mel overflows: the whole run stopped, --skip_bad or not. The
    clip is now a bad clip as an unreadable one is: skipped and listed with --skip_bad, named without it."""
    import datasets

    from byola_hf.extract.cli import main

    write_float_wav(tmp_path / "audio" / "good.wav", load_speech(speech))
    write_float_wav(tmp_path / "audio" / "loud.wav", np.full(16000, 1e30))
    source = ["--model_name_or_path", small_model, "--dataset_name", tmp_path / "audio", "--num_workers", "0"]
    code, stderr = run_main(main, [*source, "--output_dir", tmp_path / "stopped"], capsys)
    assert_one_line(code, stderr, "byola-extract", "loud.wav could not be embedded", "log-mel holds NaN or infinity")
    main([str(argument) for argument in [*source, "--output_dir", tmp_path / "out", "--skip_bad"]])
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert [Path(entry["path"]).name for entry in skipped] == ["loud.wav"]
    assert "loud.wav's log-mel holds NaN or infinity" in skipped[0]["error"]
    embedded = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert [Path(path).name for path in embedded["path"]] == ["good.wav"]
    assert np.isfinite(np.asarray(embedded["embedding"])).all()


# Issue 33, section 4: users' files and pushes --------------------------------------------------------------------


class RecordingHub:
    """huggingface_hub.HfApi's calls that a push makes, recorded instead of sent."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, private=None, **kwargs):
        RecordingHub.calls.append(("create_repo", repo_id, private))

    def file_exists(self, repo_id, filename):
        return False

    def create_commit(self, repo_id, operations, **kwargs):
        files = {
            op.path_in_repo: op.path_or_fileobj
            if isinstance(op.path_or_fileobj, bytes)
            else Path(op.path_or_fileobj).read_bytes()
            for op in operations
        }
        RecordingHub.calls.append(("create_commit", repo_id, files))
        return "https://hub/commit/1"


@pytest.fixture
def recording_hub(monkeypatch):
    """The Hub as reachable with a token (the checks of byola_hf.hub pass), its API calls recorded."""
    import huggingface_hub

    from byola_hf import hub

    RecordingHub.calls = []
    monkeypatch.setattr(hub, "check_hub_access", lambda repo_id=None, token=None: None)
    monkeypatch.setattr(hub, "refuse_public_repository", lambda repo_id, token=None: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHub)
    return RecordingHub.calls


def pretrain_tiny(speech, tmp_path, *extra) -> list[str]:
    for index in range(4):
        write_float_wav(tmp_path / "audio" / f"{index}.wav", load_speech(speech) * (1 + index / 10))
    return [str(a) for a in ["--dataset_name", tmp_path / "audio", "--output_dir", tmp_path / "out", *extra]]


def test_pretrain_push_offline_is_refused_before_any_work(speech, tmp_path, capsys):
    """It decoded every clip, then Trainer's repository creation ended in a traceback."""
    from byola_hf.pretraining.cli import main

    arguments = pretrain_tiny(speech, tmp_path, *TINY_PRETRAINING, "--push_to_hub", "--hub_model_id", "me/byola")
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-pretrain", "offline mode is on (HF_HUB_OFFLINE=1)")
    assert not (tmp_path / "out").exists()


def test_pretrain_pushes_its_encoder_privately_through_the_push_check(speech, tmp_path, recording_hub):
    """Trainer would create the repository public (hub_private_repo=None) and push the learner's checkpoints; the
    run now pushes its encoder folder once, privately, with its pre-training card."""
    from byola_hf.pretraining.cli import main

    main(pretrain_tiny(speech, tmp_path, *TINY_PRETRAINING, "--push_to_hub", "--hub_model_id", "me/byola"))
    assert [call[0] for call in recording_hub] == ["create_repo", "create_commit"]
    assert recording_hub[0] == ("create_repo", "me/byola", True)
    files = recording_hub[1][2]
    assert "## Pre-training" in files["README.md"].decode()
    assert files["model.safetensors"] == (tmp_path / "out" / "model.safetensors").read_bytes()


def test_push_keeps_the_users_readme(small_model, tmp_path, recording_hub):
    """byola_hf.hub.push_to_hub replaced the README.md of the folder it pushed."""
    import shutil

    from byola_hf.hub import push_to_hub

    folder = tmp_path / "mine"
    shutil.copytree(small_model, folder)
    (folder / "README.md").write_text("# My model\n")
    push_to_hub(folder, "me/mine")
    assert (folder / "README.md").read_text() == "# My model\n"
    assert recording_hub[-1][2]["README.md"] == b"# My model\n"
    (folder / "README.md").unlink()  # no card: one is generated for the Hub, not written into the folder
    push_to_hub(folder, "me/mine")
    assert not (folder / "README.md").exists()
    assert recording_hub[-1][2]["README.md"].startswith(b"---") and "config.json" in recording_hub[-1][2]


def test_only_models_of_ntt_weights_carry_ntts_licence(small_model, speech, tmp_path):
    """A card of a model pre-trained from scratch declared NTT's evaluation licence; one trained on from a converted
    model (--init_from) lost the mark that its weights are NTT's."""
    import shutil

    from byola_hf.hub import LICENSE_NOTICE
    from byola_hf.pretraining.cli import main

    main(pretrain_tiny(speech, tmp_path / "scratch", *TINY_PRETRAINING))
    card = (tmp_path / "scratch" / "out" / "README.md").read_text()
    assert LICENSE_NOTICE not in card and "ntt-software-license" not in card
    assert "none of NTT's published BYOL-A weights" in card
    converted = tmp_path / "converted"
    shutil.copytree(small_model, converted)
    config = json.loads((converted / "config.json").read_text())
    (converted / "config.json").write_text(json.dumps({**config, "converted_from": "AudioNTT2020-BYOLA.pth"}))
    main(pretrain_tiny(speech, tmp_path / "further", "--init_from", converted, *TINY_PRETRAINING[2:]))
    output = tmp_path / "further" / "out"
    assert json.loads((output / "config.json").read_text())["converted_from"] == "AudioNTT2020-BYOLA.pth"
    card = (output / "README.md").read_text()
    assert LICENSE_NOTICE in card and "license_name: ntt-software-license-agreement-for-evaluation" in card


def test_compute_stats_in_place_refuses_a_folder_no_command_wrote(small_model, speech, tmp_path, capsys):
    """Without --output_dir, byola-compute-stats rewrote config.json and the user's README.md of a model folder it
    did not write. It refuses before any work, naming --output_dir, and leaves every file as it was."""
    import shutil

    from byola_hf.stats.cli import main

    folder = tmp_path / "mine"
    shutil.copytree(small_model, folder)
    (folder / "README.md").write_text("# My model\n")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    write_float_wav(tmp_path / "audio" / "a.wav", load_speech(speech))
    code, stderr = run_main(main, ["--model_name_or_path", folder, "--dataset_name", tmp_path / "audio"], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "config.json, preprocessor_config.json, README.md",
                    "--output_dir NEW_FOLDER")  # fmt: skip
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    (folder / "README.md").unlink()  # the message named a README.md the folder did not have
    code, stderr = run_main(main, ["--model_name_or_path", folder, "--dataset_name", tmp_path / "audio"], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "(config.json, preprocessor_config.json)")


def test_run_superb_pushes_through_the_one_push_check(
    small_model, word_folders, tmp_path, datasets_cache, recording_hub
):
    """byola-run-superb had a push check of its own beside byola_hf.hub's and pushed with Trainer; it now goes through
    hub.trainer_push_arguments and hub.push_to_hub, as every command: one private upload of its output folder."""
    run_superb_on_words(small_model, word_folders, tmp_path / "out", "--push_to_hub", "--hub_model_id", "me/ks")
    assert [call[0] for call in recording_hub] == ["create_repo", "create_commit"]
    assert recording_hub[0] == ("create_repo", "me/ks", True)
    files = recording_hub[1][2]
    assert files["model.safetensors"] == (tmp_path / "out" / "model.safetensors").read_bytes()
    assert "task: ks" in files["README.md"].decode() and "eval_results.json" in files


@pytest.mark.parametrize(
    "flags, private", [([], True), (["--public"], False), (["--hub_private_repo", "false"], False)]
)
def test_run_superb_push_is_private_unless_public_is_given(small_model, tmp_path, capsys, flags, private, monkeypatch):
    """Private unless --public (or --hub_private_repo false); a private push first asks whether the repository is
    public, and the check comes before any work (here: before the data is looked at)."""
    from byola_hf import hub
    from byola_hf.superb.run import main

    looked_up = []
    monkeypatch.setattr(hub, "refuse_public_repository", lambda repo_id, token=None: looked_up.append(repo_id))
    monkeypatch.setattr(
        hub, "check_hub_access", lambda repo_id=None, token=None: looked_up.append(f"access {repo_id}")
    )
    arguments = ["--task", "ks", "--model_name_or_path", small_model, "--data_dir", tmp_path / "missing",
                 "--output_dir", tmp_path / "out", "--push_to_hub", "--hub_model_id", "me/ks", *flags]  # fmt: skip
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-run-superb", "missing")
    assert looked_up == (["access me/ks", "me/ks"] if private else ["access me/ks"])


def test_run_superb_names_a_stored_clip_it_cannot_decode(small_model, word_folders, tmp_path, datasets_cache, capsys):
    """A save_to_disk dataset holding audio bytes: a clip soundfile cannot read ended in "Error opening
    <_io.BytesIO object at 0x...>", naming nothing. run-superb decodes through byola_hf.audio as every command
    does, and names the clip."""
    import datasets

    from byola_hf.superb.run import main

    files = sorted((word_folders / "train").rglob("*.wav"))
    audio = [{"path": path.name, "bytes": path.read_bytes()} for path in files]
    audio[3] = {"path": "broken.wav", "bytes": b"RIFF\x10\x00\x00\x00WAVEjunk"}
    table = datasets.Dataset.from_dict({"audio": audio, "label": [path.parent.name for path in files]})
    table = table.cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"train": table, "validation": table}).save_to_disk(tmp_path / "saved")
    arguments = ["--task", "ks", "--model_name_or_path", small_model, "--dataset_name", tmp_path / "saved",
                 "--output_dir", tmp_path / "out", "--max_steps", "1", *QUICK_TRAINER_FLAGS]  # fmt: skip
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-run-superb", "broken.wav")
    assert "BytesIO" not in stderr


def test_run_superb_names_a_clip_whose_log_mel_overflows(small_model, word_folders, tmp_path, datasets_cache, capsys):
    """Finite samples of 1e30 give a log-mel of infinities: run-superb said "Example 3's log-mel ...", the place
    of the clip in a datasets.map batch; it names the file."""
    import shutil

    import soundfile

    from byola_hf.superb.run import main

    data = tmp_path / "words"
    shutil.copytree(word_folders, data)
    loud = sorted((data / "train").rglob("*.wav"))[2]
    waveform, rate = soundfile.read(loud, dtype="float32")
    soundfile.write(loud, waveform * 1e30, rate, subtype="FLOAT")
    source = ["--dataset_name", "audiofolder", "--data_dir", data]
    arguments = ["--task", "ks", "--model_name_or_path", small_model, *source, "--output_dir", tmp_path / "out",
                 "--max_steps", "1", *QUICK_TRAINER_FLAGS]  # fmt: skip
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-run-superb", f"{loud.name}'s log-mel holds NaN or infinity")


def test_run_superb_names_a_clip_too_short_for_one_output_frame(
    small_model, word_folders, tmp_path, datasets_cache, capsys
):
    """A clip of 700 samples has a log-mel but no v1 output frame (1120 samples): run-superb stopped in training
    with "Example 4 has 5 log-mel frames ... `feature_extractor(..., pad_to_min_length=True)`", the place of the clip
    in a random batch and a library call. It names the file before training, as byola-compute-stats does."""
    import shutil

    import soundfile

    from byola_hf.superb.run import main

    data = tmp_path / "words"
    shutil.copytree(word_folders, data)
    short = sorted((data / "train").rglob("*.wav"))[2]
    soundfile.write(short, np.full(700, 0.1, np.float32), 16000)
    arguments = ["--task", "ks", "--model_name_or_path", small_model, "--dataset_name", "audiofolder", "--data_dir",
                 data, "--output_dir", tmp_path / "out", "--max_steps", "1", *QUICK_TRAINER_FLAGS]  # fmt: skip
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-run-superb", f"{short.name} has 700 samples, fewer than the 1120")


@pytest.mark.parametrize("task", ["byola-audio-embedding", "audio-classification"])
def test_pipelines_name_a_file_whose_log_mel_overflows(task, small_model, classifier_dir, speech, tmp_path):
    """Finite samples of 1e30 in a file: the pipelines said "Example 0's log-mel holds NaN or infinity", the clip's
    place in its batch; they name the file they were given."""
    import soundfile
    from transformers import pipeline

    waveform, rate = soundfile.read(speech, dtype="float32")
    loud = tmp_path / "loud.wav"
    soundfile.write(loud, waveform * 1e30, rate, subtype="FLOAT")
    model = small_model if task == "byola-audio-embedding" else classifier_dir
    with pytest.raises(ValueError, match=rf"{loud}'s log-mel holds NaN or infinity"):
        pipeline(task, model=str(model))([str(speech), str(loud)], batch_size=2)


def test_finetune_names_a_clip_whose_log_mel_overflows(small_model, speech, tmp_path, capsys):
    """byola-finetune batches clips in training, where a log-mel of infinities was "Example 1's ..."; it names the
    file when the task is read."""
    import soundfile

    from byola_hf.finetune.cli import main

    waveform, rate = soundfile.read(speech, dtype="float32")
    rows = []
    for index, split in enumerate(["train"] * 4 + ["valid", "valid", "test", "test"]):
        soundfile.write(tmp_path / f"clip{index}.wav", waveform * (1e30 if index == 1 else 1), rate, subtype="FLOAT")
        rows.append(f"clip{index}.wav,{'ab'[index % 2]},{split}")
    (tmp_path / "task.csv").write_text("file_name,label,split\n" + "\n".join(rows) + "\n")
    arguments = ["--model_name_or_path", small_model, "--metadata_csv", tmp_path / "task.csv", "--output_dir",
                 tmp_path / "out", "--num_train_epochs", "1", "--use_cpu", "--report_to", "none"]  # fmt: skip
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-finetune", "clip1.wav's log-mel holds NaN or infinity")


def test_pretrain_with_given_statistics_names_a_clip_whose_log_mel_overflows(speech, tmp_path, capsys):
    """With --mean/--std given no statistics are computed, and a clip of 1e30 samples surfaced as "Pre-training
    diverged: the loss is nan"; the pass that checks the clips names it."""
    import soundfile

    from byola_hf.pretraining.cli import main

    waveform, rate = soundfile.read(speech, dtype="float32")
    for index in range(4):
        soundfile.write(tmp_path / f"clip{index}.wav", waveform * (1e30 if index == 2 else 1), rate, subtype="FLOAT")
    arguments = ["--dataset_name", f"{tmp_path}/", "--output_dir", tmp_path / "out", "--feature_d", "64",
                 "--max_steps", "1", "--per_device_train_batch_size", "2", "--mean", "-8", "--std", "4", "--use_cpu",
                 "--report_to", "none"]  # fmt: skip
    code, stderr = run_main(main, arguments, capsys)
    assert_one_line(code, stderr, "byola-pretrain", "clip2.wav's log-mel holds NaN or infinity")

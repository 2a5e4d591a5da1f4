"""run_superb end to end on mini-SUPERB sets built with espeak-ng, with the real 512-d weights (frozen)."""

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForAudioClassification, pipeline

from byola_hf import BYOLAForSequenceClassification
from byola_hf.stats import StatsArguments, compute_stats
from byola_hf.superb.mini_sets import make_ic, make_ks, make_pr, make_sd, make_sid
from byola_hf.superb.run import (
    ClassBalancedSampler,
    LogMelCollator,
    cache_log_mels,
    log_mel_device,
    log_mel_rows,
    main,
)

from conftest import QUICK_TRAINER_FLAGS, console_script, run_two_ranks, slow


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
COMMON = QUICK_TRAINER_FLAGS


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mini_superb")
    return {
        "ks": make_ks(root / "ks"),
        "ic": make_ic(root / "ic", examples_per_voice=6),
        "pr": make_pr(root / "pr"),
        "sid": make_sid(root / "sid"),
        "sd": make_sd(root / "sd", examples=(16, 6, 6)),
    }


@pytest.fixture(scope="module")
def ks_model(tmp_path_factory, real512_dir, mini) -> Path:
    """The official 512-d weights with the KS training split's exact statistics."""
    output = tmp_path_factory.mktemp("byola512-ks")
    compute_stats(StatsArguments(str(real512_dir), "audiofolder", data_dir=str(mini["ks"]), output_dir=str(output)))
    return output


def superb_arguments(task: str, model: Path | str, data_dir: Path | str, output_dir: Path | str) -> list[str]:
    return [
        "--task",
        task,
        "--model_name_or_path",
        str(model),
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(output_dir),
    ]


def run_superb(*arguments: str, overrides: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`byola-run-superb ARGUMENTS` in this process, through its `main(argv)` (a cold interpreter costs seconds a
    run; the console script itself is run by test_help_says_what_it_does_and_the_defaults_used): its exit code,
    and its stderr with the command's log. `overrides` come after the quick flags (`COMMON`), to change one."""
    stderr, handler = io.StringIO(), logging.StreamHandler()
    handler.setStream(stderr)
    logger = logging.getLogger("byola_hf.superb.run")  # its own level: other tests set it
    level, disabled = logger.level, logger.disabled
    logger.level, logger.disabled = logging.INFO, False  # a library's logging.config may have disabled it
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stderr(stderr):
            main([*arguments, *COMMON, *overrides])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    finally:
        logger.removeHandler(handler)
        logger.level, logger.disabled = level, disabled
    return subprocess.CompletedProcess(["byola-run-superb", *arguments], code, "", stderr.getvalue())


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def check_keyword_spotting(output: Path, mini: dict[str, Path]) -> None:
    """The KS output directory is a ready model: plots, card, from_pretrained and the pipeline."""
    import soundfile as sf

    assert is_png(output / "layer_weights.png") and is_png(output / "confusion_matrix.png")
    card = (output / "README.md").read_text()
    assert "task: ks" in card and "eval_accuracy" in card
    classifier = pipeline("audio-classification", model=str(output))
    waveform, rate = sf.read(next((mini["ks"] / "test").glob("*.wav")), dtype="float32")
    predictions = classifier({"array": waveform, "sampling_rate": rate}, top_k=3)
    label2id = json.loads((output / "config.json").read_text())["label2id"]
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= set(label2id)
    assert AutoModelForAudioClassification.from_pretrained(output).config.id2label[0] == "down"


def check_slots(output: Path, mini) -> None:
    """IC: one softmax per slot (action, object, location)."""
    config = json.loads((output / "config.json").read_text())
    assert len(config["classifier_slots"]) == 3 and sum(config["classifier_slots"]) == len(config["id2label"])
    assert is_png(output / "layer_weights.png")


def check_phoneme_vocabulary(output: Path, mini) -> None:
    # Phoneme tokens ("@2", "aI"), not characters: PER over characters would be another metric.
    vocabulary = json.loads((output / "vocab.json").read_text())
    assert (output / "tokenizer_config.json").exists() and {"@2", "D", "aI"} <= set(vocabulary)
    assert is_png(output / "layer_weights.png")


def check_bilstm_head(output: Path, mini) -> None:  # s3prl's ASR downstream: a 1024-wide BiLSTM
    config = json.loads((output / "config.json").read_text())
    assert (config["ctc_head"], config["ctc_proj_size"]) == ("bilstm", 1024)


def check_emotion_card(output: Path, mini) -> None:
    assert "task: er" in (output / "README.md").read_text()


# task, mini set, flags, metric and its range, the learning rate said (None: given), a check of the output. The
# fast tier trains each head kind two steps and checks its metric and outputs; the slow tier trains SD 10 epochs
# (DER under 0.6). KS's accuracy check is docs/superb.md's demo, run by test_readme.py.
TWO_STEPS = ["--max_steps", "2", "--per_device_train_batch_size", "8"]
TASK_RUNS = {
    "ks": ("ks", TWO_STEPS, "eval_accuracy", (0.0, 1.0), "0.0001", check_keyword_spotting),
    "ic": ("ic", ["--label_column_name", "action,object,location", *TWO_STEPS], "eval_accuracy", (0.0, 1.0), "0.0001",
           check_slots),
    "er": ("ks", TWO_STEPS, "eval_accuracy", (0.0, 1.0), "0.0001", check_emotion_card),  # KS words for emotions
    "pr": ("pr", TWO_STEPS, "eval_per", (0.0, 1.5), None, check_phoneme_vocabulary),
    "sid": ("sid", TWO_STEPS, "eval_accuracy", (0.0, 1.0), "0.001", None),
    "asr": ("pr", ["--max_steps", "2", "--per_device_train_batch_size", "4"], "eval_wer", (0.0, 1.5), None,
            check_bilstm_head),
    "sd": ("sd", ["--label_column_name", "activity", *TWO_STEPS], "eval_der", (0.0, 1.5), None, None),
    "sd-10-epochs": ("sd", ["--label_column_name", "activity", "--num_train_epochs", "10",
                            "--per_device_train_batch_size", "4"], "eval_der", (0.0, 0.6), None, None),
}  # fmt: skip


@pytest.mark.parametrize("run", [pytest.param(run, marks=[slow] if "epochs" in run else []) for run in TASK_RUNS])
def test_each_superb_task_trains_evaluates_and_saves(run, ks_model, mini, tmp_path):
    """Every SUPERB task on its mini set: trained, evaluated with its metric, saved with its head's files."""
    data, flags, metric, (low, high), rate, check = TASK_RUNS[run]
    task, output = run.split("-")[0], tmp_path / run
    result = run_superb(*superb_arguments(task, ks_model, mini[data], output), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    value = json.loads((output / "eval_results.json").read_text())[metric]
    print(f"\n{run}: {metric} {value:.3f}")
    assert low <= value <= high
    if rate is not None:  # SUPERB's (or the BYOL-A upstream's) rate, as the run recorded and used it
        record = json.loads((output / ".byola_hf_output.json").read_text())["record"]
        assert record["arguments"]["learning_rate"] == float(rate)
    if check is not None:
        check(output, mini)


def test_speaker_labels_at_another_frame_rate_are_refused(random3072_dir, mini, tmp_path):
    """The mini SD set's labels are at 12.5 rows a second (v1's output frames); v2 gives 25 frames a second, so every
    label would be out of step in time, trained and scored without an error. It is one line instead."""
    stats_dir = tmp_path / "v2-sd"
    compute_stats(
        StatsArguments(str(random3072_dir), "audiofolder", data_dir=str(mini["sd"]), output_dir=str(stats_dir))
    )
    result = run_superb(*superb_arguments("sd", stats_dir, mini["sd"], tmp_path / "out"), "--label_column_name",
                        "activity", "--max_steps", "1")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("byola-run-superb: error: train:") and "not at the model's 25 frames per second" in error


def test_speaker_labels_one_row_apart_pass_and_two_rows_apart_are_refused():
    """The label-rate check's bound: a clip's activity rows may be one more or one fewer than its output frames (a
    rounding of the clip's length), not two, which are labels at another rate or out of step."""
    import datasets

    from byola_hf import BYOLAConfig
    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    recipe = recipe_for(SUPERB_TASKS["sd"])

    def split(rows: int) -> datasets.Dataset:  # a clip of 10 output frames (80 log-mel frames)
        return datasets.Dataset.from_dict(
            {"input_features": [np.zeros((80, 64)).tolist()], "labels": [[[0, 1]] * rows]}
        )

    for rows in (9, 10, 11):
        assert len(recipe.after_features(split(rows), BYOLAConfig(), "train")) == 1
    for rows in (8, 12):
        with pytest.raises(ValueError, match="not at the model's 12.5 frames per second"):
            recipe.after_features(split(rows), BYOLAConfig(), "train")


def test_evaluating_an_encoder_without_a_trained_head_is_refused(ks_model, mini, tmp_path):
    """--do_eval alone evaluates the model as it is: on an encoder, that was a freshly drawn head, scored and saved
    as the result. One line instead."""
    result = run_superb(*superb_arguments("ks", ks_model, mini["ks"], tmp_path / "out"), "--do_eval")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--do_eval alone evaluates" in result.stderr.strip().splitlines()[-1]
    assert "has no trained BYOLAForSequenceClassification head" in result.stderr
    assert not (tmp_path / "out" / "eval_results.json").exists()


def test_refuses_without_statistics(real512_checkpoint, mini, tmp_path):
    from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint

    convert_byola_checkpoint(real512_checkpoint, tmp_path / "no-stats")
    result = run_superb(
        *superb_arguments("ks", tmp_path / "no-stats", mini["ks"], tmp_path / "out"),
    )
    assert result.returncode != 0
    assert "has no normalisation statistics" in result.stderr and "byola-compute-stats" in result.stderr
    assert "Traceback" not in result.stderr


@slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes(ks_model, mini, tmp_path, launcher):
    """Under torchrun and under `accelerate launch --multi_gpu` (two gloo ranks here): one DDP run, world size 2."""
    output = tmp_path / "ddp"
    result = run_two_ranks(
        console_script("byola-run-superb"),
        *superb_arguments("ks", ks_model, mini["ks"], output),
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "8",
        "--ddp_backend",
        "gloo",
        *COMMON,
        env=ENV,
        launcher=launcher,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval_accuracy" in json.loads((output / "eval_results.json").read_text())
    assert "world size 2" in result.stderr
    assert (output / "model.safetensors").exists()


def test_train_only_folder_holds_out_a_named_split(ks_model, mini, tmp_path):
    import shutil

    data = tmp_path / "train_only"
    shutil.copytree(mini["ks"] / "train", data / "train")
    output = tmp_path / "held_out"
    result = run_superb(
        *superb_arguments("ks", ks_model, data, output),
        "--max_steps",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((output / "eval_results.json").read_text())
    assert metrics["eval_split"] == "10% of 'train' held out (seed 0)"
    assert metrics["eval_samples"] == round(0.1 * len(list((data / "train").glob("*.wav"))))
    card = (output / "README.md").read_text()
    assert "evaluated on: 10% of 'train' held out (seed 0)" in card
    assert 'pipeline("audio-classification"' in card and "AutoModelForAudioClassification" in card
    # Evaluating on the training data is allowed, and said.
    result = run_superb(
        *superb_arguments("ks", ks_model, data, tmp_path / "on_train"),
        "--max_steps",
        "1",
        "--eval_split_name",
        "train",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the training data itself: not a held-out estimate" in (tmp_path / "on_train" / "README.md").read_text()
    # Or no evaluation at all.
    result = run_superb(
        *superb_arguments("ks", ks_model, data, tmp_path / "no_eval"),
        "--max_steps",
        "1",
        "--validation_split_percentage",
        "0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "no_eval" / "eval_results.json").exists()
    assert "not evaluated" in (tmp_path / "no_eval" / "README.md").read_text()


def test_unseen_evaluation_labels_stop_before_work(ks_model, mini, tmp_path):
    import csv
    import shutil

    data = tmp_path / "unseen"
    shutil.copytree(mini["ks"], data)
    rows = list(csv.DictReader(open(data / "test" / "metadata.csv")))
    rows[0]["label"] = "maybe"
    with open(data / "test" / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = run_superb(
        *superb_arguments("ks", ks_model, data, tmp_path / "out"),
        "--eval_split_name",
        "test",
        "--max_steps",
        "1",
    )
    assert result.returncode != 0
    assert "labels in 'label' that never occur in training: maybe" in result.stderr
    assert "Traceback" not in result.stderr and "log-mel" not in result.stderr  # stopped before feature extraction


def test_help_says_what_it_does_and_the_defaults_used():
    """The help as the parser prints it, in this process (test_help_texts.py runs every console script's --help)."""
    from byola_hf.superb.run import build_parser

    help_text = build_parser().format_help()
    lines = help_text.splitlines()
    assert lines[0].startswith("usage: byola-run-superb --task TASK") and "--superb_corpus NAME" in lines[1]
    assert "Fine-tune and evaluate BYOL-A" in lines[3]
    text = " ".join(help_text.split())
    assert "the task's SUPERB default is used (ks 0.0001, ic 0.0001, sid 0.001" in text
    assert "--no_freeze_base_model, --no-freeze-base-model Fine-tune the BYOL-A encoder" in text
    from byola_hf.superb.run import build_parser

    ours = [
        action
        for action in build_parser()._actions
        if any(
            option in action.option_strings
            for option in (
                "--task",
                "--validation_split_percentage",
                "--train_split_name",
                "--eval_split_name",
                "--dataset_config_name",
                "--max_eval_samples",
            )
        )
    ]
    assert len(ours) == 6 and all(action.help for action in ours)


def test_v2_keyword_spotting_runs_saves_reloads_and_predicts(random3072_dir, mini, tmp_path):
    """The random v2 network through statistics, run_superb, reload and the pipeline (no accuracy floor)."""
    stats_dir = tmp_path / "v2-ks"
    compute_stats(
        StatsArguments(str(random3072_dir), "audiofolder", data_dir=str(mini["ks"]), output_dir=str(stats_dir))
    )
    output = tmp_path / "ks-v2"
    result = run_superb(
        *superb_arguments("ks", stats_dir, mini["ks"], output),
        "--eval_split_name",
        "test",
        "--max_steps",
        "3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = AutoModelForAudioClassification.from_pretrained(output)
    assert model.config.variant == "AudioNTT2022" and model.featurizer.layer_weights.shape == (5,)
    assert "AudioNTT2022" in (output / "README.md").read_text()
    wav = next((mini["ks"] / "test").glob("*.wav"))
    predictions = pipeline("audio-classification", model=str(output))(str(wav), top_k=2)
    assert len(predictions) == 2 and predictions[0]["label"] in model.config.label2id


def test_log_mels_are_cached_on_the_training_accelerator():
    """On a GPU the cached log-mels are computed there; map workers (forked) and CPU training keep them on the CPU."""
    assert log_mel_device(torch.device("cpu"), None) is None
    assert log_mel_device(torch.device("cuda", 1), None) == torch.device("cuda", 1)
    assert log_mel_device(torch.device("cuda", 0), 1) == torch.device("cuda", 0)
    assert log_mel_device(torch.device("cuda", 0), 4) is None


def test_cached_log_mels_collate_to_the_feature_extractors_batch():
    """Stored time-first as Array2D, read back as numpy, padded by the collator: bit for bit `fe(batch)`."""
    import datasets

    from byola_hf import BYOLAFeatureExtractor
    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    fe = BYOLAFeatureExtractor()
    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(n).astype(np.float32) for n in (16000, 3100, 23456)]
    dataset = datasets.Dataset.from_dict({"index": [0, 1, 2], "labels": [2, 0, 1]})
    mapped = dataset.map(
        lambda batch: {"input_features": log_mel_rows(fe, [waveforms[i] for i in batch["index"]])},
        batched=True,
        remove_columns=["index"],
    )
    cached = cache_log_mels(mapped, fe.feature_size)
    assert isinstance(cached.features["input_features"], datasets.Array2D)
    assert cached[1]["input_features"].shape == (fe.num_frames(3100), fe.feature_size)
    batch = LogMelCollator(fe, recipe_for(SUPERB_TASKS["ks"]), downsampling=8)([cached[i] for i in range(3)])
    expected = fe(waveforms, sampling_rate=16000, return_tensors="pt")
    assert torch.equal(batch["input_features"], expected["input_features"])
    assert torch.equal(batch["attention_mask"], expected["attention_mask"])
    assert batch["labels"].tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    "task, flags, expected",
    [
        ("ks", [], ("accuracy", True)),
        ("pr", [], ("per", False)),
        ("sd", [], ("der", False)),
        ("ks", ["--metric_for_best_model", "loss"], ("loss", False)),
        # Trainer takes every name but a loss as higher-is-better: PR kept its highest-PER checkpoint, without a word
        ("pr", ["--metric_for_best_model", "per"], ("per", False)),
        ("sd", ["--metric_for_best_model", "eval_der"], ("eval_der", False)),
        ("pr", ["--metric_for_best_model", "per", "--greater_is_better", "true"], ("per", True)),
    ],
)
def test_best_checkpoint_is_the_best_on_the_task_metric_as_s3prl(monkeypatch, tmp_path, task, flags, expected):
    """s3prl keeps (and tests) the dev checkpoint best on the task's metric (accuracy highest; PER, WER, DER lowest).
    `--load_best_model_at_end` alone made Trainer keep the lowest evaluation loss: another checkpoint, another test
    score. A `--metric_for_best_model` given is kept."""
    import byola_hf.superb.run as superb_run
    from byola_hf import BYOLAConfig, BYOLAFeatureExtractor

    class Stop(Exception):
        pass

    seen = {}

    def push_arguments(training_args, public):
        seen["args"] = training_args
        return push(training_args, public)

    def stop(*args):
        raise Stop

    push = superb_run.trainer_push_arguments
    front_end = (BYOLAConfig(feature_d=64, mean=-8.0, std=4.0), BYOLAFeatureExtractor())
    monkeypatch.setattr(superb_run, "load_front_end_with_statistics", lambda path: front_end)
    monkeypatch.setattr(superb_run, "trainer_push_arguments", push_arguments)
    monkeypatch.setattr(superb_run, "load_task_data", stop)
    argv = ["--task", task, "--model_name_or_path", "unused", "--output_dir", str(tmp_path / "out"), "--use_cpu"]
    argv += ["--eval_strategy", "steps", "--save_strategy", "steps", "--load_best_model_at_end", "--report_to", "none"]
    with pytest.raises(Stop):
        main(argv + flags)
    assert (seen["args"].metric_for_best_model, seen["args"].greater_is_better) == expected


@pytest.mark.parametrize("best", [[], ["--eval_strategy", "steps", "--load_best_model_at_end"]])
def test_prediction_loss_only_is_refused_before_any_work(tmp_path, best):
    """--prediction_loss_only makes Trainer skip the metric: the run trained, then ended in a KeyError traceback (the
    card's eval_accuracy), or, with --load_best_model_at_end choosing by the task's metric, at the first evaluation."""
    arguments = superb_arguments("ks", tmp_path / "no-model", tmp_path / "no-data", tmp_path / "out")
    result = run_superb(*arguments, "--prediction_loss_only", *best)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "--prediction_loss_only: byola-run-superb scores every evaluation on the task's metric (accuracy)" in (
        result.stderr
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--eval_do_concat_batches", "false"], ["--batch_eval_metrics"]])
def test_evaluation_batches_left_unconcatenated_are_refused_before_any_work(tmp_path, flag):
    """--eval_do_concat_batches false hands the metric a list of per-batch arrays: the run trained, then ended in
    "'list' object has no attribute 'argmax'" (a traceback, exit 1) at its first evaluation; --batch_eval_metrics was
    refused by Trainer, after the log-mels were computed, telling the user to change compute_metrics' code."""
    arguments = superb_arguments("ks", tmp_path / "no-model", tmp_path / "no-data", tmp_path / "out")
    result = run_superb(*arguments, *flag)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1 and f"{' '.join(flag)}: byola-run-superb" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "task, metric, refused",
    [("ks", "per", True), ("pr", "eval_accuracy", True), ("ks", "eval_accuracy", False), ("pr", "loss", False)],
)
def test_a_best_model_metric_the_task_does_not_report_is_refused_before_any_work(tmp_path, task, metric, refused):
    """KS with --metric_for_best_model per trained to its first checkpoint, then ended in Trainer's KeyError traceback
    ('eval_per' is not found in the evaluation metrics): each task reports its metric and the loss only."""
    from transformers import TrainingArguments

    from byola_hf.superb.run import ModelArguments, check_task_flags
    from byola_hf.superb.tasks import SUPERB_TASKS

    args = TrainingArguments(str(tmp_path / "out"), metric_for_best_model=metric, report_to="none")
    if not refused:
        check_task_flags(SUPERB_TASKS[task], ModelArguments(model_name_or_path="unused"), args)
        return
    arguments = superb_arguments(task, tmp_path / "no-model", tmp_path / "no-data", tmp_path / "out")
    result = run_superb(
        *arguments, "--eval_strategy", "steps", "--load_best_model_at_end", "--metric_for_best_model", metric
    )
    assert result.returncode == 2, result.stderr[-3000:]
    reported = SUPERB_TASKS[task].metric_key
    assert f"--metric_for_best_model {metric}: {task}'s evaluations report {reported} and loss" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_ctc_predictions_blank_each_clips_padded_frames(tmp_path):
    """A clip of 4 output frames padded to 12 in its batch: with a head that favours token 1 everywhere, its padded
    frames would decode to token 1 for PER/WER; they are the blank, and its own frames are untouched."""
    from transformers import TrainingArguments

    from byola_hf import BYOLAConfig, BYOLAFeatureExtractor
    from byola_hf.modeling_byola import BYOLAForCTC
    from byola_hf.superb.run import SuperbTrainer

    rng = np.random.default_rng(0)
    batch = BYOLAFeatureExtractor()(
        [rng.normal(0, 0.1, 16000), rng.normal(0, 0.1, 6000)], sampling_rate=16000, padding=True, return_tensors="pt"
    )
    model = BYOLAForCTC(BYOLAConfig(feature_d=64, vocab_size=4, ctc_blank_id=2, mean=-8.0, std=4.0))
    with torch.no_grad():
        model.lm_head.bias.copy_(torch.tensor([0.0, 100.0, 0.0, 0.0]))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    _, logits, _ = SuperbTrainer(model=model, args=args).prediction_step(model, dict(batch), False)
    short_frames = int(batch["attention_mask"][1].sum()) // model.config.time_downsampling
    assert logits.shape[1] == 12 and short_frames == 4
    assert logits.argmax(-1).tolist() == [[1] * 12, [1] * 4 + [2] * 8]
    with torch.no_grad():
        alone = model(batch["input_features"][1:, :, :38], attention_mask=batch["attention_mask"][1:, :38]).logits
    torch.testing.assert_close(logits[1, :4], alone[0, :4], rtol=1e-5, atol=1e-4)


def test_ctc_scores_decode_the_logits_as_ctc_and_read_each_reference_as_written(tmp_path):
    """WER (and PER) compare the CTC decoding of the logits (repeated frames merged, blanks dropped) with each
    reference as written: decoded the same way, "hello" and "all" lost a letter to the merge, and a transcription
    spelt right scored as wrong. Here the logits spell each reference (every token on two frames, a blank between
    equal tokens): a WER of 0; without the blank between the two l's of "hello", "helo": one word in four wrong."""
    from types import SimpleNamespace

    import datasets
    import evaluate

    from byola_hf import BYOLAConfig, BYOLAFeatureExtractor
    from byola_hf.superb.metrics import metric_path
    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    task, texts = SUPERB_TASKS["asr"], ["hello world", "all well"]
    recipe = recipe_for(task)
    config = BYOLAConfig(**recipe.fit(datasets.Dataset.from_dict({"text": texts}), BYOLAFeatureExtractor()))
    labels = recipe.encode({"text": texts})
    blank = config.ctc_blank_id

    def spelt(tokens: list[int], blank_between_equal: bool = True) -> list[int]:
        frames = []
        for token in tokens:
            frames += [blank] if frames and frames[-1] == token and blank_between_equal else []
            frames += [token, token]
        return frames

    def score(frames: list[list[int]]) -> dict:
        longest = max(len(row) for row in frames)
        ids = np.asarray([row + [blank] * (longest - len(row)) for row in frames])
        logits = np.eye(config.vocab_size, dtype=np.float32)[ids]
        prediction = SimpleNamespace(predictions=logits, label_ids=recipe.collate_labels(labels, []).numpy())
        return recipe.metrics_function(evaluate.load(metric_path(task.metric), task.metric_config), config)(prediction)

    assert score([spelt(tokens) for tokens in labels]) == {"wer": 0.0}
    assert score([spelt(labels[0], blank_between_equal=False), spelt(labels[1])]) == {"wer": 0.25}


def test_ctc_clips_too_short_for_their_repeated_tokens_are_dropped():
    """CTC needs a blank between two equal tokens: 'a a' cannot align to 2 frames, and with `ctc_zero_infinity` its
    infinite loss was zeroed, so such clips were kept, trained nothing and were not counted as dropped."""
    import datasets

    from byola_hf import BYOLAConfig
    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    mels = {frames: np.zeros((frames * 8, 64), np.float32).tolist() for frames in (2, 3)}  # output frames x 8
    rows = [(2, [5, 5]), (2, [5, 6]), (3, [5, 5]), (3, [5, 5, 5])]
    dataset = datasets.Dataset.from_dict(
        {"input_features": [mels[frames] for frames, _ in rows], "labels": [labels for _, labels in rows]}
    )
    kept = recipe_for(SUPERB_TASKS["pr"]).after_features(dataset, BYOLAConfig(), "train")
    assert kept["labels"] == [[5, 6], [5, 5]]
    # Evaluated clips are all scored, as s3prl scores them (a PER over the clips that fit is not s3prl's).
    scored = recipe_for(SUPERB_TASKS["pr"]).after_features(dataset, BYOLAConfig(), "test")
    assert scored["labels"] == [labels for _, labels in rows]


def test_ctc_evaluation_clips_too_long_for_their_frames_are_scored(ks_model, mini, tmp_path):
    """An evaluation clip whose transcription does not fit its output frames was left out of the PER/WER, which
    s3prl computes over every clip: the published PER and ours were over different clips. It is scored now."""
    import pandas as pd

    data = tmp_path / "pr"
    shutil.copytree(mini["pr"], data)
    table = pd.read_csv(data / "validation" / "metadata.csv")
    table.loc[0, "phonemes"] = " ".join([table.loc[0, "phonemes"]] * 20)
    table.to_csv(data / "validation" / "metadata.csv", index=False)
    result = run_superb(*superb_arguments("pr", ks_model, data, tmp_path / "out"), "--max_steps", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert metrics["eval_samples"] == len(table) and "eval_dropped_samples" not in metrics


@pytest.mark.parametrize("split", ["train", "validation"])
def test_speaker_activity_of_another_speakers_count_is_refused_before_training(split):
    """An SD clip whose activity rows held 3 speakers beside training's 2 ended, after training, in "could not
    broadcast input array from shape (23,2) into shape (23,3)"; the clip is named before any work."""
    import datasets

    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    activity = {name: [[[1, 0], [0, 1]], [[1, 1], [0, 0]]] for name in ("train", "validation")}
    activity[split][1] = [[1, 1, 0], [0, 0, 0]]
    table = {name: datasets.Dataset.from_dict({"activity": rows}) for name, rows in activity.items()}
    recipe = recipe_for(SUPERB_TASKS["sd"])
    with pytest.raises(ValueError, match=f"The {split} split's 'activity' at row 1 has rows of \\[3\\] speakers"):
        recipe.fit(table["train"], None)
        recipe.check_labels_seen(table["validation"], "validation")


def test_a_training_split_of_one_class_or_of_label_lists_is_refused():
    """KS on clips all labelled 'yes' trained a one-logit head (a loss of 0) and reported an accuracy of 1.0; a column
    of label lists ended in a traceback."""
    import datasets

    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    train = datasets.Dataset.from_dict({"label": ["yes", "yes", "yes"]})
    with pytest.raises(ValueError, match="'label' labels are all 'yes': a classifier needs two classes"):
        recipe_for(SUPERB_TASKS["ks"]).fit(train, None)
    lists = datasets.Dataset.from_dict({"label": [["yes"], ["no"], ["yes", "no"]]})  # was a traceback
    with pytest.raises(ValueError, match="The train split's 'label' holds lists"):
        recipe_for(SUPERB_TASKS["ks"]).check_split(lists, "train")


def test_speaker_labels_past_a_clips_end_are_not_scored():
    """A clip may carry one label row more than its output frames: in a batch with a longer clip, that row was kept
    and scored (DER) against the head's output on padding, so the figure depended on the batch; it is cut."""
    from byola_hf import BYOLAFeatureExtractor
    from byola_hf.superb.recipes import IGNORED, recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    examples = [
        {"input_features": np.zeros((16 * 8, 64), np.float32), "labels": [[1, 0]] * 16},
        {"input_features": np.zeros((5 * 8 + 3, 64), np.float32), "labels": [[0, 1]] * 6},  # 5 frames, 6 rows
    ]
    labels = LogMelCollator(BYOLAFeatureExtractor(), recipe_for(SUPERB_TASKS["sd"]), downsampling=8)(examples)[
        "labels"
    ]
    assert labels.shape == (2, 16, 2)
    assert labels[1, :5].tolist() == [[0, 1]] * 5 and bool((labels[1, 5:] == IGNORED).all())


def test_speaker_activity_is_scored_at_probability_one_half_over_the_labelled_frames():
    """SD's DER takes a speaker as active where the head's probability passes 0.5 (logit 0) and scores only the
    labelled frames (rows of -100, padding, are left out): logits of +-0.3 (probabilities 0.57 and 0.43) spelling
    the labels give a DER of 0, and one false alarm in a silent frame 1 error over the 4 speaker-frames."""
    from types import SimpleNamespace

    import evaluate

    from byola_hf import BYOLAConfig
    from byola_hf.superb.metrics import metric_path
    from byola_hf.superb.recipes import IGNORED, recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    task = SUPERB_TASKS["sd"]
    compute = recipe_for(task).metrics_function(
        evaluate.load(metric_path(task.metric), task.metric_config), BYOLAConfig()
    )
    labels = np.asarray([[[1, 0], [1, 1], [0, 0]], [[0, 1], [IGNORED] * 2, [IGNORED] * 2]], np.float32)
    logits = np.where(labels == 1, 0.3, -0.3).astype(np.float32)
    logits[1, 1:] = 5.0  # the padding's outputs: not scored
    assert compute(SimpleNamespace(predictions=logits, label_ids=labels)) == {"der": 0.0}
    logits[0, 2, 0] = 0.3
    assert compute(SimpleNamespace(predictions=logits, label_ids=labels)) == {"der": 0.25}


def test_utterance_scores_take_each_slots_argmax_in_order_and_refuse_reordered_class_lists():
    """Accuracy with slots (IC) counts a clip right when every slot's argmax, slot by slot, is its label; and an
    evaluation split whose ClassLabel lists the training classes in another order is refused: its ids, read through
    the training names, would have scored other classes."""
    from types import SimpleNamespace

    import datasets
    import evaluate

    from byola_hf import BYOLAConfig
    from byola_hf.superb.metrics import metric_path
    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    task = SUPERB_TASKS["ic"]
    config = BYOLAConfig(classifier_slots=[3, 2], num_labels=5)
    compute = recipe_for(task).metrics_function(evaluate.load(metric_path(task.metric), task.metric_config), config)
    logits = np.asarray([[0, 0, 1, 0, 1], [1, 0, 0, 1, 0], [0, 1, 0, 0, 1]], np.float32)  # slots (2, 1) (0, 0) (1, 1)
    labels = np.asarray([[2, 1], [0, 1], [1, 1]])
    assert compute(SimpleNamespace(predictions=logits, label_ids=labels)) == {"accuracy": 2 / 3}
    recipe = recipe_for(SUPERB_TASKS["ks"])
    classes = datasets.Features({"label": datasets.ClassLabel(names=["no", "yes"])})
    recipe.fit(datasets.Dataset.from_dict({"label": [0, 1, 1]}, features=classes), None)
    reordered = datasets.Features({"label": datasets.ClassLabel(names=["yes", "no"])})
    with pytest.raises(ValueError, match="classes .* are not the training split's"):
        recipe.check_labels_seen(datasets.Dataset.from_dict({"label": [0, 1]}, features=reordered), "validation")


def test_class_balanced_draw_is_even_over_classes_and_seeded_per_epoch():
    """s3prl's KS sampler: every class drawn about equally often however unequal the classes (here 80/10/10), and
    each epoch's draw a function of the seed and the epoch alone (what an exact resume and every rank need)."""
    labels = [0] * 80 + [1] * 10 + [2] * 10
    sampler = ClassBalancedSampler(labels, seed=3)
    draws = []
    for epoch in range(30):
        sampler.set_epoch(epoch)
        draws += [labels[index] for index in sampler]
    assert len(sampler) == 100 and len(draws) == 3000
    shares = np.bincount(draws) / len(draws)
    assert np.abs(shares - 1 / 3).max() < 0.05, shares  # the clips as they are: 0.8 / 0.1 / 0.1
    again = ClassBalancedSampler(labels, seed=3)
    again.set_epoch(29)
    assert list(again) == list(sampler)
    again.set_epoch(28)
    assert list(again) != list(sampler)
    assert list(ClassBalancedSampler(labels, seed=4)) != list(ClassBalancedSampler(labels, seed=3))
    next_seed = ClassBalancedSampler(labels, seed=4)
    again.set_epoch(1)
    assert list(again) != list(next_seed)  # seed 3's second epoch is not seed 4's first


def test_from_s3prl_doc_seeds_the_class_balanced_draw_as_the_sampler_does():
    """docs/from_s3prl.md told s3prl users that each KS epoch's draw is seeded with the seed plus the epoch, the rule
    a1b1952 replaced because seed s's second epoch was seed s+1's first: the sampler seeds by (seed, epoch)."""
    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "from_s3prl.md").read_text().split())
    assert "plus the epoch" not in text
    assert "draw from a generator seeded by `(--data_seed or --seed, epoch)`" in text
    sampler, other = ClassBalancedSampler([0, 1] * 8, seed=5), ClassBalancedSampler([0, 1] * 8, seed=6)
    sampler.set_epoch(1)
    assert list(sampler) != list(other)  # seed 5's second epoch is not seed 6's first


def test_keyword_spotting_trains_class_balanced_and_resumes_exactly(ks_model, mini, tmp_path, monkeypatch, caplog):
    """KS draws its training clips through the class-balanced sampler (other classification tasks do not), and a run
    stopped inside an epoch, re-run, ends with the uninterrupted run's weights; another strategy is refused."""
    from safetensors.torch import load_file

    caplog.set_level(logging.INFO, logger="byola_hf.tools.cli")
    drawn = []
    draw = ClassBalancedSampler.__iter__
    monkeypatch.setattr(ClassBalancedSampler, "__iter__", lambda self: drawn.append(self.epoch) or draw(self))
    steps = ["--max_steps", "4", "--per_device_train_batch_size", "8"]
    saves = ("--save_strategy", "steps", "--save_steps", "2")
    whole = tmp_path / "whole"
    result = run_superb(*superb_arguments("ks", ks_model, mini["ks"], whole), *steps, overrides=saves)
    assert result.returncode == 0, result.stderr[-3000:]
    assert drawn, "KS trained without the class-balanced sampler"
    # The same run stopped after its step-2 checkpoint (what kill -9 leaves), then re-run: it resumes mid-epoch.
    stopped = tmp_path / "stopped"
    shutil.copytree(whole / "checkpoint-2", stopped / "checkpoint-2")
    shutil.copy(whole / ".byola_hf_output.json", stopped)
    result = run_superb(*superb_arguments("ks", ks_model, mini["ks"], stopped), *steps, overrides=saves)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from {stopped}/checkpoint-2" in caplog.text
    expected, resumed = load_file(whole / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)
    drawn.clear()
    result = run_superb(*superb_arguments("er", ks_model, mini["ks"], tmp_path / "er"), *TWO_STEPS)
    assert result.returncode == 0 and not drawn, result.stderr[-3000:]
    result = run_superb(
        *superb_arguments("ks", ks_model, mini["ks"], tmp_path / "grouped"), "--train_sampling_strategy", "sequential"
    )
    assert result.returncode == 2 and "ks draws its training clips class-balanced" in result.stderr


def test_held_out_and_sample_limited_splits_are_drawn_with_the_runs_seed(tmp_path):
    """Without an evaluation split the held-out part is datasets' `train_test_split` with the run's `--seed` (a
    fixed seed survived: the runs above use seed 0), and `--max_eval_samples` draws the test split too, as
    transformers' scripts draw (`shuffle(seed=seed).select`)."""
    import datasets
    import soundfile as sf

    from byola_hf import BYOLAConfig
    from byola_hf.superb.run import DataTrainingArguments, load_task_data

    files = [str(tmp_path / f"{index}.wav") for index in range(24)]
    for file in files:
        sf.write(file, np.zeros(1600, np.float32), 16000)
    rows = {"audio": files, "label": [str(index % 3) for index in range(24)], "index": list(range(24))}
    part = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())
    train, test = part.select(range(12)), part.select(range(12, 24))
    datasets.DatasetDict(train=train, test=test).save_to_disk(tmp_path / "saved")
    drawn = {}
    for seed in (7, 8):
        data_args = DataTrainingArguments(
            task="ks", dataset_name=str(tmp_path / "saved"), validation_split_percentage=25, test_split_name="test",
            max_eval_samples=5,
        )  # fmt: skip
        data = load_task_data(data_args, BYOLAConfig(mean=-9.0, std=4.0), seed)
        held_out = train.train_test_split(test_size=0.25, seed=seed)
        assert data.splits["train"]["index"] == held_out["train"]["index"]
        assert data.splits["eval"]["index"] == held_out["test"]["index"]
        assert data.splits["test"]["index"] == test.shuffle(seed=seed).select(range(5))["index"]
        drawn[seed] = data.splits["eval"]["index"]
    assert drawn[7] != drawn[8]


def test_weights_written_again_change_the_run_record(tmp_path):
    """A model folder whose weights were converted again (same config) is another model: its run record differs,
    so a re-run refuses to resume the old run's checkpoints with them (a record without the weights survived)."""
    from transformers import TrainingArguments

    from byola_hf import BYOLAConfig
    from byola_hf.superb.run import DataTrainingArguments, ModelArguments, run_record
    from byola_hf.superb.tasks import SUPERB_TASKS

    (tmp_path / "model.safetensors").write_bytes(b"first")
    model, data = ModelArguments(model_name_or_path=str(tmp_path)), DataTrainingArguments(task="ks")
    training = TrainingArguments(output_dir=str(tmp_path / "unused"), report_to="none")

    def record() -> dict:
        return run_record(model, data, training, SUPERB_TASKS["ks"], BYOLAConfig(mean=-9.0, std=4.0), {})

    first = record()
    assert first == record()
    (tmp_path / "model.safetensors").write_bytes(b"second, longer")
    assert record() != first


def test_a_corpus_training_cut_applies_to_training_clips_only(tmp_path):
    """s3prl cuts VoxCeleb1's training clips to 8 s (`train_max_samples`), its evaluation clips never: the cut is
    passed as `train_max` and must shorten the training log-mels only (ignoring it survived: the mini corpus's
    clips are shorter than any cut)."""
    import datasets
    import soundfile as sf
    from transformers import TrainingArguments

    from byola_hf import BYOLAFeatureExtractor
    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.run import DataTrainingArguments, prepare_features
    from byola_hf.superb.tasks import SUPERB_TASKS

    rng = np.random.default_rng(0)
    files = [str(tmp_path / f"{index}.wav") for index in range(2)]
    for file in files:
        sf.write(file, rng.uniform(-0.5, 0.5, 6400).astype(np.float32), 16000)
    dataset = datasets.Dataset.from_dict({"audio": files, "label": ["a", "b"]}).cast_column("audio", datasets.Audio())
    fe = BYOLAFeatureExtractor(mean=-9.0, std=4.0)
    recipe = recipe_for(SUPERB_TASKS["ks"])
    recipe.fit(dataset, fe)
    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    data_args = DataTrainingArguments(task="ks")
    prepared = prepare_features({"train": dataset, "eval": dataset}, fe, recipe, data_args, training_args, 3200)
    assert [len(row) for row in prepared["train"]["input_features"]] == [fe.num_frames(3200)] * 2
    assert [len(row) for row in prepared["eval"]["input_features"]] == [fe.num_frames(6400)] * 2


def test_fine_tuning_the_encoder_trains_it_on_padded_batches(ks_model, mini, tmp_path):
    """--no_freeze_base_model: the encoder's weights and BatchNorm running statistics move (over valid frames only,
    as BYOLAModel's own test checks), and the saved model says its encoder was fine-tuned."""
    output = tmp_path / "ks-finetuned"
    result = run_superb(*superb_arguments("ks", ks_model, mini["ks"], output), *TWO_STEPS, "--no_freeze_base_model")
    assert result.returncode == 0, result.stderr[-3000:]
    start = AutoModelForAudioClassification.from_pretrained(ks_model, num_labels=10).byola.state_dict()
    tuned = AutoModelForAudioClassification.from_pretrained(output)
    assert tuned.config.freeze_base_model is False
    for name in ("conv_blocks.0.conv.weight", "fc1.weight", "conv_blocks.2.batch_norm.running_mean"):
        assert not torch.equal(tuned.byola.state_dict()[name], start[name]), name


def test_a_rerun_on_data_changed_under_the_same_folder_is_refused(ks_model, mini, tmp_path):
    """The run record holds each split's clips and labels: a re-run after the training clips were relabelled (or a
    clip added) under the same --data_dir was resumed from the old run's checkpoint, training on both, without a
    word; it is now refused before any work, and the unchanged data still resumes."""
    data = tmp_path / "ks"
    shutil.copytree(mini["ks"], data)
    arguments = [*superb_arguments("ks", ks_model, data, tmp_path / "out"), *TWO_STEPS]
    saves = ("--save_strategy", "steps", "--save_steps", "1")
    assert run_superb(*arguments, overrides=saves).returncode == 0
    metadata = data / "train" / "metadata.csv"
    original = metadata.read_text()
    lines = original.splitlines()
    first, label = lines[1].rsplit(",", 1)
    other = next(line.rsplit(",", 1)[1] for line in lines[2:] if line.rsplit(",", 1)[1] != label)
    metadata.write_text("\n".join([lines[0], f"{first},{other}", *lines[2:]]) + "\n")
    result = run_superb(*arguments, overrides=saves)
    assert result.returncode == 2 and "The data changed since the run in" in result.stderr, result.stderr[-2000:]
    assert "new revision): restore it to resume that run, pass --overwrite_output_dir to start over," in result.stderr
    metadata.write_text(original)  # the same clips and labels again: resumed
    assert run_superb(*arguments, overrides=saves).returncode == 0
    shutil.copy(data / "validation" / "00000.wav", data / "validation" / "added.wav")
    (data / "validation" / "metadata.csv").write_text(
        (data / "validation" / "metadata.csv").read_text() + f"added.wav,{label}\n"
    )
    result = run_superb(*arguments, overrides=saves)
    assert result.returncode == 2 and "The data changed since the run in" in result.stderr, result.stderr[-2000:]


def test_a_model_with_a_head_trained_for_other_labels_is_refused(ks_model, mini, tmp_path):
    """A run-superb output passed as the model of another task: other labels of the same count loaded its trained
    head as this task's (its rows read as other classes, training and scores started from it) without a word, and
    another count ended in transformers' traceback. Both are one line now; the same task's labels still load it."""
    trained = tmp_path / "ks"
    assert run_superb(*superb_arguments("ks", ks_model, mini["ks"], trained), *TWO_STEPS).returncode == 0
    renamed = tmp_path / "renamed"
    shutil.copytree(mini["ks"], renamed)
    for metadata in renamed.glob("*/metadata.csv"):
        lines = metadata.read_text().splitlines()
        metadata.write_text("\n".join([lines[0], *(line.replace(",", ",w_", 1) for line in lines[1:])]))
    # byola-finetune's model for the same labels: EVAR's head, which SUPERB's run would have trained as its own.
    evar = tmp_path / "evar"
    config = AutoModelForAudioClassification.from_pretrained(trained).config
    config.classifier_head, config.use_weighted_layer_sum = "evar", False
    BYOLAForSequenceClassification.from_pretrained(
        trained, config=config, ignore_mismatched_sizes=True
    ).save_pretrained(evar)
    for task, data, model in (("ks", renamed, trained), ("sid", mini["sid"], trained), ("ks", mini["ks"], evar)):
        output = tmp_path / f"{task}-from-{model.name}"
        result = run_superb(*superb_arguments(task, model, data, output), *TWO_STEPS)
        assert result.returncode == 2, result.stderr[-3000:]
        assert f"{model} holds a trained BYOLAForSequenceClassification head for other" in result.stderr
        assert not output.exists()  # refused before the folder is claimed
    result = run_superb(*superb_arguments("ks", trained, mini["ks"], tmp_path / "again"), "--do_eval")
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_ctc_model_trained_on_another_vocabulary_is_refused(ks_model, mini, tmp_path):
    """A run-superb PR output passed as the model of a PR run whose transcriptions spell one phoneme otherwise: the
    vocabulary has as many tokens, so the trained head loaded and its outputs were read as the shifted tokens,
    without a word. Refused in one line now; the same vocabulary still loads it."""
    trained = tmp_path / "pr"
    assert run_superb(*superb_arguments("pr", ks_model, mini["pr"], trained), *TWO_STEPS).returncode == 0
    respelt = tmp_path / "respelt"
    shutil.copytree(mini["pr"], respelt)
    for metadata in respelt.glob("*/metadata.csv"):
        rows = list(csv.DictReader(metadata.open()))
        for row in rows:
            row["phonemes"] = " ".join("a9" if token == "a" else token for token in row["phonemes"].split())
        with metadata.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    result = run_superb(*superb_arguments("pr", trained, respelt, tmp_path / "respelt-run"), *TWO_STEPS)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{trained} holds a trained BYOLAForCTC head for another vocabulary" in result.stderr
    # Refused before the folder is claimed (it held a marker and vocab.json, and refused the advised re-run).
    assert not (tmp_path / "respelt-run").exists()
    result = run_superb(*superb_arguments("pr", ks_model, respelt, tmp_path / "respelt-run"), *TWO_STEPS)
    assert result.returncode == 0, result.stderr[-3000:]
    bare = tmp_path / "bare"  # the trained head without its tokenizer: its tokens are unknown
    shutil.copytree(trained, bare, ignore=shutil.ignore_patterns("vocab.json", "*token*", ".byola_hf_output.json"))
    result = run_superb(*superb_arguments("pr", bare, mini["pr"], tmp_path / "bare-run"), "--do_eval")
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        f"{bare} holds a trained BYOLAForCTC head for another vocabulary than this task's (none saved" in result.stderr
    )
    result = run_superb(*superb_arguments("pr", trained, mini["pr"], tmp_path / "again"), "--do_eval")
    assert result.returncode == 0, result.stderr[-3000:]


def test_one_process_over_several_gpus_is_refused(tmp_path, capsys, monkeypatch):
    """A plain run on a machine with two GPUs: Trainer's DataParallel took twice the per-device batch a step (the
    record said one device's) and split it for BatchNorm, silently; a re-run on another machine resumed so."""
    from transformers import TrainingArguments

    from conftest import assert_one_line, run_main

    monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 2))
    argv = ["--task", "ks", "--model_name_or_path", tmp_path / "none", "--output_dir", tmp_path / "out"]
    code, stderr = run_main(main, argv, capsys)
    assert_one_line(code, stderr, "byola-run-superb", "sees 2 GPUs", "torchrun --nproc_per_node 2")
    assert not (tmp_path / "out").exists()

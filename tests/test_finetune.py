"""byola-finetune: EVAR's fine-tuning augmentations, head, loss and schedule against their definitions, and the
command end to end on real recordings (split and fold CSVs, killed and resumed, bad input)."""

import copy
import json
import logging
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score

from byola_hf import BYOLAConfig, BYOLAForSequenceClassification
from byola_hf.finetune import augmentations as aug
from byola_hf.finetune.cli import build_parser, main
from byola_hf.finetune.training import EvarSchedule, FinetuneTrainer, average_precision
from byola_hf.hub import is_unedited_card
from byola_hf.modeling_byola import evar_loss
from byola_hf.pretraining.augmentations import random_resize_crop

from conftest import assert_one_line, every_flag, run_main


COMMAND = "byola-finetune"
QUICK = ["--use_cpu", "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--report_to", "none"]


# --- augmentations: each equals its definition given the draws; the samplers draw from the stated laws ---------------


def masked_by_definition(x: np.ndarray, starts, widths, axis: int) -> np.ndarray:
    expected = x.copy()
    for b, (start, width) in enumerate(zip(starts, widths)):
        for position in range(max(int(start), 0), min(int(start) + int(width), x.shape[axis])):
            if axis == -2:
                expected[b, position, :] = 0.0
            else:
                expected[b, :, position] = 0.0
    return expected


@pytest.mark.parametrize("axis", [-2, -1])
def test_mask_along_axis_is_its_definition(axis):
    x = torch.randn(4, 8, 20, dtype=torch.float64)
    starts, widths = torch.tensor([0, 3, -2, 5]), torch.tensor([2, 0, 4, 30])
    out = aug.mask_along_axis(x, starts, widths, axis)
    assert torch.equal(out, torch.from_numpy(masked_by_definition(x.numpy(), starts, widths, axis)))


def test_mask_bounds_follow_torchaudio_rule():
    """torchaudio: v = rand * param and v0 = rand * (size - v) in float32, start v0.long(), end v0.long() + v.long()
    (truncation toward zero, so v0 in (-1, 0) starts at 0)."""
    rng = np.random.default_rng(0)
    u = rng.random((2, 500)).astype(np.float32)
    for size, param in ((64, 30), (96, 100), (10, 0)):
        starts, widths = aug.mask_bounds(torch.from_numpy(u[0]), torch.from_numpy(u[1]), size, param)
        for i in range(u.shape[1]):
            value = np.float32(u[0, i]) * np.float32(param)
            start = np.float32(u[1, i]) * (np.float32(size) - value)
            expected = (0, 0) if param < 1 else (math.trunc(float(start)), math.trunc(float(value)))
            assert (int(starts[i]), int(widths[i])) == expected


def test_sample_masks_draw_torchaudio_distribution():
    """Widths are uniform on 0..param-1; starts follow P(start = s) = E_v[P(floor(U (size - v)) = s)], v ~ U(0, param)
    (integrated numerically); chi-square tests at a fixed seed."""
    size, param, n = 64, 30, 20000
    starts, widths = aug.sample_masks(n, size, param, torch.Generator().manual_seed(1))
    width_counts = np.bincount(widths.numpy(), minlength=param)
    assert len(width_counts) == param
    assert stats.chisquare(width_counts).pvalue > 1e-3
    values = (np.arange(200000) + 0.5) / 200000 * param
    spans = size - values
    pmf = np.array([np.mean(np.clip(np.minimum(s + 1, spans) - s, 0, None) / spans) for s in range(size)])
    counts = np.bincount(starts.numpy(), minlength=size)
    keep = pmf * n > 5
    observed, expected = counts[keep], pmf[keep] * n
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-3


def test_mixup_is_its_definition():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, dtype=torch.float64, generator=generator)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0]), 3).double()
    lambdas, permutation = torch.rand(5, dtype=torch.float64, generator=generator), torch.tensor([3, 0, 4, 1, 2])
    mixed_x, mixed_y = aug.mixup(x, y, lambdas, permutation)
    for b in range(5):
        lam, other = float(lambdas[b]), int(permutation[b])
        assert torch.allclose(mixed_x[b], lam * x[b] + (1 - lam) * x[other], rtol=0, atol=1e-15)
        assert torch.allclose(mixed_y[b], lam * y[b] + (1 - lam) * y[other], rtol=0, atol=1e-15)


def test_sample_mixup_draws_beta_and_permutations():
    lambdas, permutation = aug.sample_mixup(20000, 0.5, torch.Generator().manual_seed(2))
    assert stats.kstest(lambdas.numpy(), stats.beta(0.5, 0.5).cdf).pvalue > 1e-3
    assert sorted(permutation.tolist()) == list(range(20000))
    firsts = [int(aug.sample_mixup(4, 0.3, torch.Generator().manual_seed(s))[1][0]) for s in range(4000)]
    assert stats.chisquare(np.bincount(firsts, minlength=4)).pvalue > 1e-3


def test_crop_or_pad_and_clip_starts():
    """A clip keeps `unit` samples from its start, zero past its end; EVAR's training start is uniform on
    0..length-unit-1 (numpy's randint(length - unit)) for longer clips, 0 otherwise."""
    waveforms = torch.arange(2 * 12, dtype=torch.float64).reshape(2, 12) + 1
    lengths, starts = torch.tensor([12, 5]), torch.tensor([4, 0])
    out = aug.crop_or_pad(waveforms, lengths, starts, 6)
    assert out[0].tolist() == waveforms[0, 4:10].tolist()
    assert out[1].tolist() == [*waveforms[1, :5].tolist(), 0.0]
    lengths = torch.tensor([16] * 30000 + [5])
    drawn = aug.sample_clip_starts(lengths, 10, torch.Generator().manual_seed(3))
    assert int(drawn[-1]) == 0
    assert stats.chisquare(np.bincount(drawn[:-1].numpy(), minlength=6)).pvalue > 1e-3
    assert int(drawn.max()) == 5


def test_finetune_augmentation_applies_evar_order():
    """Frequency mask, then time mask, then the random resize crop, each with its own draws."""
    blocks = aug.FinetuneAugmentation(freq_mask=20, time_mask=30, resize_crop=True)
    x = torch.randn(3, 64, 101, dtype=torch.float64)
    draws = blocks.sample(3, 64, 101, torch.Generator().manual_seed(4))
    expected = masked_by_definition(x.numpy(), *draws.frequency, axis=-2)
    expected = masked_by_definition(expected, *draws.time, axis=-1)
    expected = random_resize_crop(torch.from_numpy(expected)[:, None], draws.boxes)[:, 0]
    assert torch.equal(blocks(x, draws), expected)
    off = aug.FinetuneAugmentation(0, 0, False)
    assert torch.equal(off(x, off.sample(3, 64, 101)), x)


# --- the head, the loss and the schedule ---------------------------------------------------------------------------


@pytest.mark.parametrize("multi_label", [False, True])
def test_evar_head_and_loss_in_float64(multi_label):
    torch.manual_seed(0)
    config = BYOLAConfig(
        feature_d=64, mean=-8.0, std=4.0, classifier_head="evar", use_weighted_layer_sum=False,
        freeze_base_model=False, num_labels=3,
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )  # fmt: skip
    model = BYOLAForSequenceClassification(config).double().train()
    assert model.norm.weight is None and model.norm.bias is None
    assert float(model.classifier.bias.detach().abs().max()) == 0.0
    assert 0.007 < float(model.classifier.weight.detach().std()) < 0.013  # normal, std 0.01 (192 weights)
    x = torch.randn(6, 64, 120, dtype=torch.float64) - 8
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]], dtype=torch.float64)
    labels = labels if multi_label else torch.tensor([0, 2, 1, 1, 0, 2])
    torch.manual_seed(1)
    output = model(x, labels=labels)
    torch.manual_seed(1)  # the same dropout
    embedding = model.byola(x).pooler_output
    normalised = (embedding - embedding.mean(0)) / torch.sqrt(embedding.var(0, unbiased=False) + 1e-5)
    logits = normalised @ model.classifier.weight.T + model.classifier.bias
    assert torch.allclose(output.logits, logits, rtol=0, atol=1e-12)
    if multi_label:
        p = torch.sigmoid(logits)
        loss = -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean()
    else:
        one_hot = torch.nn.functional.one_hot(labels, 3).double()
        loss = -(one_hot * (logits - torch.logsumexp(logits, -1, keepdim=True))).sum() / (6 * 3)
    assert torch.allclose(output.loss, loss, rtol=0, atol=1e-12)
    if not multi_label:  # mixup's soft rows
        soft = torch.softmax(torch.randn(6, 3, dtype=torch.float64), -1)
        expected = -(soft * (logits - torch.logsumexp(logits, -1, keepdim=True))).sum() / (6 * 3)
        assert torch.allclose(evar_loss(output.logits, soft, None), expected, rtol=0, atol=1e-12)


def test_evar_head_refuses_a_training_batch_of_one_naming_the_fix():
    """BatchNorm over a batch of one clip has no statistics: in a user's Trainer the last batch of an epoch ended in
    torch's "Expected more than 1 value per channel"; the error now names dataloader_drop_last. Eval mode runs."""
    config = BYOLAConfig(
        feature_d=64, mean=-8.0, std=4.0, classifier_head="evar", use_weighted_layer_sum=False, num_labels=3
    )
    model = BYOLAForSequenceClassification(config).train()
    x = torch.randn(1, 64, 120) - 8
    with pytest.raises(ValueError, match="two clips or more.*dataloader_drop_last=True"):
        model(x, labels=torch.tensor([1]))
    assert model.eval()(x).logits.shape == (1, 3)


def test_schedule_is_cosine_with_linear_warmup_per_iteration():
    """LR of optimiser step k = f(max(k - 1, 0) / E), EVAR stepping timm's scheduler after each iteration:
    f(t) = base t / warmup in the warm-up, then min + (base - min)(1 + cos(pi t / epochs)) / 2."""
    base, low, warmup, epochs, per_epoch = 0.1, 1e-7, 5, 20, 3
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, EvarSchedule(per_epoch, warmup, epochs, base, low))
    for k in range(epochs * per_epoch):
        t = max(k - 1, 0) / per_epoch
        expected = base * t / warmup if t < warmup else low + (base - low) * (1 + math.cos(math.pi * t / epochs)) / 2
        assert math.isclose(optimizer.param_groups[0]["lr"], expected, rel_tol=1e-12, abs_tol=1e-15), k
        optimizer.step()
        scheduler.step()


def test_average_precision_is_sklearns():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = rng.random(40) < 0.3
        truth[0] = True
        scores = np.round(rng.random(40), 1)  # ties
        assert math.isclose(average_precision(scores, truth), average_precision_score(truth, scores), rel_tol=1e-12)


def test_training_log_mels_are_augmented_where_evar_augments_them():
    """EVAR masks and crops the normalised log-mel, where 0 is the task's mean; the model normalises its input
    itself, so the trainer maps the augmented features back: `augment((x - mean) / std) * std + mean`, a masked band
    holding the mean. Augmented raw, the masks held log-mel 0 (a loud band, about 2 std above the mean here)."""
    from types import SimpleNamespace

    from byola_hf import BYOLAFeatureExtractor

    fe, blocks = BYOLAFeatureExtractor(), aug.FinetuneAugmentation(freq_mask=30, time_mask=40, resize_crop=True)
    model = SimpleNamespace(training=True, config=SimpleNamespace(mean=-8.0, std=4.0))
    waveforms = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    trainer = SimpleNamespace(feature_extractor=fe, augmentation=blocks)
    got = FinetuneTrainer.log_mels(trainer, model, waveforms, torch.Generator().manual_seed(5))
    features = fe(waveforms, sampling_rate=16000, return_tensors="pt")["input_features"]
    draws = blocks.sample(2, *features.shape[1:], torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, blocks((features + 8.0) / 4.0, draws) * 4.0 - 8.0, rtol=0, atol=1e-5)


def test_each_training_step_draws_from_the_seed_the_step_and_the_micro_batch():
    """A run's augmentation draws come from `--seed` (two seeds give two runs) and its position in training (a
    resumed run draws what the uninterrupted run drew): every combination gives its own generator seed."""
    from itertools import product

    from byola_hf.finetune.training import step_seed

    seeds = {step_seed(seed, step, micro) for seed, step, micro in product((42, 43), (0, 1), (0, 1))}
    assert len(seeds) == 8 and step_seed(42, 1, 0) == step_seed(42, 1, 0)


def test_evaluation_clips_keep_their_start():
    """Evaluation cuts each clip to its first `unit` samples, as EVAR's test split does; training clips stay whole
    (their crop is drawn in each step)."""
    from byola_hf.finetune.data import ClipSet, FinetuneTask

    waveform = np.arange(10, dtype=np.float32)
    task = FinetuneTask([waveform], np.asarray([1]), ["a", "b"], False, [], "split", "")
    assert ClipSet(task, np.asarray([0]), cut=4)[0]["waveform"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert ClipSet(task, np.asarray([0]))[0]["waveform"].tolist() == waveform.tolist()


def test_reported_scores_are_accuracy_and_map_over_the_classes_with_a_positive():
    """`accuracy` over every evaluated clip; `mAP` the mean of scikit-learn's average precision over the classes
    that have a positive clip (a class without one has no AP, and is not a 0 in the mean)."""
    from types import SimpleNamespace

    from sklearn.metrics import average_precision_score

    from byola_hf.finetune.training import metrics_function

    logits = np.asarray([[2.0, 0.1, -1.0], [0.3, 0.2, 0.9], [0.0, 1.5, 0.2]], np.float32)
    scores = metrics_function(False)(SimpleNamespace(predictions=logits, label_ids=np.asarray([0, 1, 1])))
    assert scores == {"accuracy": 2 / 3}
    targets = np.asarray([[1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    expected = np.mean([average_precision_score(targets[:, c], logits[:, c]) for c in (0, 1)])
    scores = metrics_function(True)(SimpleNamespace(predictions=logits, label_ids=targets))
    assert math.isclose(scores["mAP"], expected, rel_tol=1e-12)


# --- byola-finetune end to end on real recordings --------------------------------------------------------------------

ALSA = ["Front_Center", "Front_Left", "Rear_Left", "Side_Right", "Rear_Right"]
FREEDESKTOP = ["bell", "complete", "dialog-error", "message", "service-login"]
PHRASES = ["one two", "hello there", "yes or no", "stop now", "left right"]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """Fifteen real clips of three classes: ALSA's spoken channel names, freedesktop sounds, espeak-ng speech."""
    root = tmp_path_factory.mktemp("finetune_task")
    for name in ALSA:
        source = Path(f"/usr/share/sounds/alsa/{name}.wav")
        if not source.is_file():
            pytest.skip(f"{source} missing (scripts/setup.sh installs alsa-utils' sounds)")
        (root / f"{name}.wav").symlink_to(source)
    for name in FREEDESKTOP:
        (root / f"{name}.oga").symlink_to(f"/usr/share/sounds/freedesktop/stereo/{name}.oga")
    for index, phrase in enumerate(PHRASES):
        subprocess.run(["espeak-ng", "-w", str(root / f"speech{index}.wav"), phrase], check=True)
    return root


def task_rows() -> list[tuple[str, str]]:
    return (
        [(f"{name}.wav", "alsa") for name in ALSA]
        + [(f"{name}.oga", "sound") for name in FREEDESKTOP]
        + [(f"speech{index}.wav", "speech") for index in range(len(PHRASES))]
    )


def write_csv(path: Path, header: str, rows) -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def split_csv(task_dir: Path, tmp_path: Path) -> Path:
    splits = ["train", "train", "train", "valid", "test"]
    rows = [(name, label, splits[index % 5]) for index, (name, label) in enumerate(task_rows())]
    return write_csv(tmp_path / "split.csv", "file_name,label,split", rows)


def fold_csv(task_dir: Path, tmp_path: Path) -> Path:
    rows = [(name, label, index % 5 + 1) for index, (name, label) in enumerate(task_rows())]
    return write_csv(tmp_path / "fold.csv", "file_name,label,fold", rows)


def command(model, csv, task_dir, output, *extra) -> list:
    return [
        "--model_name_or_path", model, "--metadata_csv", csv, "--data_dir", task_dir, "--output_dir", output,
        "--unit_seconds", "1.0", "--num_train_epochs", "2", "--per_device_train_batch_size", "4",
        "--warmup_epochs", "1", *QUICK, *extra,
    ]  # fmt: skip


def test_split_csv_end_to_end_loads_with_auto_class_and_pipeline(small_model, task_dir, tmp_path, capsys):
    from transformers import AutoModelForAudioClassification, pipeline

    output = tmp_path / "out"
    main([str(a) for a in command(small_model, split_csv(task_dir, tmp_path), task_dir, output, "--seeds", "2")])
    result = json.loads((output / "eval_results.json").read_text())
    assert result["protocol"] == "train/valid/test split" and result["selection"] == "the validation split"
    assert len(result["scores"]) == 2 and result["folds"][0]["num_test"] == 3
    assert math.isclose(result["test_accuracy"], np.mean(result["scores"]))
    assert math.isclose(result["test_accuracy_std"], np.std(result["scores"]))
    model_dir = output / "fold-all_seed-42"
    assert not list(model_dir.glob("checkpoint-*"))
    # Each run's test predictions (EVAR writes them; none were saved, so a score could not be checked): they give it.
    rows = pandas.read_csv(tmp_path / "split.csv")
    tested = list(rows["file_name"][rows["split"] == "test"])
    for seed, score in zip((42, 43), result["scores"]):
        predicted = pandas.read_csv(output / f"fold-all_seed-{seed}" / "test_predictions.csv")
        assert list(predicted["file_name"]) == tested and len(tested) == 3
        assert (predicted["label"] == predicted["prediction"]).mean() == score
    card = (model_dir / "README.md").read_text()
    assert "test_accuracy" in card and "split" in card and "mixup alpha 0.5" in card
    assert is_unedited_card(card)  # signed as written: a later push without a card may replace it
    model = AutoModelForAudioClassification.from_pretrained(model_dir)
    assert isinstance(model, BYOLAForSequenceClassification) and model.config.classifier_head == "evar"
    predictions = pipeline("audio-classification", model=str(model_dir))(str(task_dir / "speech0.wav"))
    assert {p["label"] for p in predictions} == {"alsa", "sound", "speech"}
    assert "test accuracy" in capsys.readouterr().out


def test_fold_csv_killed_and_rerun_resumes_to_the_same_result(small_model, task_dir, tmp_path, monkeypatch, capsys):
    """Folds 1 and 2 of five, leave-one-fold-out (the test rows choose the epoch): a run killed right after the second
    fold's first checkpoint resumes that fold from it, reads the first fold's finished result back, and ends with the
    figures and weights of a run never killed; the re-run says both (it logged them at a level not shown)."""
    csv = fold_csv(task_dir, tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    main([str(a) for a in command(small_model, csv, task_dir, whole, "--folds", "1", "2")])
    original = FinetuneTrainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if "fold-2" in self.args.output_dir and self.state.global_step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(FinetuneTrainer, "_save_checkpoint", save_then_die)
    code, _ = run_main(main, command(small_model, csv, task_dir, killed, "--folds", "1", "2"), capsys)
    assert code == 130
    assert (killed / "fold-1_seed-42" / "run_result.json").is_file()
    assert (killed / "fold-2_seed-42" / "checkpoint-3").is_dir() and not (killed / "eval_results.json").exists()
    monkeypatch.setattr(FinetuneTrainer, "_save_checkpoint", original)
    first_done = (killed / "fold-1_seed-42" / "run_result.json").stat().st_mtime_ns
    capsys.readouterr()
    main([str(a) for a in command(small_model, csv, task_dir, killed, "--folds", "1", "2")])
    printed = capsys.readouterr().out
    assert "fold-1_seed-42 is finished" in printed
    assert "Resuming fold 2, seed 42 from" in printed and "checkpoint-3" in printed
    assert (killed / "fold-1_seed-42" / "run_result.json").stat().st_mtime_ns == first_done
    expected, resumed = (json.loads((folder / "eval_results.json").read_text()) for folder in (whole, killed))
    assert resumed["protocol"] == "leave-one-fold-out" and "test rows" in resumed["selection"]
    assert [fold["fold"] for fold in resumed["folds"]] == ["1", "2"]
    assert resumed["scores"] == expected["scores"]
    from safetensors.torch import load_file

    for folder in ("fold-1_seed-42", "fold-2_seed-42"):
        a, b = (load_file(root / folder / "model.safetensors") for root in (whole, killed))
        assert all(torch.equal(a[key], b[key]) for key in a)
    code, stderr = run_main(
        main, command(small_model, csv, task_dir, killed, "--folds", "1", "2", "--mixup", "0.3"), capsys
    )
    assert_one_line(code, stderr, COMMAND, "other inputs or arguments")


def test_multi_label_cells_train_with_bce_and_report_map(small_model, task_dir, tmp_path):
    rows = [
        (name, f"{label},loud" if index % 2 else label, ["train", "train", "valid", "test"][index % 4])
        for index, (name, label) in enumerate(task_rows())
    ]
    csv = write_csv(tmp_path / "multi.csv", "file_name,label,split", [(n, f'"{l}"', s) for n, l, s in rows])
    output = tmp_path / "multi"
    main([str(a) for a in command(small_model, csv, task_dir, output, "--num_train_epochs", "1")])
    result = json.loads((output / "eval_results.json").read_text())
    assert result["multi_label"] and result["metric"] == "mAP" and 0 < result["test_mAP"] <= 1
    assert result["classes"] == ["alsa", "loud", "sound", "speech"]
    config = json.loads((output / "fold-all_seed-42" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    predicted = pandas.read_csv(output / "fold-all_seed-42" / "test_predictions.csv", keep_default_na=False)
    assert list(predicted.columns) == ["file_name", "label", *result["classes"]]
    targets = np.asarray([[name in labels.split(",") for name in result["classes"]] for labels in predicted["label"]])
    scores = predicted[result["classes"]].to_numpy()
    positive = targets.any(0)  # the mAP is over the classes with a positive
    expected = average_precision_score(targets[:, positive], scores[:, positive], average="macro")
    assert expected == pytest.approx(result["test_mAP"], abs=1e-6)


def test_bad_input_is_one_line_each(small_model, task_dir, tmp_path, capsys):
    rows = task_rows()
    cases = {
        "no labels": (write_csv(tmp_path / "a.csv", "file_name,split", [(n, "train") for n, _ in rows]), (),
                      ("no label column 'label'", "--label_column_name")),
        "fold without test rows": (fold_csv(task_dir, tmp_path), ("--folds", "7"), ("fold 7", "no test rows")),
        "one class": (write_csv(tmp_path / "b.csv", "file_name,label,split",
                                [(n, "x", ["train", "test"][i % 2]) for i, (n, _) in enumerate(rows)]), (),
                      ("one class only",)),
        "unseen label": (write_csv(tmp_path / "c.csv", "file_name,label,split",
                                   [(n, label, "test" if label == "speech" else "train") for n, label in rows]), (),
                         ("never seen", "speech")),
        # A file listed again as a test clip was trained on and tested on: the score counted it as unseen.
        "clip in train and test": (write_csv(tmp_path / "d.csv", "file_name,label,split",
                                             [(n, label, ["train", "train", "test"][i % 3]) for i, (n, label)
                                              in enumerate(rows)] + [(rows[0][0], rows[0][1], "test")]), (),
                                   ("1 clip(s) are in both the training and the test part", rows[0][0])),
        "unit under a frame": (write_csv(tmp_path / "e.csv", "file_name,label,split",
                                                     [(n, label, ["train", "test"][i % 2]) for i, (n, label)
                                                      in enumerate(rows)]), ("--unit_seconds", "0.05"),
                               ("--unit_seconds 0.05 is shorter than one output frame", "0.07 s (1120 samples)")),
        # Every batch was one clip: training started, then died naming dataloader_drop_last, a flag byola-finetune
        # refuses (it drops a last batch of one itself).
        "batch of one": (write_csv(tmp_path / "f.csv", "file_name,label,split",
                                   [(n, label, ["train", "test"][i % 2]) for i, (n, label) in enumerate(rows)]),
                         ("--per_device_train_batch_size", "1"),
                         ("--per_device_train_batch_size 1", "BatchNorm1d", "2 or more")),
    }  # fmt: skip
    for name, (csv, extra, fragments) in cases.items():
        code, stderr = run_main(main, command(small_model, csv, task_dir, tmp_path / name, *extra), capsys)
        assert_one_line(code, stderr, COMMAND, *fragments)
        assert not (tmp_path / name).exists(), name


def test_clips_all_shorter_than_a_frame_without_a_unit_name_the_flag_to_give(small_model, tmp_path, capsys):
    """Without --unit_seconds the unit is the longest clip; when every clip was under one output frame the refusal
    read "--unit_seconds 0.05625 is shorter than one output frame", a value the user never gave."""
    import soundfile

    rows = []
    for index in range(8):
        soundfile.write(tmp_path / f"{index}.wav", np.full(900 - index, 0.1, np.float32), 16000)
        rows.append((f"{index}.wav", "ab"[index % 2], ["train", "train", "test", "train"][index % 4]))
    csv = write_csv(tmp_path / "short.csv", "file_name,label,split", rows)
    argv = ["--model_name_or_path", small_model, "--metadata_csv", csv, "--data_dir", tmp_path]
    code, stderr = run_main(main, [*argv, "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, COMMAND, "the longest 900 samples", "give --unit_seconds 0.07 or more")
    assert "--unit_seconds 0.05625" not in stderr and not (tmp_path / "out").exists()


def test_recipe_flags_take_any_spelling(small_model, task_dir, tmp_path, capsys):
    """A flag spelled with dashes was taken for not given: EVAR's default replaced the user's --learning-rate, and a
    setting the recipe owns (--eval-strategy) was silently replaced instead of refused."""
    from byola_hf.tools.cli import parse_arguments

    flags = ["--model_name_or_path", "m", "--metadata_csv", "c", "--output_dir", str(tmp_path)]
    training_args = parse_arguments(build_parser(), [*flags, "--learning-rate", "0.01"])[1]
    assert (training_args.learning_rate, training_args.num_train_epochs) == (0.01, 200)
    assert training_args.per_device_train_batch_size == training_args.per_device_eval_batch_size == 256
    csv = split_csv(task_dir, tmp_path)
    code, stderr = run_main(
        main, command(small_model, csv, task_dir, tmp_path / "out", "--eval-strategy", "no"), capsys
    )
    assert_one_line(code, stderr, COMMAND, "sets --eval_strategy itself")
    code, stderr = run_main(
        main, command(small_model, csv, task_dir, tmp_path / "out", "--hub-model-id", "me/x"), capsys
    )  # it never pushes: the flag was taken without a word
    assert_one_line(code, stderr, COMMAND, "does not push (one model per fold and seed): drop --hub_model_id")
    assert not (tmp_path / "out").exists()


def test_gradients_are_not_clipped_unless_asked_as_in_evar(tmp_path):
    """EVAR clips no gradient; Trainer clips at norm 1.0 unless told, so every byola-finetune step was clipped
    without a word (the gradient norms of a mini task's run were about 4)."""
    from byola_hf.tools.cli import parse_arguments

    flags = ["--model_name_or_path", "m", "--metadata_csv", "c", "--output_dir", str(tmp_path)]
    assert parse_arguments(build_parser(), flags)[1].max_grad_norm == 0.0
    assert parse_arguments(build_parser(), [*flags, "--max-grad-norm", "1"])[1].max_grad_norm == 1.0


@pytest.mark.parametrize(
    "flag",
    [["--eval_delay", "3"], ["--dataloader_drop_last"], ["--label_smoothing_factor", "0.1"], ["--adam_beta2", "0.5"],
     ["--adam_beta1", "0.5"], ["--adam_epsilon", "0.1"], ["--optim_args", "x=1"], ["--auto_find_batch_size"],
     ["--lr_scheduler_kwargs", '{"x": 1}']],
)  # fmt: skip
def test_trainer_flags_that_would_bend_the_recipe_are_refused(flag, small_model, tmp_path, capsys):
    """--eval_delay made the run test the best of its later epochs only (EVAR tests the best of every epoch), and
    --dataloader_drop_last (the recipe's own rule) and --label_smoothing_factor (EVAR's loss) were replaced without a
    word; Adam's and the schedule's flags were recorded and ignored (the recipe builds its own), and
    --auto_find_batch_size would halve the batch under the schedule counted for the full one: all are refused, before
    the task's audio is read (here a CSV that is not there)."""
    argv = [
        "--model_name_or_path",
        small_model,
        "--metadata_csv",
        tmp_path / "none.csv",
        "--output_dir",
        tmp_path,
        *flag,
    ]
    code, stderr = run_main(main, argv, capsys)
    assert_one_line(code, stderr, COMMAND, f"sets {flag[0]} itself")


def test_several_visible_gpus_and_a_torchrun_launch_are_refused(small_model, tmp_path, capsys, monkeypatch):
    """On a machine with two GPUs Trainer's DataParallel took two batches a step while the recipe counted its epochs,
    warm-up and cosine for one: every epoch counted as half of one, silently. A torchrun launch on a machine without
    a GPU was told to add --use_cpu, then refused for the launch."""
    from transformers import TrainingArguments

    argv = ["--model_name_or_path", small_model, "--metadata_csv", tmp_path / "none.csv", "--output_dir", tmp_path]
    with monkeypatch.context() as patched:
        patched.setattr(TrainingArguments, "n_gpu", property(lambda self: 2))
        code, stderr = run_main(main, argv, capsys)
    assert_one_line(code, stderr, COMMAND, "sees 2 GPUs, over which Trainer would split each batch (DataParallel)")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, stderr = run_main(main, argv, capsys)
    assert_one_line(code, stderr, COMMAND, "trains in one process: start it without torchrun / accelerate launch.")


@pytest.mark.parametrize(
    "flag, fragment",
    [
        (["--prediction_loss_only"], "--prediction_loss_only: byola-finetune scores every epoch"),
        (["--eval_do_concat_batches", "false"], "--eval_do_concat_batches false: byola-finetune scores every epoch"),
        (["--batch_eval_metrics"], "--batch_eval_metrics: byola-finetune scores every epoch"),
        (["--label_names", "foo"], "--label_names: byola-finetune gives the model its own label column"),
        (["--include_for_metrics", "inputs"], "--include_for_metrics: byola-finetune gives the model its own label"),
    ],
)
def test_trainer_flags_that_keep_the_metric_from_the_run_are_refused(flag, fragment, small_model, tmp_path, capsys):
    """Both trained an epoch, then ended in a traceback: --prediction_loss_only skips the metric (Trainer's KeyError:
    no eval_accuracy to keep the best epoch by), --eval_do_concat_batches false hands it per-batch lists
    ("'list' object has no attribute 'argmax'"); --batch_eval_metrics was refused by Trainer telling the user to
    change compute_metrics' code; --label_names and --include_for_metrics ended in tracebacks (an unexpected
    'waveforms' argument; no 'input_features'). Refused before the task's audio is read; `--label_names labels`, the
    models' own, is not."""
    from types import SimpleNamespace

    from byola_hf.tools.cli import check_scored_evaluation

    defaults = {"prediction_loss_only": False, "eval_do_concat_batches": True, "batch_eval_metrics": False}
    check_scored_evaluation(SimpleNamespace(label_names=["labels"], include_for_metrics=[], **defaults), COMMAND, "")
    argv = ["--model_name_or_path", small_model, "--metadata_csv", tmp_path / "none.csv", "--output_dir", tmp_path]
    code, stderr = run_main(main, [*argv, *flag], capsys)
    assert_one_line(code, stderr, COMMAND, fragment)


def test_a_batch_holding_every_training_clip_warns_that_epochs_are_single_steps(
    small_model, task_dir, tmp_path, caplog
):
    """EVAR's batch of 256 on a mini task's 120 clips made every epoch one optimiser step: a 40-epoch run left the
    head at its initialisation and scored below chance, silently. The command now says so."""
    csv = split_csv(task_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="byola_hf.finetune.run"):
        main(
            [
                str(a)
                for a in command(small_model, csv, task_dir, tmp_path / "out", "--per_device_train_batch_size", "9")
            ]
        )
    notes = [record.getMessage() for record in caplog.records if "ONE optimiser step" in record.getMessage()]
    assert notes == ["The batch (9) holds all 9 training clips: each epoch is ONE optimiser step, so 2 epochs are 2 "
        "steps, the first 1 of them warming up from a learning rate of 0. Give a smaller "
        "--per_device_train_batch_size (or more epochs) to train more steps."]  # fmt: skip
    from byola_hf.finetune.run import one_step_epochs_note

    assert one_step_epochs_note(train_clips=10, batch=9, epochs=2, warmup_epochs=1) is None
    # EVAR's 5 warm-up epochs in a 2-epoch run: both steps warm up (the note said "the first 5 of them" of 2)
    assert "2 steps, every one of them warming up" in one_step_epochs_note(120, 256, epochs=2, warmup_epochs=5)


@pytest.mark.parametrize("index, name", every_flag(build_parser()))
def test_run_record_covers_every_flag_but_the_may_change_list(index, name, tmp_path):
    """byola-finetune's record holds every flag (ours and TrainingArguments, as the installed releases define them)
    except the shared may-change list less the run's length (EVAR's schedule is counted in epochs): changing any
    other changes the record, so the re-run is refused."""
    from types import SimpleNamespace

    from byola_hf.finetune.run import MAY_CHANGE, run_record

    parsed = build_parser().parse_args_into_dataclasses(
        args=["--model_name_or_path", "m", "--metadata_csv", "t.csv", "--output_dir", str(tmp_path), "--use_cpu"]
    )
    task = SimpleNamespace(fingerprint="f")
    record = run_record(*parsed, BYOLAConfig(), task)
    changed = list(parsed)
    changed[index] = copy.copy(parsed[index])
    setattr(changed[index], name, f"another {name}")
    assert (run_record(*changed, BYOLAConfig(), task) != record) == (name not in MAY_CHANGE)
    assert "num_train_epochs" not in MAY_CHANGE


def test_record_labels_and_folds_follow_the_data(tmp_path):
    """The run record changes with the data's fingerprint (a record without it survived: a CSV relabelled in place
    resumed the old run); multi-label cells are split at commas with the spaces around each label dropped ('a, b'
    is the classes a and b, not a and ' b'); and a validation part with a class its training part lacks is refused
    as a test part is (only the test part's check survived)."""
    from types import SimpleNamespace

    from byola_hf.finetune.data import check_fold_classes, parse_labels
    from byola_hf.finetune.run import run_record
    from byola_hf.linear_eval.evaluate import FoldRows

    parsed = build_parser().parse_args_into_dataclasses(
        args=["--model_name_or_path", "m", "--metadata_csv", "t.csv", "--output_dir", str(tmp_path), "--use_cpu"]
    )
    records = [run_record(*parsed, BYOLAConfig(), SimpleNamespace(fingerprint=name)) for name in ("f", "f", "g")]
    assert records[0] == records[1] != records[2]
    assert parse_labels(["a, b", "b,c", " c "], True) == [["a", "b"], ["b", "c"], ["c"]]
    labels = ["a", "b", "a", "c", "b"]
    check_fold_classes(FoldRows("1", np.array([0, 1]), np.array([2, 4]), np.array([1])), labels, False, ["a", "b"])
    for valid, test, part in (([3], [2], "validation"), ([2], [3], "test")):
        fold = FoldRows("1", np.array([0, 1]), np.array(test), np.array(valid))
        with pytest.raises(ValueError, match=f"Fold 1: the {part} part has labels never seen in its training part: c"):
            check_fold_classes(fold, labels, False, ["a", "b", "c"])


def test_a_fine_tuned_model_is_refused_as_the_start(small_model, task_dir, tmp_path, capsys):
    """A fine-tuned model folder passed as the model of a task of other classes (here as many, named otherwise)
    started from its trained head, each output read as another class, where the recipe draws a fresh one; of
    another count, transformers' traceback; of the same classes, every fold started from weights trained on other
    folds' test clips (a score inflated without a word). One line now, before the output folder is made."""
    trained = tmp_path / "trained"
    same = split_csv(task_dir, tmp_path)
    main([str(a) for a in command(small_model, same, task_dir, trained)])
    splits = ["train", "train", "train", "valid", "test"]
    renamed = [(name, f"other_{label}", splits[index % 5]) for index, (name, label) in enumerate(task_rows())]
    two = [(name, label == "speech", splits[index % 5]) for index, (name, label) in enumerate(task_rows())]
    csvs = {name: write_csv(tmp_path / f"{name}.csv", "file_name,label,split", rows)
            for name, rows in (("renamed", renamed), ("two", two))}  # fmt: skip
    for name, csv in {**csvs, "same": same}.items():
        code, stderr = run_main(main, command(trained / "fold-all_seed-42", csv, task_dir, tmp_path / name), capsys)
        assert_one_line(code, stderr, COMMAND, "holds a trained BYOLAForSequenceClassification head", "encoder alone")
        assert not (tmp_path / name).exists()


def test_frequency_masks_stay_within_the_mel_bins():
    """Each mask is drawn along its own axis: a frequency mask's start and width within the 64 mel bins (drawn
    over the 400 frames, most would mask nothing)."""
    draws = aug.FinetuneAugmentation().sample(256, 64, 400, torch.Generator().manual_seed(0))
    (frequency_starts, frequency_widths), (time_starts, time_widths) = draws.frequency, draws.time
    assert (frequency_starts + frequency_widths <= 64).all() and (time_starts + time_widths <= 400).all()
    assert frequency_widths.max() < 30 <= time_widths.max() < 100


def test_optimisers_are_evars_and_micro_batches_draw_apart():
    """EVAR's optimisers (SGD momentum 0.9; AdamW with AMSGrad, betas (0.9, 0.95), decay 1e-4) over the trainable
    parameters; and each micro-batch of a step (gradient accumulation) draws its own augmentations, the count
    starting again at every step."""
    from types import SimpleNamespace

    from byola_hf.finetune.training import build_optimizer, step_seed

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    sgd, adamw = build_optimizer(model, "sgd", 0.1), build_optimizer(model, "adamw", 0.1)
    assert [len(group["params"]) for group in sgd.param_groups] == [2]
    assert (sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == (0.9, 0.0)
    settings = ("amsgrad", "betas", "weight_decay", "eps")
    assert tuple(adamw.defaults[name] for name in settings) == (True, (0.9, 0.95), 1e-4, 1e-8)

    trainer = SimpleNamespace(
        _draw_position=(-1, 0), state=SimpleNamespace(global_step=0), args=SimpleNamespace(seed=7)
    )
    seeds = []
    for step in (0, 0, 1, 1):
        trainer.state.global_step = step
        seeds.append(FinetuneTrainer._generator(trainer, torch.device("cpu")).initial_seed())
    assert seeds == [step_seed(7, 0, 0), step_seed(7, 0, 1), step_seed(7, 1, 0), step_seed(7, 1, 1)]


def test_results_summarise_each_fold_and_seed_and_the_first_best_epoch():
    """`eval_results.json`'s figures: each fold's scores over the seeds (not the first seed's repeated), the
    population std (as byola-linear-eval's), over the runs and over the seeds' means, and a run's best epoch the first
    to reach its best validation score (not --eval_on_start's of the untrained model, which Trainer does not save:
    a run whose first epoch scored no better named "best epoch 0")."""
    from types import SimpleNamespace

    from byola_hf.finetune.report import RunResult, summarize

    def run(fold: str, seed: int, score: float) -> RunResult:
        return RunResult(fold, seed, score, 0.5, 1.0, 2.0, 8, 2, 4, "the validation split")

    runs = [[run("1", 0, 0.1), run("2", 0, 0.3)], [run("1", 1, 0.2), run("2", 1, 0.6)]]
    task = SimpleNamespace(folds=[SimpleNamespace(name="1"), SimpleNamespace(name="2")], classes=["a", "b"],
                           multi_label=False, layout="fold")  # fmt: skip
    summary = summarize(task, runs, "accuracy", {})
    assert [fold["scores"] for fold in summary["folds"]] == [[0.1, 0.2], [0.3, 0.6]]
    assert summary["test_accuracy_std"] == pytest.approx(np.std([0.1, 0.3, 0.2, 0.6]), abs=1e-15)
    assert summary["seed_scores"] == pytest.approx([0.2, 0.4], abs=1e-15)
    assert summary["seed_scores_std"] == pytest.approx(0.1, abs=1e-15)

    history = [
        {"eval_accuracy": 0.7, "epoch": 0.0, "step": 0},
        {"eval_accuracy": 0.5, "epoch": 1.0, "step": 4},
        {"eval_accuracy": 0.7, "epoch": 2.0, "step": 8},
        {"eval_accuracy": 0.7, "epoch": 3.0, "step": 12},
    ]
    trainer = SimpleNamespace(args=SimpleNamespace(metric_for_best_model="accuracy"),
                              state=SimpleNamespace(best_metric=0.7, log_history=history, epoch=3.0))  # fmt: skip
    fold = SimpleNamespace(name="1", train=[0] * 8, valid=[0] * 2, test=[0] * 4)
    result = RunResult.from_trainer(trainer, fold, 0, 0.25)
    assert (result.best_epoch, result.validation_score, result.epochs_run) == (2.0, 0.7, 3.0)


def test_statistics_of_other_units_are_warned_of(caplog):
    """byola-finetune cuts its clips to --unit_seconds: statistics computed over whole clips (or other units) are
    warned of, as byola-extract warns (EVAR computes both on the same units)."""
    from types import SimpleNamespace

    from byola_hf.finetune.run import clip_samples

    config = BYOLAConfig(mean=-8.0, std=4.0, stats_provenance={"method": "evar", "unit_seconds": None})
    task = SimpleNamespace(waveforms=[np.zeros(16000, np.float32)])
    with caplog.at_level(logging.WARNING):
        assert clip_samples(SimpleNamespace(unit_seconds=1.0), task, config) == 16000
    assert "computed over whole clips, this run reads clips cut to 1 s" in caplog.text

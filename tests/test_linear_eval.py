"""Linear evaluation = EVAR's: equal to an independent re-implementation of its facts on fixed embeddings, `>=` keeps
small tasks training, user mistakes are one line; and from a folder of audio to an accuracy on the mini KS set."""

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from byola_hf import BYOLAConfig
from byola_hf.extract import ExtractArguments, extract_embeddings
from byola_hf.linear_eval import LinearEvalArguments, TrainingSettings, linear_eval, main, train_linear
from byola_hf.linear_eval.cli import build_parser
from byola_hf.stats import StatsArguments, compute_stats
from byola_hf.superb.mini_sets import make_ks

from conftest import assert_one_line, assert_rerun_refused_unless_it_may_change, every_flag, run_main


def evar_reference(train, valid, classes, seed, epochs=200, patience=20, improves=np.greater_equal, scaled_on=None):
    """EVAR's TorchMLPClassifier2 (no hidden layer) as its source reads, with scikit-learn's scaler and torch's
    DataLoader, on `train` and `valid` (features, labels): returns (test-ready scaler, layer, best epoch, epochs
    run). The scaler is fit on `train`'s features, or on `scaled_on` (the whole training part, from which EVAR
    holds a validation part out after scaling)."""
    (train_x, train_y), (valid_x, valid_y) = train, valid
    scaler = StandardScaler().fit((train_x if scaled_on is None else scaled_on).astype(np.float64))
    x, vx = (torch.tensor(scaler.transform(a.astype(np.float64)), dtype=torch.float32) for a in (train_x, valid_x))
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-8)
    one_hot = np.eye(classes, dtype=np.float32)
    train = torch.utils.data.TensorDataset(x, torch.from_numpy(one_hot[train_y]))
    valid = torch.utils.data.TensorDataset(vx, torch.from_numpy(valid_y))
    batch = min(200, len(x))
    train_loader = torch.utils.data.DataLoader(train, batch_size=batch, shuffle=True, drop_last=False)
    valid_loader = torch.utils.data.DataLoader(valid, batch_size=batch, shuffle=False, drop_last=False)
    best, best_epoch, best_weights, wait, epoch = 0.0, None, None, 0, 0
    for epoch in range(epochs):
        model.train()
        for inputs, targets in train_loader:
            optimizer.zero_grad()
            loss = -torch.mean(targets * torch.log_softmax(model(inputs), dim=-1))
            loss.backward()
            optimizer.step()
        model.eval()
        predictions = []
        with torch.no_grad():
            for inputs, _ in valid_loader:
                predictions.extend(model(inputs).softmax(-1).argmax(-1).numpy())
        accuracy = float(np.mean(np.asarray(predictions) == valid_y))
        if improves(accuracy, best):
            best, best_epoch, best_weights, wait = accuracy, epoch, copy.deepcopy(model.state_dict()), 1
        else:
            if wait >= patience:
                break
            wait += 1
    model.load_state_dict(best_weights)
    return scaler, model, best_epoch, epoch + 1


def blobs(seed, sizes, classes=4, dim=24, spread=2.5):
    """Gaussian classes that overlap (so accuracy moves with training), one array pair per size."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * spread / np.sqrt(dim) * 3
    parts = []
    for size in sizes:
        y = rng.integers(0, classes, size)
        x = (centres[y] + rng.standard_normal((size, dim)) * 1.5 + 4.0).astype(np.float32)
        parts.append((x, y.astype(np.int64)))
    return parts


@pytest.mark.parametrize(
    "sizes, seeds", [((60, 12, 80), (42, 43, 44)), ((450, 40, 120), (42,))], ids=["one-batch", "batches-200-200-50"]
)
def test_matches_an_independent_reimplementation_of_evar(sizes, seeds):
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = blobs(0, sizes)
    for seed in seeds:
        scaler, model, best_epoch, epochs_run = evar_reference((train_x, train_y), (valid_x, valid_y), 4, seed)
        with torch.no_grad():
            expected = model(torch.tensor(scaler.transform(test_x.astype(np.float64)), dtype=torch.float32))
        expected_accuracy = float((expected.argmax(-1).numpy() == test_y).mean())
        mean, std = train_x.astype(np.float64).mean(0), train_x.astype(np.float64).std(0)
        standard = [((a - mean) / std).astype(np.float32) for a in (train_x, valid_x, test_x)]
        run = train_linear(standard[0], train_y, standard[1], valid_y, 4, seed)
        with torch.no_grad():
            accuracy = float((run.layer(torch.from_numpy(standard[2])).argmax(-1).numpy() == test_y).mean())
        print(f"\nseed {seed}, sizes {sizes}: accuracy {accuracy:.4f} (EVAR {expected_accuracy:.4f}), best epoch "
              f"{run.best_epoch}, epochs {run.epochs_run}")  # fmt: skip
        assert (run.best_epoch, run.epochs_run) == (best_epoch, epochs_run)
        assert accuracy == expected_accuracy
        np.testing.assert_allclose(run.layer.weight.detach().numpy(), model.weight.detach().numpy(), atol=1e-5)


def test_a_plateau_no_longer_stops_training():
    """Two validation clips: accuracy 1.0 soon and forever. With `>` the first 1.0 is the best and training stops
    20 epochs later, nearly untrained; with EVAR's `>=` every later epoch is as good and training runs on."""
    (train_x, train_y), (test_x, test_y) = blobs(1, (40, 400), classes=2, spread=0.8)
    valid_x = np.stack([train_x[train_y == 0].mean(0), train_x[train_y == 1].mean(0)]) * np.float32(1.0)
    valid_y = np.asarray([0, 1])
    results = {}
    for name, improves in (("greater", np.greater), ("greater_equal", np.greater_equal)):
        scaler, model, best_epoch, epochs_run = evar_reference(
            (train_x, train_y), (valid_x, valid_y), 2, 0, improves=improves
        )
        with torch.no_grad():
            logits = model(torch.tensor(scaler.transform(test_x.astype(np.float64)), dtype=torch.float32))
        results[name] = (float((logits.argmax(-1).numpy() == test_y).mean()), best_epoch, epochs_run)
    print(f"\n'>' {results['greater']}, '>=' {results['greater_equal']} (accuracy, best epoch, epochs run)")
    assert results["greater"][2] < 200 and results["greater_equal"][2] == 200
    assert results["greater_equal"][0] > results["greater"][0]
    mean, std = train_x.mean(0, dtype=np.float64), train_x.std(0, dtype=np.float64)
    standard = [((a - mean) / std).astype(np.float32) for a in (train_x, valid_x, test_x)]
    run = train_linear(standard[0], train_y, standard[1], valid_y, 2, 0)
    accuracy = float((run.layer(torch.from_numpy(standard[2])).argmax(-1).numpy() == test_y).mean())
    assert (accuracy, run.best_epoch, run.epochs_run) == results["greater_equal"]


def test_training_leaves_every_generator_as_it_was(monkeypatch):
    """The classifier draws on the CPU generator and restores it; it must not reseed CUDA's (which fork_rng without
    devices does not restore): pre-training on a GPU would replay its augmentation draws after each linear probe."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", reseeded.append)
    (train_x, train_y), _ = blobs(1, (20, 10), classes=2, spread=0.8)
    before = torch.get_rng_state()
    train_linear(train_x, train_y, train_x[:4], train_y[:4], 2, 0, TrainingSettings(epochs=2))
    assert reseeded == []
    assert torch.equal(torch.get_rng_state(), before)


def test_a_saved_task_equals_evar_run_by_hand_seed_by_seed(tmp_path):
    """byola-linear-eval on a saved task equals EVAR's recipe run by hand on the same embeddings: scikit-learn's
    StandardScaler fit on the training part (all of it, before a validation part is held out with the run's seed),
    seeds `seed` and `seed + 1`, each test clip's argmax of the softmax over its classes, the confusion matrix with
    the true classes as rows, the mean and population std of the runs; `--patience 0` never stops early. Every one of
    these could change before (std with ddof=1, test statistics for the test part, a softmax over the clips, one seed
    for every run, the matrix transposed, a held-out part without the seed) with every other test passing: the
    mini KS run only asks for an accuracy above 0.5."""
    from sklearn.metrics import confusion_matrix
    from test_faults import save_embeddings

    from byola_hf.linear_eval.classifier import hold_out_validation, standardize

    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = blobs(0, (60, 12, 80))
    scaler = StandardScaler().fit(train_x.astype(np.float64))
    for ours, part in zip(standardize(train_x, valid_x, test_x), (train_x, valid_x, test_x)):
        np.testing.assert_allclose(ours, scaler.transform(part.astype(np.float64)), rtol=0, atol=1e-5)

    def evar(seed, held_out):
        """(accuracy, best epoch, test predictions) of EVAR's recipe with `seed`."""
        train, valid, scaled_on = (train_x, train_y), (valid_x, valid_y), None
        if held_out:
            held = hold_out_validation(train_y, 0.1, seed)
            keep = np.setdiff1d(np.arange(len(train_y)), held)
            train, valid, scaled_on = (train_x[keep], train_y[keep]), (train_x[held], train_y[held]), train_x
        scaler, model, best_epoch, _ = evar_reference(train, valid, 4, seed, epochs=60, scaled_on=scaled_on)
        with torch.no_grad():
            logits = model(torch.tensor(scaler.transform(test_x.astype(np.float64)), dtype=torch.float32))
        predictions = logits.softmax(-1).argmax(-1).numpy()
        return float((predictions == test_y).mean()), best_epoch, predictions

    for held_out in (False, True):
        parts = [(train_x, train_y, "train"), (test_x, test_y, "test")]
        parts += [] if held_out else [(valid_x, valid_y, "valid")]
        folder = save_embeddings(
            tmp_path / f"task-{held_out}",
            np.concatenate([x for x, _, _ in parts]),
            np.concatenate([y for _, y, _ in parts]).tolist(),
            split=[name for _, y, name in parts for _ in y],
        )
        result = linear_eval(LinearEvalArguments(embeddings_dir=str(folder), seeds=2, seed=42, epochs=60))
        expected = [evar(seed, held_out) for seed in (42, 43)]
        assert expected[0][:2] != expected[1][:2]  # the two seeds' runs differ: one seed for both would show
        assert result.accuracies == [accuracy for accuracy, _, _ in expected]
        assert result.best_epochs == [best_epoch for _, best_epoch, _ in expected]
        assert result.confusion_matrix == confusion_matrix(test_y, expected[0][2], labels=range(4)).tolist()
        assert result.test_accuracy == np.mean(result.accuracies)
        assert result.test_accuracy_std == np.std(result.accuracies)
    # --patience 0 never stops early, even on a validation part whose accuracy falls (shuffled labels here)
    noisy = np.random.default_rng(1).permutation(valid_y)
    assert evar_reference((train_x, train_y), (valid_x, noisy), 4, 42, epochs=60, patience=1)[3] < 60
    standard = standardize(train_x, valid_x)
    never = TrainingSettings(epochs=60, patience=0)
    assert train_linear(standard[0], train_y, standard[1], noisy, 4, 42, never).epochs_run == 60


@pytest.fixture(scope="module")
def ks_embeddings(tmp_path_factory, real512_dir):
    """byola-extract of each split of the mini KS set (voices of validation and test unheard in training)."""
    root = tmp_path_factory.mktemp("linear_eval")
    data = make_ks(root / "ks")
    model = root / "byola512-ks"
    compute_stats(StatsArguments(str(real512_dir), "audiofolder", data_dir=str(data), output_dir=str(model)))
    directories = {}
    for split in ("train", "validation", "test"):
        directories[split] = root / f"emb-{split}"
        arguments = {"dataset_name": "audiofolder", "data_dir": str(data), "split": split, "num_workers": 0}
        extract_embeddings(ExtractArguments(str(model), str(directories[split]), **arguments))
    return directories


def test_linear_evaluation_on_unseen_voices(ks_embeddings, tmp_path, capsys):
    output = tmp_path / "le"
    main(
        ["--train_dir", str(ks_embeddings["train"]), "--test_dir", str(ks_embeddings["test"]), "--validation_dir",
         str(ks_embeddings["validation"]), "--label_column_name", "label", "--output_dir", str(output), "--seeds", "3"]
    )  # fmt: skip
    metrics = json.loads((output / "eval_results.json").read_text())
    assert "test accuracy" in capsys.readouterr().out
    with capsys.disabled():
        print(
            f"\nlinear evaluation (EVAR), mini KS, official 512-d weights: {metrics['test_accuracy']:.3f} ± "
            f"{metrics['test_accuracy_std']:.3f} over 3 seeds (chance 0.10)"
        )
    assert metrics["test_accuracy"] >= 0.5 and len(metrics["accuracies"]) == 3
    assert set(metrics["per_class"]) == set(metrics["classes"]) and len(metrics["classes"]) == 10
    assert (output / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_names_the_model_its_statistics_and_the_data_of_each_split(ks_embeddings, tmp_path, caplog):
    """eval_results.json said an accuracy without saying of what: which model embedded each split, with which
    statistics (a task's own, or another task's), from which data, nor that clips were left out of a split. It carries
    what each byola-extract run recorded beside its embeddings, and clips left out are warned of (only the report
    said so, the printed score not)."""
    from byola_hf import BYOLAConfig

    model = ks_embeddings["train"].parent / "byola512-ks"
    config = BYOLAConfig.from_pretrained(model)
    parts = {"train": ks_embeddings["train"], "valid": ks_embeddings["validation"], "test": ks_embeddings["test"]}
    # A test split from which byola-extract --skip_bad left two clips out (its skipped.json lists them).
    parts["test"] = tmp_path / "emb-test"
    shutil.copytree(ks_embeddings["test"], parts["test"])
    (parts["test"] / "skipped.json").write_text(json.dumps([{"path": "a.wav", "error": "e"}] * 2))
    arguments = LinearEvalArguments(
        train_dir=str(parts["train"]), validation_dir=str(parts["valid"]), test_dir=str(parts["test"]),
        output_dir=str(tmp_path / "le"), epochs=2,
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        linear_eval(arguments)
    assert "byola-extract --skip_bad left clips out (2 of test; listed in each folder's skipped.json)" in caplog.text
    report = json.loads((tmp_path / "le" / "eval_results.json").read_text())["embeddings"]
    assert sorted(report) == ["test", "train", "valid"]
    assert [report[part]["skipped_clips"] for part in ("train", "valid", "test")] == [0, 0, 2]
    for part, folder in parts.items():
        assert report[part]["dir"] == str(folder.resolve()) and report[part]["model"] == str(model.resolve())
        statistics = report[part]["statistics"]
        assert (statistics["mean"], statistics["std"]) == (config.mean, config.std)
        assert statistics["provenance"] == config.stats_provenance
        assert statistics["provenance"]["data_dir"] == report[part]["data"]["data_dir"]  # the task's own
        split = "validation" if part == "valid" else part
        assert report[part]["data"]["split"] == split and report[part]["data"]["dataset_name"] == "audiofolder"


def test_linear_evaluation_is_reproducible_and_holds_out_a_validation_part(ks_embeddings):
    train, test = str(ks_embeddings["train"]), str(ks_embeddings["test"])
    runs = [
        linear_eval(LinearEvalArguments(train_dir=train, test_dir=test, validation_fraction=0.2, seed=7))
        for _ in range(2)
    ]
    assert runs[0].accuracies == runs[1].accuracies and runs[0].best_epochs == runs[1].best_epochs
    assert runs[0].validation == "0.2 of the training part held out (every class in it, seed 7)"
    assert runs[0].num_validation + runs[0].num_train == 120 and runs[0].num_validation == 24


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--train_dir", "{missing}", "--test_dir", "{missing}"], "holds no byola-extract output"),
        (["--train_dir", "{train}", "--test_dir", "{test}", "--label_column_name", "speaker"], "no column 'speaker'"),
        (["--train_dir", "{train}", "--test_dir", "{test}", "--seeds", "0"], "--seeds must be a whole number >= 1"),
        (["--train_dir", "{train}", "--test_dir", "{test}", "--epochs", "0"], "--epochs must be a whole number >= 1"),
        (["--embeddings_dir", "{train}"], "neither a 'split'"),
        (["--train_dir", "{train}"], "Give --embeddings_dir"),
        (["--train_dir", "{train}", "--test_dir", "{test}", "--device", "nowhere"], "is not a torch device"),
        # An empty folder flag held out part of the training split and named the working directory in the report.
        (["--train_dir", "{train}", "--test_dir", "{test}", "--validation_dir", ""], "--validation_dir is empty"),
        (["--embeddings_dir", ""], "--embeddings_dir is empty"),
    ],
)
def test_user_mistakes_are_one_line(ks_embeddings, tmp_path, capsys, arguments, message):
    places = {
        "missing": str(tmp_path / "nowhere"),
        "train": str(ks_embeddings["train"]),
        "test": str(ks_embeddings["test"]),
    }
    with pytest.raises(SystemExit) as exit_info:
        main([argument.format(**places) for argument in arguments] + ["--output_dir", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in stderr
    assert stderr.startswith("byola-linear-eval: error:") and stderr.count("\n") == 1 and message in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_refuses_a_folder_it_did_not_write(ks_embeddings, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    train, test = str(ks_embeddings["train"]), str(ks_embeddings["test"])
    with pytest.raises(ValueError, match="did not write"):
        linear_eval(LinearEvalArguments(str(tmp_path), train_dir=train, test_dir=test, epochs=1))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_confusion_matrix_title_shows_the_reported_mean_and_std(ks_embeddings, tmp_path, monkeypatch):
    from byola_hf.tools import plots

    titles = []
    original = plots.save_confusion_matrix

    def recording(*args, title, **kwargs):
        titles.append(title)
        return original(*args, title=title, **kwargs)

    monkeypatch.setattr(plots, "save_confusion_matrix", recording)
    train, test = str(ks_embeddings["train"]), str(ks_embeddings["test"])
    result = linear_eval(LinearEvalArguments(str(tmp_path / "le"), train_dir=train, test_dir=test, seeds=2, epochs=3))
    assert titles == [
        f"Linear evaluation: {result.test_accuracy:.4f} ± {result.seed_accuracy_std:.4f} over 2 seeds; matrix of "
        "seed 42"
    ]


def test_the_headline_gives_the_std_over_seeds_and_over_runs_apart():
    """The ± printed for a fold task was over every (fold, seed) run, mostly the spread between folds, read beside
    tables whose ± is over runs of the whole task; with one seed it printed ± 0.0000."""
    from types import SimpleNamespace

    from byola_hf.linear_eval.evaluate import summarize

    folds = [SimpleNamespace(name=str(k), test_y=np.zeros(2, np.int64)) for k in range(2)]
    runs = [
        [SimpleNamespace(accuracy=a, predictions=np.zeros(2, np.int64), best_epoch=1, epochs_run=2, num_train=4,
                         num_validation=1, validation="held out") for a in seed]
        for seed in ([0.5, 1.0], [0.5, 0.5], [1.0, 1.0])
    ]  # fmt: skip
    result = summarize(folds, runs, ["a"], "fold", TrainingSettings())
    assert result.seed_accuracies == [0.75, 0.5, 1.0] and result.seed_accuracy_std == pytest.approx(np.sqrt(1 / 24))
    assert result.headline() == "0.7500 ± 0.2041 over 3 seeds, each the mean of 2 folds (± 0.2500 over the 6 runs)"
    single = summarize(folds[:1], [seed[:1] for seed in runs[:1]], ["a"], "split", TrainingSettings())
    assert single.headline() == "0.5000 (1 seed)"


@pytest.mark.parametrize("first, second", [("train", "test"), ("validation", "test"), ("train", "validation")])
def test_linear_eval_refuses_one_folder_for_two_parts(tmp_path, capsys, first, second):
    """Only --train_dir equal to --test_dir was refused: the test folder given as --validation_dir chose the epoch on
    the test clips."""
    parts = {
        "train": tmp_path / "a",
        "validation": tmp_path / "b",
        "test": tmp_path / "c",
        first: tmp_path,
        second: tmp_path,
    }
    arguments = [value for part, path in parts.items() for value in (f"--{part}_dir", path)]
    code, stderr = run_main(main, [*arguments, "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", f"--{first}_dir and --{second}_dir are the same folder")


def test_linear_eval_refuses_splits_embedded_from_the_same_files(ks_embeddings, tmp_path, capsys):
    """Two byola-extract outputs of one audio folder (or a train folder holding the test folder) passed as
    --train_dir and --test_dir were scored as unseen clips: only the same output folder twice was refused."""
    shutil.copytree(ks_embeddings["train"], tmp_path / "test")  # the training split embedded a second time
    train = ["--train_dir", ks_embeddings["train"]]
    cases = {
        "training and the test": [*train, "--test_dir", tmp_path / "test"],
        "training and the validation": [
            *train,
            "--test_dir",
            ks_embeddings["test"],
            "--validation_dir",
            tmp_path / "test",
        ],
    }
    shutil.copytree(ks_embeddings["test"], tmp_path / "valid")  # the test split as the validation split: the epoch
    cases["validation and the test"] = [
        *train,
        "--test_dir",
        ks_embeddings["test"],
        "--validation_dir",
        tmp_path / "valid",
    ]
    for parts, arguments in cases.items():
        code, stderr = run_main(main, [*arguments, "--output_dir", tmp_path / "eval"], capsys)
        fragments = (f"are in both the {parts} part", "extract each split from its own files.")
        assert_one_line(code, stderr, "byola-linear-eval", *fragments)


def test_linear_eval_refuses_splits_embedded_differently(small_model, speech, tmp_path, capsys):
    from byola_hf.extract.cli import main as extract_main
    from byola_hf.linear_eval.cli import main as linear_main

    other = tmp_path / "other_model"
    shutil.copytree(small_model, other)
    config = BYOLAConfig.from_pretrained(other)
    config.mean = 0.0
    config.save_pretrained(other)
    for model, name in ((small_model, "train"), (other, "test")):
        arguments = ["--model_name_or_path", model, "--dataset_name", speech.parent, "--output_dir", tmp_path / name]
        extract_main([str(a) for a in [*arguments, "--num_workers", "0"]])
    for train in (tmp_path / "train", tmp_path / "train" / "dataset"):  # the output, or its saved dataset
        arguments = ["--train_dir", train, "--test_dir", tmp_path / "test", "--label_column_name", "label"]
        code, stderr = run_main(linear_main, [*arguments, "--output_dir", tmp_path / "eval"], capsys)
        assert_one_line(code, stderr, "byola-linear-eval", "embedded by different models")
    # The same model, clips cut to another length.
    arguments = [
        "--model_name_or_path",
        small_model,
        "--dataset_name",
        speech.parent,
        "--output_dir",
        tmp_path / "cut",
    ]
    extract_main([str(a) for a in [*arguments, "--num_workers", "0", "--unit_seconds", "0.5"]])
    arguments = ["--train_dir", tmp_path / "train", "--test_dir", tmp_path / "cut", "--label_column_name", "label"]
    code, stderr = run_main(linear_main, [*arguments, "--output_dir", tmp_path / "eval"], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", "of clips cut to different lengths")


def test_fold_summary_gives_sizes_summed_over_the_folds(tmp_path, capsys):
    """Leave-one-fold-out reported the first fold's training and validation sizes beside the test clips of every
    fold: one line mixing one fold's split with totals. All three are now sums over the folds, and said so."""
    from test_faults import blob_embeddings, save_embeddings

    x, y = blob_embeddings(0, 36)
    folder = save_embeddings(tmp_path / "task", x, y, fold=[1] * 10 + [2] * 12 + [3] * 14)
    arguments = ["--embeddings_dir", folder, "--epochs", "2", "--output_dir", tmp_path / "out"]
    main([str(argument) for argument in arguments])
    result = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert [fold["num_test"] for fold in result["folds"]] == [10, 12, 14]
    assert [fold["num_train"] + fold["num_validation"] for fold in result["folds"]] == [26, 24, 22]
    for size in ("num_train", "num_validation", "num_test"):
        assert result[size] == sum(fold[size] for fold in result["folds"]), size
    printed = capsys.readouterr().out
    expected = f"train {result['num_train']}, validation {result['num_validation']}"
    assert expected in printed and "test 36 summed over 3 folds" in printed


def test_a_clip_listed_in_two_folds_is_refused(tmp_path, capsys):
    """An EVAR CSV listing one file in two folds (or two splits) was evaluated as it came: the classifier of one fold
    trained on the clip it was then tested on, and the accuracy counted it as unseen."""
    from test_faults import blob_embeddings, save_embeddings

    x, y = blob_embeddings(0, 24)
    paths = [f"audio/clip{row}.wav" for row in range(23)] + ["audio/./clip3.wav"]  # clip3 in folds 1 and 3
    folder = save_embeddings(tmp_path / "task", x, y, fold=[1] * 8 + [2] * 8 + [3] * 8, path=paths)
    arguments = ["--embeddings_dir", folder, "--epochs", "2", "--output_dir", tmp_path / "out"]
    code, stderr = run_main(main, [str(argument) for argument in arguments], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", "in both the training and the test part of fold 1", "clip3")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["split", "fold"])
def test_a_class_without_training_clips_is_named_before_the_folder_is_claimed(tmp_path, capsys, layout):
    """A fold whose test clips held a class no other fold has was refused only when its turn came (the output folder
    claimed, earlier folds trained), and neither refusal named the class."""
    from test_faults import blob_embeddings, save_embeddings

    x, y = blob_embeddings(0, 24)
    labels = [f"c{label}" for label in y[:-1]] + ["rare"]
    column = {"split": ["train"] * 16 + ["test"] * 8} if layout == "split" else {"fold": [1] * 8 + [2] * 8 + [3] * 8}
    folder = save_embeddings(tmp_path / "task", x, labels, **column)
    arguments = ["--embeddings_dir", folder, "--epochs", "2", "--output_dir", tmp_path / "out"]
    code, stderr = run_main(main, [str(argument) for argument in arguments], capsys)
    part = (
        "split valid/test have no clip in the train split" if layout == "split" else "fold 3 have no clip in the other"
    )
    assert_one_line(code, stderr, "byola-linear-eval", f"1 class(es) of {folder}'s {part}", "predict them: 'rare'.")
    assert not (tmp_path / "out").exists()


def test_an_empty_fold_cell_is_named_as_such():
    """A task CSV with an empty 'fold' cell (byola-finetune, byola-linear-eval) was refused as holding "an empty
    label": the user looked for it in the label column."""
    from byola_hf.linear_eval.evaluate import fold_rows

    with pytest.raises(ValueError, match="empty 'fold' cell in task.csv: fill them in"):
        fold_rows(np.array([1, "", 2], dtype=object), "fold", "task.csv")


@pytest.mark.parametrize("kind", ["commas", "lists"])
def test_a_multi_label_task_is_refused(tmp_path, capsys, kind):
    """EVAR's multi-label cells (`a,b`, which byola-finetune scores by mAP) were read as classes of their own: each
    combination a class, and an accuracy over them reported as the task's; a list column ended in a traceback."""
    from test_faults import blob_embeddings, save_embeddings

    x, y = blob_embeddings(0, 30)
    labels = [["a", "b,a", "b"][label] for label in y[:-1]] + ["a,b"]
    labels = labels if kind == "commas" else [[label] for label in y]
    task = save_embeddings(tmp_path / "task", x, labels, split=["train"] * 20 + ["test"] * 10)
    code, stderr = run_main(main, ["--embeddings_dir", str(task), "--output_dir", str(tmp_path / "out")], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", "multi-label", "byola-finetune --freeze_encoder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("index, name", every_flag(build_parser()))
def test_a_rerun_with_any_flag_changed_is_refused_unless_it_may_change(index, name, tmp_path):
    """byola-linear-eval's record holds every flag of its dataclass but the shared may-change list (where it writes):
    the device too, since the classifier's rounding there can move its early stopping. It used to fingerprint the
    settings it reported and the results, so another --device or --embeddings_dir of the same clips passed."""
    from byola_hf.linear_eval.evaluate import Fold, run_record
    from byola_hf.tools.outputs import MAY_CHANGE_ON_RESUME

    (arguments,) = build_parser().parse_args_into_dataclasses(
        args=["--train_dir", "a", "--test_dir", "b", "--output_dir", str(tmp_path / "run")]
    )
    x, y = np.eye(2, dtype=np.float32), np.arange(2)
    folds = [Fold("all", x, y, x, y)]

    def record_of(args):
        return run_record(args, folds, ["a", "b"])

    assert_rerun_refused_unless_it_may_change(record_of, arguments, name, MAY_CHANGE_ON_RESUME, tmp_path)


def test_the_record_fingerprints_every_part_of_every_fold(tmp_path):
    """The source fingerprint covers each fold's training, validation and test embeddings and labels: a validation
    split extracted again alone (it decides the early stopping, so the result) is new data as any other part is."""
    from byola_hf.linear_eval.evaluate import Fold, run_record

    (arguments,) = build_parser().parse_args_into_dataclasses(
        args=["--train_dir", "a", "--test_dir", "b", "--output_dir", str(tmp_path / "run")]
    )
    x, y = np.eye(3, dtype=np.float32), np.arange(3)
    parts = {"train_x": x, "train_y": y, "test_x": x, "test_y": y, "valid_x": x, "valid_y": y}

    def source(**changed) -> dict:
        return run_record(arguments, [Fold("all", **{**parts, **changed})], ["a", "b", "c"])["source"]

    for name, value in parts.items():
        assert source(**{name: value[::-1].copy()}) != source(), name


def test_a_rerun_on_other_embeddings_is_refused_before_training(tmp_path, monkeypatch):
    """The record holds a fingerprint of the embeddings and labels read, and the folder is claimed before training:
    a re-run on other clips is refused at once, naming the data."""
    from test_faults import blob_embeddings, save_embeddings

    from byola_hf.linear_eval import evaluate

    for name, seed in (("one", 0), ("two", 1)):
        x, y = blob_embeddings(seed, 30)
        save_embeddings(tmp_path / name, x, y, split=["train"] * 20 + ["test"] * 10)
    arguments = LinearEvalArguments(str(tmp_path / "out"), embeddings_dir=str(tmp_path / "one"), epochs=2)
    linear_eval(arguments)
    assert linear_eval(arguments).num_test == 10  # the same run again: rewrites its own report
    monkeypatch.setattr(evaluate, "run_fold", None)  # nothing may train
    with pytest.raises(ValueError, match=r"it differs in arguments\.epochs\)"):
        linear_eval(dataclasses.replace(arguments, epochs=3))
    shutil.rmtree(tmp_path / "one")
    (tmp_path / "two").rename(tmp_path / "one")  # the task extracted again, into the same folder
    with pytest.raises(ValueError, match="The data changed since the run"):
        linear_eval(arguments)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--validation_fraction", "0.2"], "--validation_fraction has no effect"),
        (["--embeddings_dir", "{task}", "--train_dir", "{task}"], "--embeddings_dir takes the whole task"),
    ],
)
def test_a_flag_the_task_does_not_use_is_refused(tmp_path, capsys, arguments, message):
    """A task with a validation split stops early on it: a --validation_fraction beside it held nothing out and was
    ignored."""
    from test_faults import blob_embeddings, save_embeddings

    x, y = blob_embeddings(0, 30)
    task = save_embeddings(tmp_path / "task", x, y, split=["train"] * 16 + ["valid"] * 4 + ["test"] * 10)
    given = [argument.format(task=task) for argument in arguments]
    if "--embeddings_dir" not in given:
        given += ["--embeddings_dir", task]
    code, stderr = run_main(main, [*given, "--epochs", "2", "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", message)
    assert not (tmp_path / "out").exists()


def test_overwrite_without_an_output_dir_is_refused():
    with pytest.raises(ValueError, match="--overwrite_output_dir replaces an earlier report in --output_dir"):
        linear_eval(LinearEvalArguments(train_dir="a", test_dir="b", overwrite_output_dir=True))


def test_held_out_part_rounds_up_and_per_class_figures_read_the_matrix_right():
    """EVAR holds out `ceil(0.1 n)` training examples (3 of 25, not 2), and each class's precision divides by the
    clips predicted as it (the matrix's column), its recall by the clips that are it (its row)."""
    from byola_hf.linear_eval.classifier import hold_out_validation
    from byola_hf.linear_eval.report import per_class_report

    held = hold_out_validation(np.arange(25) % 2, 0.1, 0)
    assert len(held) == 3 and len(set(held)) == 3
    matrix = np.array([[3, 1], [2, 4]])  # rows: the true class
    report = per_class_report(matrix, ["a", "b"])
    assert report["a"] == pytest.approx({"precision": 3 / 5, "recall": 3 / 4, "f1": 2 / (5 / 3 + 4 / 3), "support": 4})
    assert (report["b"]["precision"], report["b"]["recall"], report["b"]["support"]) == (4 / 5, 4 / 6, 6)

"""From a folder of audio to a linear-evaluation accuracy in three commands, on the mini KS set, real 512-d weights."""

import json
import subprocess
import sys

import pytest

from byola_hf.linear_eval import linear_eval
from byola_hf.stats import compute_stats
from byola_hf.superb.mini_sets import make_ks


@pytest.fixture(scope="module")
def ks_embeddings(tmp_path_factory, real512_dir):
    """byola-extract of each split of the mini KS set (voices of validation and test unheard in training)."""
    root = tmp_path_factory.mktemp("linear_eval")
    data = make_ks(root / "ks")
    model = root / "byola512-ks"
    compute_stats(str(real512_dir), "audiofolder", data_dir=str(data), output_dir=str(model))
    directories = {}
    for split in ("train", "validation", "test"):
        directories[split] = root / f"emb-{split}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "byola_hf.extract.cli",
                "--model_name_or_path",
                str(model),
                "--dataset_name",
                "audiofolder",
                "--data_dir",
                str(data),
                "--split",
                split,
                "--output_dir",
                str(directories[split]),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    return directories


def test_linear_evaluation_on_unseen_voices(ks_embeddings, tmp_path):
    output = tmp_path / "le"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "byola_hf.linear_eval.cli",
            "--train_dir",
            str(ks_embeddings["train"]),
            "--test_dir",
            str(ks_embeddings["test"]),
            "--validation_dir",
            str(ks_embeddings["validation"]),
            "--label_column_name",
            "label",
            "--output_dir",
            str(output),
            "--seeds",
            "3",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((output / "eval_results.json").read_text())
    print(
        f"\nlinear evaluation, mini KS, official 512-d weights: {metrics['test_accuracy']:.3f} ± "
        f"{metrics['test_accuracy_std']:.3f} over 3 seeds (chance 0.10)"
    )
    assert metrics["test_accuracy"] >= 0.5 and len(metrics["accuracies"]) == 3
    assert set(metrics["per_class"]) == set(metrics["classes"]) and len(metrics["classes"]) == 10
    assert (output / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy" in result.stdout


def test_linear_evaluation_is_reproducible_and_holds_out_a_validation_split(ks_embeddings):
    runs = [
        linear_eval(str(ks_embeddings["train"]), str(ks_embeddings["test"]), "label", validation_fraction=0.2, seed=7)
        for _ in range(2)
    ]
    assert runs[0].accuracies == runs[1].accuracies and runs[0].best_epochs == runs[1].best_epochs
    assert runs[0].validation == "0.2 of the training split held out (stratified, seed 7)"
    assert runs[0].num_validation + runs[0].num_train == 120

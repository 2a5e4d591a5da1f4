"""The benchmark scripts run as files from a checkout, as their docstrings say."""

import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT


@pytest.mark.parametrize(
    "name",
    [
        "benchmark",
        "benchmark_stats",
        "benchmark_extract",
        "benchmark_superb_features",
        "benchmark_pretrain",
        "pretraining_quality",
    ],
)
def test_benchmark_files_start(name):
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / f"{name}.py"), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")


def test_superb_features_benchmark_compares_equal_log_mels(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "benchmark_superb_features.py"),
            "--clips",
            "24",
            "--seconds",
            "1",
            "--batch_size",
            "8",
            "--repeats",
            "1",
            "--epochs",
            "2",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("24 clips of 1 s") and "cached is" in result.stdout
    assert lines[-1] == "max |cached - collator| log-mel on valid frames: 0.00e+00"


def test_pretrain_benchmark_runs_both_steps(tmp_path):
    """`benchmark_pretrain.py` on a small network: both steps run, the row reports a ratio, and no goal is judged
    outside the setting it is stated for."""
    import json

    report = tmp_path / "pretrain.json"
    arguments = ["--feature_d", "64", "--batch", "4", "--repeats", "1", "--json", str(report)]
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "benchmark_pretrain.py"), *arguments],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(report.read_text())
    assert row["speedup"] > 0 and row["ours_clips_per_second"] > 0 and row["original_clips_per_second"] > 0
    assert "goal" not in row

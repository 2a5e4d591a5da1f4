"""The benchmark scripts run as files from a checkout, as their docstrings say."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from conftest import IN_CI, PROJECT_ROOT, SHARED_DIR, require_shared, slow


# The benchmark smoke runs are the slow tier (RUN_SLOW=1).
pytestmark = slow


SCRIPTS = [
    "benchmark",
    "benchmark_stats",
    "benchmark_extract",
    "benchmark_superb_features",
    "benchmark_pretrain",
    "benchmark_finetune",
    "pretraining_quality",
    "finetune_quality",
    "gpu_parity",
]
# One interpreter runs each script's `--help` as `python FILE --help` does (runpy, the script's folder first on
# sys.path): a cold start of torch and transformers per script cost the slow tier 45 s.
HELP_RUNNER = """
import contextlib, io, json, os, runpy, sys, traceback
results = {}
for path in sys.argv[1:]:
    sys.argv, sys.path[0], printed = [path, "--help"], os.path.dirname(path), io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code
    except Exception:
        code = traceback.format_exc()
    results[os.path.basename(path)] = [code, printed.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def help_texts() -> dict:
    paths = [str(PROJECT_ROOT / "benchmarks" / f"{name}.py") for name in SCRIPTS]
    result = subprocess.run([sys.executable, "-c", HELP_RUNNER, *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_files_start(name, help_texts):
    code, printed = help_texts[f"{name}.py"]
    assert code == 0, code
    assert printed.startswith("usage:")


def test_benchmark_refuses_a_checkpoint_it_cannot_compare_in_one_line(real512_checkpoint):
    """The s3prl upstream's layered outputs need a v1 network of 2048 or more dimensions: a 512-d one used to end in
    a shape-mismatch traceback after the first row."""
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "benchmark.py"), "--checkpoint", str(real512_checkpoint)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith("is not a v1 network of 2048 or more dimensions, as compared here")


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


@pytest.mark.parametrize("name, baseline", [("benchmark_pretrain", "original"), ("benchmark_finetune", "evar")])
def test_step_benchmarks_run_both_steps(tmp_path, name, baseline):
    """`benchmark_pretrain.py` (against the original step) and `benchmark_finetune.py` (against EVAR's loop) on a
    small network: both steps run, the row reports a ratio, and no goal is judged outside the setting it is stated
    for."""
    import json

    report = tmp_path / "row.json"
    arguments = ["--feature_d", "64", "--batch", "4", "--repeats", "1", "--json", str(report)]
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / f"{name}.py"), *arguments],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(report.read_text())
    assert row["speedup"] > 0 and row["ours_clips_per_second"] > 0 and row[f"{baseline}_clips_per_second"] > 0
    assert "goal" not in row


def test_gpu_parity_reports_both_tf32_settings_within_the_goal():
    """`gpu_parity.py` on CPU (where TF32 does not apply): both rows, every output within the 1e-5 goal."""
    require_shared("reference/golden.npz")
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "gpu_parity.py"), "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line[:32].strip(): line[32:].split() for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"TF32 default (conv on, mm off)", "TF32 off"}
    assert rows["TF32 off"][-1] == "met" and all(float(value) < 1e-5 for value in rows["TF32 off"][:-1])


def gpu_kit(tmp_path, *arguments, **environment):
    """benchmarks/gpu_kit.sh run from a copy of the project in `tmp_path`, with a .venv whose python is this one."""
    (tmp_path / "benchmarks").mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "benchmarks" / "gpu_kit.sh", tmp_path / "benchmarks")
    (tmp_path / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    if not (tmp_path / ".venv" / "bin" / "python").exists():
        (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    env = {key: value for key, value in os.environ.items() if key != "OUT"} | environment
    return subprocess.run(
        ["bash", str(tmp_path / "benchmarks" / "gpu_kit.sh"), *arguments], capture_output=True, text=True, env=env
    )


def test_gpu_kit_refuses_a_folder_it_did_not_make(tmp_path):
    require_shared("reference/golden.npz")
    (tmp_path / ".gpu_kit").mkdir()
    (tmp_path / ".gpu_kit" / "notes.txt").write_text("mine")
    result = gpu_kit(tmp_path, "prepare", BYOLA_SHARED_DIR=str(SHARED_DIR))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gpu_kit: .gpu_kit exists and was not made by this script: move it away."
    ]
    assert (tmp_path / ".gpu_kit" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "arguments, environment, message",
    [
        (["run"], {}, "OUT is not set"),
        (["run"], {"OUT": "."}, "no .gpu_kit here"),
        ([], {}, "say 'prepare'"),
    ],
)
def test_gpu_kit_mistakes_end_in_one_line(tmp_path, arguments, environment, message):
    result = gpu_kit(tmp_path, *arguments, **environment)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_gpu_kit_run_refuses_an_out_folder_with_files(tmp_path):
    """`run` writes run.log and JSON rows into OUT: a folder already holding files (a dry run's, say) is refused,
    not truncated."""
    (tmp_path / ".gpu_kit").mkdir()
    (tmp_path / ".gpu_kit" / ".made_by_gpu_kit").touch()
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.log").write_text("an earlier run")
    result = gpu_kit(tmp_path, "run", OUT=str(out))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "must be an empty folder" in result.stderr
    assert (out / "run.log").read_text() == "an earlier run"


def load_pretraining_quality(monkeypatch):
    """benchmarks/pretraining_quality.py as a module (its Pool pickles make_clip by the module's name)."""
    path = PROJECT_ROOT / "benchmarks" / "pretraining_quality.py"
    spec = importlib.util.spec_from_file_location("pretraining_quality", path)
    quality = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "pretraining_quality", quality)
    spec.loader.exec_module(quality)
    return quality


def test_pretraining_quality_remakes_its_own_unfinished_data_and_refuses_other_folders(tmp_path, monkeypatch):
    """pretraining_quality.py claims its --workdir as every command claims its folder: a run killed while making the
    data leaves unfinished task/ and corpus/ folders that a re-run makes again; data of another recipe, or a folder
    with files of its own, is refused in one line and left as it is."""
    from byola_hf.tools.outputs import MARKER

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed") if not IN_CI else pytest.fail("espeak-ng is missing in CI")
    quality = load_pretraining_quality(monkeypatch)
    monkeypatch.setattr(quality, "KEYWORDS", ["yes", "no"])
    monkeypatch.setattr(quality, "CLIPS_PER_WORD", {"train": 2, "test": 1})
    monkeypatch.setattr(quality, "BACKGROUND_DIR", Path("/usr/share/sounds/alsa"))  # real recordings, from setup.sh
    workdir = tmp_path / "work"
    real_pool = quality.Pool

    class KilledWhileMaking(Exception):
        pass

    def killed_pool(*args, **kwargs):  # the claim is made, then the run dies while synthesising
        (workdir / "task" / "train" / "yes").mkdir(parents=True)
        (workdir / "task" / "train" / "yes" / "yes_0.wav").write_bytes(b"RIFF")
        raise KilledWhileMaking

    monkeypatch.setattr(quality, "Pool", killed_pool)
    with pytest.raises(KilledWhileMaking):
        quality.make_data(workdir, corpus_clips=3)
    monkeypatch.setattr(quality, "Pool", real_pool)
    task, corpus = quality.make_data(workdir, corpus_clips=3)
    assert sorted(path.name for path in workdir.iterdir()) == [MARKER, "corpus", "data.json", "task"]
    assert len(list(task.rglob("*.wav"))) == 6 and len(list(corpus.glob("*.wav"))) == 3 + 4
    assert soundfile.info(task / "train" / "yes" / "yes_0.wav").frames == quality.RATE
    assert quality.make_data(workdir, corpus_clips=3) == (task, corpus)  # reused
    with pytest.raises(SystemExit, match=r"it differs in data\.corpus"):
        quality.make_data(workdir, corpus_clips=5)
    # Not its own: a folder with other files is left as it is.
    foreign = tmp_path / "foreign"
    (foreign / "task").mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="did not write"):
        quality.make_data(foreign, corpus_clips=3)
    assert sorted(path.name for path in foreign.iterdir()) == ["notes.txt", "task"]


@pytest.mark.parametrize(
    "rate, folder", [(None, "pretrain_AudioNTT2020_512_b64"), (1e-4, "pretrain_AudioNTT2020_512_b64_lr0.0001")]
)
def test_pretraining_quality_runs_another_learning_rate_in_a_folder_of_its_own(tmp_path, monkeypatch, rate, folder):
    """--learning_rate reaches byola-pretrain, whose run then has its own folder (the default's run is not refused
    or mixed with it); without it byola-pretrain's default per variant applies."""
    quality = load_pretraining_quality(monkeypatch)
    commands = []
    monkeypatch.setattr(quality.subprocess, "run", lambda command, check: commands.append(command))
    argv = ["--workdir", str(tmp_path)] + ([] if rate is None else ["--learning_rate", str(rate)])
    args = quality.build_parser().parse_args(argv)
    assert quality.pretrain(args, tmp_path / "task", tmp_path / "corpus") == tmp_path / folder
    (command,) = commands
    assert command[command.index("--output_dir") + 1] == str(tmp_path / folder)
    assert ("--learning_rate" in command) == (rate is not None)
    if rate is not None:
        assert float(command[command.index("--learning_rate") + 1]) == rate


def test_pretraining_quality_evaluates_random_inits_and_checkpoints(tmp_path, monkeypatch):
    """--random_inits and --checkpoints: each random initialisation (seeds 42, 43, ...) and each checkpoint's online
    encoder, with the run's statistics; a checkpoint not saved is one line."""
    import torch

    from byola_hf.pretraining import BYOLAForPreTraining, BYOLAPreTrainingConfig

    quality = load_pretraining_quality(monkeypatch)
    config = BYOLAPreTrainingConfig(feature_d=64, projection_hidden_size=32, projection_size=16, mean=-7.0, std=4.0)
    learner = BYOLAForPreTraining(config)
    learner.save_pretrained(tmp_path / "checkpoint-2")
    learner.save_encoder(tmp_path)
    args = quality.build_parser().parse_args(
        ["--workdir", "w", "--steps", "2", "--checkpoints", "2", "--random_inits", "2"]
    )
    models = quality.encoders(args, tmp_path)
    assert list(models) == ["random initialisation, seed 42", "random initialisation, seed 43", "pre-trained, 2 steps",
                            "checkpoint 2"]  # fmt: skip
    assert all(model.config.mean == -7.0 for model in models.values())
    first = dict(models["random initialisation, seed 42"].named_parameters())
    assert any(
        not torch.equal(first[name], value)
        for name, value in models["random initialisation, seed 43"].named_parameters()
    )
    for name, value in models["checkpoint 2"].state_dict().items():
        torch.testing.assert_close(value, models["pre-trained, 2 steps"].state_dict()[name], rtol=0, atol=0)
    args.checkpoints = [4]
    with pytest.raises(SystemExit, match="--checkpoints 4: .*checkpoint-4 does not exist"):
        quality.encoders(args, tmp_path)


def test_finetune_quality_splits_every_clip_once_and_keeps_the_test_voices_for_testing(tmp_path):
    """finetune_quality.py's task CSV: every clip once, the test folder (the unseen voices) all `test`, a seeded
    fifth of the training clips `valid`."""
    import csv

    path = PROJECT_ROOT / "benchmarks" / "finetune_quality.py"
    spec = importlib.util.spec_from_file_location("finetune_quality", path)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    for split, count in (("train", 40), ("test", 10)):
        for index in range(count):
            (tmp_path / split / f"w{index % 2}").mkdir(parents=True, exist_ok=True)
            (tmp_path / split / f"w{index % 2}" / f"{index}.wav").write_bytes(b"")
    counts = quality.write_task_csv(tmp_path, tmp_path / "task.csv")
    with open(tmp_path / "task.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["file_name"] for row in rows) == sorted(
        str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.wav")
    )
    assert all((row["split"] == "test") == row["file_name"].startswith("test/") for row in rows)
    assert counts["test"] == 10 and counts["train"] + counts["valid"] == 40 and 2 <= counts["valid"] <= 16
    assert all(row["label"] == Path(row["file_name"]).parent.name for row in rows)
    assert quality.write_task_csv(tmp_path, tmp_path / "again.csv") == counts  # seeded

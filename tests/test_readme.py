"""The README's main job and the recipes the docs show run as written (with the shared checkpoints standing in for
the official weights), and the README stays one screen that names every test file and every page of docs/."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FE, PROJECT_ROOT, slow


def doc_block(document: str, after: str, language: str = "bash") -> str:
    """The first `language` code block after the text `after` in `document` (a path from the project root)."""
    text = (PROJECT_ROOT / document).read_text()
    start = text.index(after)
    return re.search(rf"```{language}\n(.*?)```", text[start:], re.S).group(1)


def run_doc_script(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """A doc's bash block under `bash -euo pipefail` in `cwd`, offline, as a user pastes it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True, env=env)


@slow
def test_readme_collator_recipe_runs(tmp_path, random2048_dir):
    """The datasets.map + DataCollatorWithPadding + DataLoader recipe, as written, on a converted model."""
    script = doc_block("docs/api.md", "Features stored by `datasets.map`", "python").replace(
        '"byola-2048"', repr(str(random2048_dir))
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:2] == [
        "torch.Size([2, 2048]) tensor([0, 1])",
        "torch.Size([1, 2048]) tensor([0])",
    ]


@slow
def test_readme_main_job_runs(tmp_path, random2048_checkpoint):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run scripts/setup.sh")
    subprocess.run(
        ["espeak-ng", "-w", str(tmp_path / "speech.wav"), "extract features from this sentence"], check=True
    )
    script = doc_block("README.md", "## The main job")
    script = script.replace("AudioNTT2020-BYOLA-64x96d2048.pth", str(random2048_checkpoint))
    script = script.replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "Check against the original network" in result.stdout
    assert re.search(r"torch.Size\(\[1, \d+, 2048\]\) torch.Size\(\[1, 2048\]\)", result.stdout)


@slow
def test_readme_superb_demo_runs(tmp_path, real512_checkpoint):
    """docs/superb.md's keyword-spotting commands, as written, with the shared official 512-d weights: the KS
    accuracy check (15 epochs, at least 5x chance on voices unseen in training)."""
    script = doc_block("docs/superb.md", "## Keyword spotting in four commands")
    script = script.replace("AudioNTT2020-BYOLA-64x96d512.pth", str(real512_checkpoint))
    bin_dir = str(Path(sys.executable).parent) + "/"
    script = "\n".join(bin_dir + line if line.startswith("byola-") else line for line in script.splitlines())
    result = run_doc_script(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = __import__("json").loads((tmp_path / "out" / "ks" / "eval_results.json").read_text())
    print(f"\ndocs/superb.md KS demo: accuracy {metrics['eval_accuracy']:.3f} on unseen voices")
    assert metrics["eval_accuracy"] >= 0.5
    assert (tmp_path / "out" / "ks" / "layer_weights.png").exists()


def test_readme_gpu_snippet_runs(tmp_path, random2048_dir):
    """docs/api.md's "On a GPU" snippet as written (on the CPU where there is no GPU: it picks its device)."""
    script = doc_block("docs/api.md", "## On a GPU", "python").replace('"byola-2048"', repr(str(random2048_dir)))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env={**os.environ}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "torch.Size([2, 2048]) 5"


def test_readme_fits_on_a_screen_and_names_every_test_file_and_doc():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    tests = sorted(path.name for path in (PROJECT_ROOT / "tests").glob("test_*.py"))
    assert [name for name in tests if f"`{name}`" not in readme] == []
    docs = sorted(path.name for path in (PROJECT_ROOT / "docs").glob("*.md"))
    assert [name for name in docs if f"](docs/{name})" not in readme] == []


@slow
def test_evar_tasks_statistics_then_task_commands_run_in_order(tmp_path, small_model):
    """docs/evar_tasks.md's two blocks, in page order, on a three-fold task of synthetic clips: the first sets the
    variables both read (the statistics block once read TASK, CSV and ROOT before the page had set them)."""
    import numpy as np
    import soundfile as sf

    audio = tmp_path / "work" / "16k" / "esc50" / "audio"
    audio.mkdir(parents=True)
    rows = ["file_name,label,fold"]
    for index in range(30):
        label, fold = ("tone", "noise")[index % 2], 1 + index // 10
        time = np.arange(16000) / 16000
        clip = (
            np.sin(2 * np.pi * (200 + 40 * index) * time)
            if label == "tone"
            else np.random.default_rng(index).standard_normal(16000)
        )
        sf.write(audio / f"{index}.wav", (0.1 * clip).astype(np.float32), 16000)
        rows.append(f"audio/{index}.wav,{label},{fold}")
    (tmp_path / "evar" / "metadata").mkdir(parents=True)
    (tmp_path / "evar" / "metadata" / "esc50.csv").write_text("\n".join(rows) + "\n")
    bin_dir = str(Path(sys.executable).parent) + "/"
    script = doc_block("docs/evar_tasks.md", "## Statistics") + doc_block("docs/evar_tasks.md", "## One command per")
    script = script.replace("--model_name_or_path byola-v2 ", f"--model_name_or_path {small_model} ")
    script = script.replace("--device cuda", "--device cpu").replace("python - ", f"{sys.executable} - ")
    script = re.sub(r"^(\s*&& )?byola-", rf"\g<1>{bin_dir}byola-", script, flags=re.M)
    result = run_doc_script(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "stats" / "esc50" / "train").iterdir())) == 20  # folds 2 and 3
    results = __import__("json").loads((tmp_path / "le" / "esc50" / "eval_results.json").read_text())
    assert len(results["folds"]) == 3


def test_finetuning_side_by_side_block_makes_the_task_csv_it_reads(tmp_path):
    """docs/finetuning.md's side-by-side block reads ks.csv: its own lines write it from the mini KS set's split
    folders, and it loads as a task with the three splits (the block once used a ks.csv nothing made)."""
    import numpy as np
    import soundfile as sf

    from byola_hf.finetune.data import load_task

    for folder in ("train", "validation", "test"):
        (tmp_path / "mini" / "ks" / folder).mkdir(parents=True)
        for index in range(2):
            sf.write(tmp_path / "mini" / "ks" / folder / f"{index}.wav", np.full(16000, 0.1, np.float32), 16000)
        (tmp_path / "mini" / "ks" / folder / "metadata.csv").write_text("file_name,label\n0.wav,yes\n1.wav,no\n")
    block = doc_block("docs/finetuning.md", "## From a task CSV")
    script = re.search(r"python - <<'EOF'.*?\n(.*?)\nEOF\n", block, re.S).group(1)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True)
    task = load_task(str(tmp_path / "ks.csv"), str(tmp_path / "mini" / "ks"), "label", FE, [])
    assert task.layout == "split" and task.classes == ["no", "yes"] and len(task.waveforms) == 6
    assert [(len(fold.train), len(fold.valid), len(fold.test)) for fold in task.folds] == [(2, 2, 2)]

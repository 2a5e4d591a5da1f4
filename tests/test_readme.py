"""The README's main job runs as written (with the shared checkpoint standing in for the official 2048-d one)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT


def readme_block(after: str) -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    start = text.index(after)
    return re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)


def test_readme_main_job_runs(tmp_path, random2048_checkpoint):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run scripts/setup.sh")
    subprocess.run(["espeak-ng", "-w", str(tmp_path / "speech.wav"), "extract features from this sentence"], check=True)
    script = readme_block("The main job")
    script = script.replace("AudioNTT2020-BYOLA-64x96d2048.pth", str(random2048_checkpoint))
    script = script.replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "Check against the original network" in result.stdout
    assert re.search(r"torch.Size\(\[1, \d+, 2048\]\) torch.Size\(\[1, 2048\]\)", result.stdout)

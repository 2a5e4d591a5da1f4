"""Shared test fixtures: the data in ../shared, offline Hub, the converted models."""

import json
import os
from pathlib import Path

# Tests never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


PROJECT_ROOT = Path(__file__).resolve().parents[1]
# One configurable path to the shared data: BYOLA_SHARED_DIR, defaulting to ../shared beside the project root.
SHARED_DIR = Path(os.environ.get("BYOLA_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_shared(relative: str) -> Path:
    """Path of a file under the shared data; a skip locally, a failure under CI when it is missing."""
    path = SHARED_DIR / relative
    if not path.exists():
        message = f"Shared test data missing: {path} (set BYOLA_SHARED_DIR to the folder holding reference/, weights/)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def golden() -> dict:
    """The golden outputs of the original implementation: {"meta": golden.json, "arrays": golden.npz}."""
    meta = json.loads(require_shared("reference/golden.json").read_text())
    arrays = dict(np.load(require_shared("reference/golden.npz")))
    return {"meta": meta, "arrays": arrays}


@pytest.fixture(scope="session")
def random2048_checkpoint() -> Path:
    return require_shared("reference/AudioNTT2020-random-seed123-d2048.pth")


@pytest.fixture(scope="session")
def real512_checkpoint() -> Path:
    return require_shared("weights/AudioNTT2020-BYOLA-64x96d512.pth")


@pytest.fixture(scope="session")
def random2048_dir(tmp_path_factory, random2048_checkpoint, golden) -> Path:
    """The random 2048-d checkpoint converted with the golden statistics."""
    from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint

    output = tmp_path_factory.mktemp("random2048")
    convert_byola_checkpoint(random2048_checkpoint, output, mean=golden["meta"]["mean"], std=golden["meta"]["std"])
    return output


@pytest.fixture(scope="session")
def real512_dir(tmp_path_factory, real512_checkpoint, golden) -> Path:
    """The official 512-d weights converted with the golden statistics."""
    from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint

    output = tmp_path_factory.mktemp("real512")
    convert_byola_checkpoint(real512_checkpoint, output, mean=golden["meta"]["mean"], std=golden["meta"]["std"])
    return output


@pytest.fixture(scope="session")
def golden_v2() -> dict:
    """Golden outputs of the original BYOL-A v2 code: {"meta": golden_v2.json, "arrays": golden_v2.npz}."""
    meta = json.loads(require_shared("reference_v2/golden_v2.json").read_text())
    arrays = dict(np.load(require_shared("reference_v2/golden_v2.npz")))
    return {"meta": meta, "arrays": arrays}


@pytest.fixture(scope="session")
def random3072_checkpoint() -> Path:
    return require_shared("reference_v2/AudioNTT2022-random-seed321-d3072.pth")


@pytest.fixture(scope="session")
def random3072_dir(tmp_path_factory, random3072_checkpoint, golden_v2) -> Path:
    """The random v2 (AudioNTT2022, 3072-d) checkpoint converted with the golden statistics."""
    from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint

    output = tmp_path_factory.mktemp("random3072")
    convert_byola_checkpoint(random3072_checkpoint, output, mean=golden_v2["meta"]["mean"], std=golden_v2["meta"]["std"])
    return output

"""Shared test fixtures: the data in ../shared, offline Hub, the converted models."""

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


# Tests never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Nor write into the user's datasets cache: one of their own per session (its processes too), unless one is set.
if "HF_DATASETS_CACHE" not in os.environ:
    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="byola_hf_tests_datasets_")
    atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from transformers.testing_utils import parse_flag_from_env  # noqa: E402

from byola_hf import BYOLAFeatureExtractor  # noqa: E402


PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Two tiers, as transformers has: `pytest -q` runs the fast one; RUN_SLOW=1 adds the tests marked `slow` (two-process
# launches, long training, benchmark smoke runs), and `RUN_SLOW=1 pytest -q -m slow` runs those alone. A pytest mark,
# not transformers' unittest decorator, so that it also marks single parameters and can be selected.
RUN_SLOW = parse_flag_from_env("RUN_SLOW", default=False)
slow = pytest.mark.slow


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the slow tier, run with RUN_SLOW=1 (transformers' convention)")


def pytest_collection_modifyitems(config, items):
    if not RUN_SLOW:
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="slow tier: set RUN_SLOW=1"))


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


def _load_golden(folder: str, stem: str) -> dict:
    """{"meta": FOLDER/STEM.json, "arrays": FOLDER/STEM.npz} of the shared reference outputs."""
    meta = json.loads(require_shared(f"{folder}/{stem}.json").read_text())
    return {"meta": meta, "arrays": dict(np.load(require_shared(f"{folder}/{stem}.npz")))}


def _converted(tmp_path_factory, checkpoint: Path, golden: dict, name: str) -> Path:
    """`checkpoint` converted with the golden statistics into a fresh directory."""
    from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint

    output = tmp_path_factory.mktemp(name)
    convert_byola_checkpoint(checkpoint, output, mean=golden["meta"]["mean"], std=golden["meta"]["std"])
    return output


@pytest.fixture(scope="session")
def golden() -> dict:
    """The golden outputs of the original v1 implementation."""
    return _load_golden("reference", "golden")


@pytest.fixture(scope="session")
def golden_v2() -> dict:
    """The golden outputs of the original BYOL-A v2 code."""
    return _load_golden("reference_v2", "golden_v2")


@pytest.fixture(scope="session")
def random2048_checkpoint() -> Path:
    return require_shared("reference/AudioNTT2020-random-seed123-d2048.pth")


@pytest.fixture(scope="session")
def real512_checkpoint() -> Path:
    return require_shared("weights/AudioNTT2020-BYOLA-64x96d512.pth")


@pytest.fixture(scope="session")
def random3072_checkpoint() -> Path:
    return require_shared("reference_v2/AudioNTT2022-random-seed321-d3072.pth")


@pytest.fixture(scope="session")
def random2048_dir(tmp_path_factory, random2048_checkpoint, golden) -> Path:
    """The random 2048-d checkpoint converted with the golden statistics."""
    return _converted(tmp_path_factory, random2048_checkpoint, golden, "random2048")


@pytest.fixture(scope="session")
def real512_dir(tmp_path_factory, real512_checkpoint, golden) -> Path:
    """The official 512-d weights converted with the golden statistics."""
    return _converted(tmp_path_factory, real512_checkpoint, golden, "real512")


@pytest.fixture(scope="session")
def random3072_dir(tmp_path_factory, random3072_checkpoint, golden_v2) -> Path:
    """The random v2 (AudioNTT2022, 3072-d) checkpoint converted with the golden statistics."""
    return _converted(tmp_path_factory, random3072_checkpoint, golden_v2, "random3072")


# Seconds a launch may take: a healthy one takes 20-60 s here, on a 2-core machine loaded by other jobs.
LAUNCH_TIMEOUT = 300
LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                 "--master_port"],
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
                   "--main_process_port"],
}  # fmt: skip


def run_two_ranks(
    *arguments: str, env: dict | None = None, cwd=None, launcher: str = "torchrun"
) -> subprocess.CompletedProcess:
    """
    Two ranks on a free loopback port, one thread per rank: `python -m torch.distributed.run --nproc_per_node 2`,
    or with `launcher="accelerate"` `accelerate launch --multi_gpu --num_processes 2` (the multi-GPU launcher,
    which starts its ranks through torch.distributed.run too; the command's `--use_cpu` makes them gloo ranks).

    One launch: one that has not ended in `LAUNCH_TIMEOUT` seconds is killed with its ranks and fails the test with
    their output. (Launches of byola-pretrain used to hang, be refused or lose a rank about one in twelve: it
    destroyed and joined again its process group between two parses of its command line; see
    test_parsing_the_command_line_keeps_the_process_group.)
    """
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, *LAUNCHERS[launcher], str(port), *arguments]
    # Output goes to files, not pipes: a rank left behind by a killed launch must not keep the test waiting.
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, cwd=cwd, env=env,
                                   start_new_session=True)  # fmt: skip
        try:
            process.wait(timeout=LAUNCH_TIMEOUT)
            hung = False
        except subprocess.TimeoutExpired:
            kill_process_tree(process.pid)
            process.wait()
            hung = True
        stdout.seek(0), stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    if hung:
        pytest.fail(f"{launcher}'s two ranks did not end in {LAUNCH_TIMEOUT} s; their stderr:\n{errors[-5000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output, errors)


def kill_process_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it. torch.distributed.run starts each rank in a session of its own, so
    killing the launcher's process group alone left hung ranks running after the test."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, pending = [], [pid]
    while pending:
        tree.append(pending.pop())
        pending.extend(children.get(tree[-1], []))
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def console_script(name: str) -> str:
    """Path of an installed console script (`byola-convert`, ...) beside this interpreter: the command users run."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}: run `pip install -e .[test]`.")
    return str(path)


# Trainer flags for quick, quiet, deterministic CPU runs of byola-run-superb in tests.
QUICK_TRAINER_FLAGS = [
    "--report_to",
    "none",
    "--use_cpu",
    "--save_strategy",
    "no",
    "--eval_strategy",
    "no",
    "--dataloader_num_workers",
    "0",
    "--disable_tqdm",
    "true",
    "--seed",
    "0",
]


# --- helpers shared by the tests of several modules ------------------------------------------------------------------

LOG_MEL_ATOL = 1e-3  # where the mel power is above 1e-6 (reference/README.md)
HIDDEN_RTOL = 1e-4  # relative to the largest magnitude of the array
FE = BYOLAFeatureExtractor()


def clips(golden):
    return [(clip["name"], golden["arrays"][f"{clip['name']}/waveform"], clip) for clip in golden["meta"]["clips"]]


def relative_deviation(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def waveforms(seed: int = 0, lengths=(8000, 16000, 12345)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (0.1 * rng.standard_normal(n) * np.sin(np.arange(n) / (50 + 10 * i))).astype(np.float32)
        for i, n in enumerate(lengths)
    ]


def every_flag(parser) -> list[tuple[int, str]]:
    """(index of the dataclass, field name) of every flag an `HfArgumentParser` takes, as the installed releases
    define them: what run-record tests are generated over."""
    import dataclasses

    return [(index, field.name) for index, kind in enumerate(parser.dataclass_types)
            for field in dataclasses.fields(kind) if field.init]  # fmt: skip


def assert_rerun_refused_unless_it_may_change(record_of, arguments, name: str, may_change, tmp_path) -> None:
    """A folder claimed with `record_of(arguments)` (a command's run record over its argument dataclass), in which
    the run wrote something, is refused to a re-run with the field `name` changed, in one line naming it, unless
    `name` is on the command's `may_change` list: then the re-run resumes."""
    import copy

    from byola_hf.tools.outputs import claim_output_dir

    claim_output_dir(tmp_path / "run", "byola-x", record_of(arguments), ["result"])
    (tmp_path / "run" / "result").write_text("partial")  # a run that wrote something (else the folder is free)
    changed = copy.copy(arguments)
    setattr(changed, name, f"another {name}")
    if name in may_change:
        assert claim_output_dir(tmp_path / "run", "byola-x", record_of(changed), ["result"]).resumed
        return
    with pytest.raises(ValueError) as refusal:
        claim_output_dir(tmp_path / "run", "byola-x", record_of(changed), ["result"])
    assert "\n" not in str(refusal.value) and f"it differs in arguments.{name})" in str(refusal.value), refusal.value


def run_main(main, arguments, capsys) -> tuple[int, str]:
    """(exit code, stderr) of a command's `main`, run in this process."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(argument) for argument in arguments])
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line(code: int, stderr: str, command: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith(f"{command}: error: ")]
    assert code == 2 and len(lines) == 1, (code, stderr)
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """A real spoken clip (espeak-ng, 22.05 kHz mono WAV)."""
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello there, general purpose audio"], check=True)
    return path


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A random 64-d v1 model directory with statistics."""
    import torch

    from byola_hf import BYOLAConfig, BYOLAModel

    config = BYOLAConfig(feature_d=64, mean=-8.0, std=4.0)
    directory = tmp_path_factory.mktemp("small_model")
    torch.manual_seed(0)
    BYOLAModel(config).save_pretrained(directory)
    BYOLAFeatureExtractor.from_model_config(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, random2048_dir) -> Path:
    """A three-class head on the random 2048-d encoder, saved with its feature extractor."""
    import torch
    from transformers import AutoFeatureExtractor

    from byola_hf import BYOLAForSequenceClassification

    torch.manual_seed(0)
    head = BYOLAForSequenceClassification.from_pretrained(
        random2048_dir, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2}
    )
    output = tmp_path_factory.mktemp("classifier")
    head.save_pretrained(output)
    AutoFeatureExtractor.from_pretrained(random2048_dir).save_pretrained(output)
    return output

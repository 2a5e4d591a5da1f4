"""byola_hf/tools: owned output folders, atomic writes, workers that die with their parent, command lines."""

import copy
import dataclasses
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from byola_hf.tools import outputs
from byola_hf.tools.cli import make_parser, parse_arguments, user_error_message


TRAINING_FIELDS = [field.name for field in dataclasses.fields(TrainingArguments) if field.init]


@pytest.mark.parametrize("name", TRAINING_FIELDS)
def test_a_rerun_with_any_training_argument_changed_is_refused_unless_it_may_change(name, tmp_path):
    """Records are fail-closed: every TrainingArguments field, read from the dataclass of the installed release (so a
    field a new release adds is covered), changed on a re-run, is refused naming it; only those on the documented
    may-change list (where a run writes and logs, how often it saves and evaluates, its length, workers, progress,
    the Hub) resume."""
    arguments = TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, report_to="none")
    first = {"arguments": outputs.recorded_arguments(arguments)}
    outputs.claim_output_dir(tmp_path / "run", "byola-x", first, ["result"])
    (tmp_path / "run" / "result").write_text("partial")  # a run that wrote something (else the folder is free)
    changed = copy.copy(arguments)
    setattr(changed, name, f"another {name}")
    again = {"arguments": outputs.recorded_arguments(changed)}
    if name in outputs.MAY_CHANGE_ON_RESUME:
        assert outputs.claim_output_dir(tmp_path / "run", "byola-x", again, ["result"]).resumed
    else:
        with pytest.raises(ValueError, match=rf"it differs in arguments\.{name}\)"):
            outputs.claim_output_dir(tmp_path / "run", "byola-x", again, ["result"])


def test_every_argument_dataclass_is_recorded():
    """A command's record holds the fields of each of its argument dataclasses (model, data, training), not the
    first one's alone, and none of the may-change list's."""

    @dataclass
    class Model:
        model_name_or_path: str = "m"

    @dataclass
    class Data:
        dataset_name: str = "d"
        output_dir: str = "out"

    record = outputs.recorded_arguments(Model(), Data(), TrainingArguments(output_dir="out", learning_rate=0.5))
    assert (record["model_name_or_path"], record["dataset_name"], record["learning_rate"]) == ("m", "d", 0.5)
    assert "output_dir" not in record


def test_changed_parts_names_keys_added_removed_and_nested():
    """A refusal names every part that differs: a key only the folder's record has, one only the re-run's has,
    and nested ones by their dotted path."""
    recorded = {"a": 1, "gone": 2, "source": {"files": 3, "kept": 4}}
    current = {"a": 1, "new": 5, "source": {"files": 6, "kept": 4}}
    assert outputs.changed_parts(recorded, current) == ["gone", "new", "source.files"]


def test_the_may_change_list_names_only_what_cannot_change_a_result():
    """The list is short and every name on it is a flag of some command; nothing that sets the optimisation, the
    data order, the model or the numerics is on it."""
    assert len(outputs.MAY_CHANGE_ON_RESUME) < 80
    for name in (
        "seed",
        "data_seed",
        "learning_rate",
        "label_smoothing_factor",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "bf16",
        "use_cpu",
        "dataloader_drop_last",
        "full_determinism",
    ):
        assert name not in outputs.MAY_CHANGE_ON_RESUME, name  # fmt: skip


def test_a_data_change_alone_is_named_as_such(tmp_path):
    outputs.claim_output_dir(tmp_path, "byola-x", {"arguments": {"a": 1}, "source": {"clips": 3}}, ["r"])
    (tmp_path / "r").write_text("partial")
    with pytest.raises(ValueError, match="The data changed since the run"):
        outputs.claim_output_dir(tmp_path, "byola-x", {"arguments": {"a": 1}, "source": {"clips": 4}}, ["r"])
    with pytest.raises(ValueError, match=r"it differs in arguments\.a, source\.clips\)"):
        outputs.claim_output_dir(tmp_path, "byola-x", {"arguments": {"a": 2}, "source": {"clips": 4}}, ["r"])
    with pytest.raises(ValueError, match=r"it differs in arguments\.b\)"):  # a flag the folder's run did not have
        outputs.claim_output_dir(tmp_path, "byola-x", {"arguments": {"a": 1, "b": 2}, "source": {"clips": 3}}, ["r"])


def test_a_folder_holding_only_its_claim_is_free_for_any_run(tmp_path):
    """A run that stopped before writing anything leaves only the marker: nothing to keep or resume, so a run with
    other arguments takes the folder (it used to be told that it could not use it)."""
    outputs.claim_output_dir(tmp_path / "run", "byola-x", {"arguments": {"a": 1}}, ["result"])
    assert not outputs.claim_output_dir(tmp_path / "run", "byola-x", {"arguments": {"a": 2}}, ["result"]).resumed
    assert outputs.read_marker(tmp_path / "run")["record"] == {"arguments": {"a": 2}}


def test_claim_output_dir_contract(tmp_path):
    fresh = outputs.claim_output_dir(tmp_path / "new", "byola-x", "f1", ["result"])
    assert not fresh.resumed and (tmp_path / "new" / outputs.MARKER).exists()
    (tmp_path / "new" / "result").write_text("partial")
    assert outputs.claim_output_dir(tmp_path / "new", "byola-x", "f1", ["result"]).resumed
    with pytest.raises(ValueError, match="holds the outputs of byola-x, not byola-y"):
        outputs.claim_output_dir(tmp_path / "new", "byola-y", "f1", ["result"])
    with pytest.raises(ValueError, match="other inputs or arguments"):
        outputs.claim_output_dir(tmp_path / "new", "byola-x", "f2", ["result"])
    (tmp_path / "new" / "user.txt").write_text("keep")
    outputs.claim_output_dir(tmp_path / "new", "byola-x", "f2", ["result"], overwrite=True)
    assert not (tmp_path / "new" / "result").exists() and (tmp_path / "new" / "user.txt").read_text() == "keep"


# The other runs below load outputs.py alone (it imports only the standard library): the lock is that module's
# whatever else a process imported, and an interpreter without torch and transformers starts in a tenth of the time.
LOAD_OUTPUTS = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("outputs", {outputs.__file__!r})
outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(outputs)
"""
HOLDING_RUN = (
    LOAD_OUTPUTS
    + """
import sys, time
outputs.claim_output_dir(sys.argv[1], "byola-x", {"arguments": {"a": 1}}, ["result"])
print("claimed", flush=True)
time.sleep(60)
"""
)


def test_a_folder_in_use_by_a_running_command_is_refused_and_left_alone(tmp_path):
    """Two runs into one folder wrote into, and removed, each other's files: the second byola-finetune failed on a
    checkpoint the first deleted ('No such file or directory ... check the path'), and one started with another
    argument and --overwrite_output_dir removed the running one's results, which it then wrote into the new run's
    folder. A running command holds its folder: another run is refused in one line, with or without
    --overwrite_output_dir, and nothing in the folder changes; once the holder is gone (kill -9) the folder is free."""
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_RUN, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        (folder / "result").write_text("the running run's")
        for record, overwrite in (({"arguments": {"a": 1}}, False), ({"arguments": {"a": 2}}, True)):
            with pytest.raises(ValueError, match="is in use by another run that is still going"):
                outputs.claim_output_dir(folder, "byola-x", record, ["result"], overwrite=overwrite)
        assert (folder / "result").read_text() == "the running run's"
        assert outputs.read_marker(folder)["record"] == {"arguments": {"a": 1}}
    finally:
        holder.kill()
        holder.wait()
    with outputs.holds_claimed_folders():  # as a command function holds what it claims
        assert outputs.claim_output_dir(folder, "byola-x", {"arguments": {"a": 1}}, ["result"]).resumed
        assert outputs.claim_output_dir(folder, "byola-x", {"arguments": {"a": 1}}, ["result"]).resumed  # ours
    # Free again once the command has returned, for a run in another process (a notebook's call ended, say).
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_RUN, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
    finally:
        holder.kill()
        holder.wait()


def test_the_other_ranks_of_a_refused_launch_leave_the_running_runs_folder_alone(tmp_path, monkeypatch):
    """A second torchrun launch of byola-run-superb into the folder of a running one, with another --learning_rate
    and --overwrite_output_dir: its rank 0 was refused ('in use'), but Trainer's main_process_first then let rank 1
    in, which holds no lock; it removed the running run's checkpoints and wrote its own marker there. The pretraining
    run's folder, holding only its marker while rank 0 computes the statistics, was re-marked the same way. A rank
    other than 0 now changes nothing in a folder marked for another run, and still follows its own rank 0's claim."""
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_RUN, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        for files, overwrite in (([], None), (["result"], True)):  # only the claim (pretraining), then results
            for name in files:
                (folder / name).write_text("the running run's")
            with pytest.raises(ValueError, match="rank 0 of this launch did not take over"):
                outputs.claim_output_dir(folder, "byola-x", {"arguments": {"a": 2}}, ["result"], overwrite=overwrite)
            assert sorted(path.name for path in folder.iterdir()) == sorted([outputs.MARKER, *files])
            assert outputs.read_marker(folder)["record"] == {"arguments": {"a": 1}}
        assert (folder / "result").read_text() == "the running run's"
        # The folder its own rank 0 claimed (the same record) is the rank's to use, as before.
        assert outputs.claim_output_dir(folder, "byola-x", {"arguments": {"a": 1}}, ["result"]).resumed
    finally:
        holder.kill()
        holder.wait()


FORKING_RUN = (
    LOAD_OUTPUTS
    + """
import os, sys, time
outputs.claim_output_dir(sys.argv[1], "byola-x", {"arguments": {"a": 1}}, ["result"])
worker = os.fork()  # as datasets.map(num_proc=...) and DataLoader workers fork
if worker == 0:
    for stream in (1, 2):  # the test reads the run's output to its end
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream)
    time.sleep(60)
    os._exit(0)
print(worker, flush=True)
os._exit(0)  # the run ends (or is killed) while its worker lives on
"""
)


def test_a_forked_worker_does_not_keep_the_folder_held(tmp_path):
    """A forked worker inherited the descriptor that holds the folder: byola-run-superb killed during its
    datasets.map (--preprocessing_num_workers) left orphaned pool workers that kept the folder 'in use by another run'
    for good. The folder is free once the run is gone, whatever its workers do."""
    folder = tmp_path / "run"
    run = subprocess.run([sys.executable, "-c", FORKING_RUN, str(folder)], capture_output=True, text=True, check=True)
    worker = int(run.stdout.strip())
    try:
        with outputs.holds_claimed_folders():
            assert outputs.claim_output_dir(folder, "byola-x", {"arguments": {"a": 1}}, ["result"]).resumed
    finally:
        os.kill(worker, signal.SIGKILL)


def test_a_folder_on_a_file_system_without_locks_is_claimed_with_a_warning(tmp_path, monkeypatch, caplog):
    """NFS refuses an exclusive flock on a descriptor not open for writing (a directory never is: EBADF), Lustre
    mounted without `-o flock` has none (ENOSYS): every command stopped there with a traceback. Such a folder is
    claimed as before the lock, with a warning that a second run into it would not be refused."""
    import errno

    def no_locks(descriptor, operation):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(outputs.fcntl, "flock", no_locks)
    with outputs.holds_claimed_folders(), caplog.at_level("WARNING", logger=outputs.__name__):
        assert not outputs.claim_output_dir(tmp_path / "run", "byola-x", {"arguments": {"a": 1}}, ["result"]).resumed
    assert outputs.read_marker(tmp_path / "run")["record"] == {"arguments": {"a": 1}}
    assert "cannot be locked" in caplog.text and "Bad file descriptor" in caplog.text


def test_a_system_without_flock_or_with_an_empty_rank_claims_the_folder(tmp_path, monkeypatch, caplog):
    """Where fcntl is missing (Windows) the folder is claimed with the same warning, not an ImportError of every
    command; an empty RANK (a launcher that sets it blank) is rank 0, not a ValueError from int('')."""
    monkeypatch.setattr(outputs, "fcntl", None)
    monkeypatch.setenv("RANK", "")
    with outputs.holds_claimed_folders(), caplog.at_level("WARNING", logger=outputs.__name__):
        assert not outputs.claim_output_dir(tmp_path / "run", "byola-x", {"arguments": {"a": 1}}, ["result"]).resumed
    assert "cannot be locked (this system has no flock)" in caplog.text


def test_outputs_imports_without_fork_or_fcntl():
    """Windows has neither fcntl nor os.register_at_fork: the module every command imports must still import there
    (its folders are then claimed with the no-lock warning above)."""
    script = (
        "import os, sys\n"
        "import byola_hf, datasets  # the libraries first: they may use both\n"
        "del os.register_at_fork\n"
        "sys.modules['fcntl'] = None\n"
        "from byola_hf.tools import outputs\n"
        "print(outputs.fcntl)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "None", result.stderr[-2000:]


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "results.json"
    outputs.write_json_atomic(target, {"accuracy": 0.5})
    with pytest.raises(RuntimeError):
        with outputs.atomic_path(target) as staged:
            staged.write_text('{"accuracy": ')
            raise RuntimeError("killed mid-write")
    assert target.read_text().startswith('{\n  "accuracy": 0.5') and os.listdir(tmp_path) == ["results.json"]


def test_save_into_moves_config_json_last(tmp_path, monkeypatch):
    """A model folder loads once its config.json is there: `save_into` moves every other file in first, so a run
    killed, or a disk filling, while it moves files never leaves a config.json beside missing weights."""
    moved, replace = [], os.replace

    def recording_replace(source, target):
        moved.append(os.path.basename(target))
        replace(source, target)

    def save(folder):
        for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
            (folder / name).write_text(name)

    monkeypatch.setattr(os, "replace", recording_replace)
    outputs.save_into(tmp_path / "model", save)
    assert moved[-1] == "config.json" and sorted(moved) == sorted(os.listdir(tmp_path / "model"))


def test_workers_die_with_their_parent():
    """die_with_parent() in a child: killing its parent with SIGKILL takes the child down too."""
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        '\'from byola_hf.tools.cli import die_with_parent; die_with_parent(); print("ready", flush=True); '
        "import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "ready"  # the child has asked to die with its parent
    parent.kill()
    parent.wait()
    for _ in range(50):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child_pid}/stat") as stat:
            if stat.read().split()[2] == "Z":  # a zombie: dead, waiting for init to reap it
                return
        time.sleep(0.1)
    os.kill(child_pid, signal.SIGKILL)
    raise AssertionError("the worker outlived its parent")


@dataclass
class Rate:
    learning_rate: float = field(default=1.0, metadata={"help": "Learning rate"})


@pytest.mark.parametrize(
    "module, arguments, named",
    [
        (
            "byola_hf.stats.cli",
            ["--model_name_or_path", "m", "--dataset_name", "audiofolder", "--data_dir", ""],
            "--data_dir",
        ),
        (
            "byola_hf.extract.cli",
            ["--model_name_or_path", "m", "--dataset_name", "", "--output_dir", "o"],
            "--dataset_name",
        ),
        ("byola_hf.superb.run", ["--model_name_or_path", "m", "--task", "ks", "--output_dir", ""], "--output_dir"),
        (
            "byola_hf.superb.run",
            ["--model_name_or_path", "m", "--task", "ks", "--output_dir", "o", "--resume_from_checkpoint", ""],
            "--resume_from_checkpoint",
        ),
        (
            "byola_hf.superb.run",
            ["--model_name_or_path", "m", "--lexicon", "a.txt", "", "--output_dir", "o"],
            "--lexicon",
        ),
        ("byola_hf.pretraining.cli", ["--dataset_name", "x", "--init_from", "", "--output_dir", "o"], "--init_from"),
        (
            "byola_hf.finetune.cli",
            ["--model_name_or_path", "m", "--metadata_csv", "", "--output_dir", "o"],
            "--metadata_csv",
        ),
        ("byola_hf.linear_eval.cli", ["--embeddings_dir", "", "--output_dir", "o"], "--embeddings_dir"),
        ("byola_hf.superb.mini_sets", ["--output_dir", ""], "--output_dir"),
        ("byola_hf.convert_byola_checkpoint", ["a.pth", ""], "output_dir"),
    ],
)
def test_an_empty_value_is_refused_in_one_line(module, arguments, named, capsys, tmp_path, monkeypatch):
    """`--data_dir "$DATA"` with DATA unset: audiofolder read the working directory's audio; an empty --validation_dir
    held out part of the training split while the report named the working directory. Every command refuses an
    empty value before any work, naming the flag."""
    import importlib

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(arguments)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and stderr.count("\n") == 1, stderr
    assert f"error: {named} is empty (an unset shell variable?)" in stderr
    assert os.listdir(tmp_path) == []


def test_abbreviated_flags_are_refused_in_one_line(capsys):
    """Every command's parser: `--learning_r` is not taken for `--learning_rate`. The commands pick defaults by the
    flags given, so an abbreviation taken unseen would let a default replace the user's value."""
    parser = make_parser("byola-x", (Rate,))
    assert parse_arguments(parser, ["--learning-rate", "2"])[0].learning_rate == 2.0
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(parser, ["--learning_r", "2"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("byola-x: error:") and "--learning_r" in error


@pytest.mark.parametrize(
    "error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError()]
)
def test_running_out_of_memory_names_the_fix(error):
    message = user_error_message(error)
    assert message.startswith("Ran out of") and "lower the batch size" in message


@pytest.mark.parametrize("load_best", [False, True])
def test_a_finished_run_rerun_ends_on_the_weights_trainer_would(tmp_path, load_best):
    """A re-run whose last checkpoint is the run's last step trains nothing; it ends on that checkpoint's weights,
    or with load_best_model_at_end on the best checkpoint's, as Trainer ends a run (it reported the last one's)."""
    from types import SimpleNamespace

    from safetensors.torch import save_file
    from transformers import TrainerState

    from byola_hf.tools.cli import run_training

    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        save_file({"weight": torch.full((2,), float(step))}, tmp_path / f"checkpoint-{step}" / "model.safetensors")
    state = TrainerState(global_step=4, best_model_checkpoint="/elsewhere/run/checkpoint-2")
    state.save_to_json(str(tmp_path / "checkpoint-4" / "trainer_state.json"))
    model = torch.nn.Linear(2, 1, bias=False)
    model.weight = torch.nn.Parameter(torch.zeros(2))
    trainer = SimpleNamespace(args=SimpleNamespace(max_steps=4, load_best_model_at_end=load_best), model=model)
    assert run_training(trainer, str(tmp_path / "checkpoint-4")) is None
    assert model.weight.tolist() == ([2.0, 2.0] if load_best else [4.0, 4.0])
    assert trainer.state.global_step == 4


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_steps", "0"], "--max_steps 0 would still train one step"),
        (["--num_train_epochs", "0"], "--num_train_epochs 0.0 trains nothing"),
        (["--max_grad_norm", "nan"], "--max_grad_norm must be a finite number"),
        (["--learning_rate", "inf"], "--learning_rate must be a finite number"),
        # a ZeroDivisionError traceback from Trainer, after the statistics pass
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1"),
        # Trainer resumed with a fresh optimizer and schedule, or the stopped epoch's first batches: the re-run of a
        # killed run differed from the run never stopped.
        (["--save_only_model"], "--save_only_model: a re-run would not resume a stopped run exactly"),
        (["--ignore_data_skip"], "--ignore_data_skip: a re-run would not resume a stopped run exactly"),
    ],
)
def test_training_flags_trainer_would_not_follow_are_refused(flags, message, tmp_path):
    """byola-pretrain, byola-run-superb and byola-finetune share this check: Trainer trains one step for `--max_steps
    0`, none for no epochs (and the commands would save the untrained model), takes a NaN clipping norm as no
    clipping, resumes a `--save_only_model` checkpoint with a fresh optimizer and schedule, and with
    `--ignore_data_skip` trains the stopped epoch's first batches again."""
    from transformers import TrainingArguments

    from byola_hf.tools.cli import check_training_length_and_values

    (arguments,) = make_parser("byola-x", (TrainingArguments,)).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--report_to", "none", *flags]
    )
    with pytest.raises(ValueError, match=message):
        check_training_length_and_values(arguments)
    (fine,) = make_parser("byola-x", (TrainingArguments,)).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--report_to", "none", "--max_steps", "3"]
    )
    check_training_length_and_values(fine)


def test_sample_limits_draw_from_every_class():
    """--max_train_samples (byola-run-superb, byola-pretrain) on a corpus stored class by class: a random draw
    (fixed by the seed), not the first rows, which held one class."""
    import datasets

    from byola_hf.tools.data import draw_rows

    stored = datasets.Dataset.from_dict({"label": [index // 10 for index in range(100)]})
    drawn = draw_rows(stored, 20, seed=42)
    assert len(drawn) == 20 and len(set(drawn["label"])) > 5
    assert drawn["label"] == draw_rows(stored, 20, seed=42)["label"]
    assert draw_rows(stored, None, seed=42) is stored and draw_rows(stored, 100, seed=42) is stored
    with pytest.raises(ValueError, match="must be a positive number of clips, got 0"):  # it used to take all rows
        draw_rows(stored, 0, seed=42)


def training_command_arguments(command: str, flags: list[str], output_dir) -> TrainingArguments:
    """The `TrainingArguments` that `command` parses from `flags`."""
    from byola_hf.finetune.cli import build_parser as finetune_parser
    from byola_hf.pretraining.cli import parse_command_line
    from byola_hf.superb.run import build_parser as superb_parser

    flags = ["--output_dir", str(output_dir), *flags]
    if command == "byola-pretrain":
        return parse_command_line(["--dataset_name", "x", *flags])[2]
    if command == "byola-finetune":
        return parse_arguments(finetune_parser(), ["--model_name_or_path", "m", "--metadata_csv", "c", *flags])[1]
    return parse_arguments(superb_parser(), ["--model_name_or_path", "m", *flags])[2]


def build_command_help(command: str) -> str:
    from byola_hf.finetune.cli import build_parser as finetune_parser
    from byola_hf.pretraining.cli import build_parser as pretrain_parser
    from byola_hf.superb.run import build_parser as superb_parser

    parsers = {"byola-pretrain": pretrain_parser, "byola-finetune": finetune_parser, "byola-run-superb": superb_parser}
    return parsers[command]().format_help()


@pytest.mark.parametrize("command", ["byola-pretrain", "byola-run-superb", "byola-finetune"])
def test_training_commands_log_short_runs_and_pin_memory_only_for_an_accelerator(command, tmp_path):
    """Trainer's `logging_steps` 500 showed no loss for a run of fewer steps, and its `dataloader_pin_memory` made
    torch warn at every DataLoader on a machine without an accelerator. Given values stay."""
    training_args = training_command_arguments(command, [], tmp_path)
    assert training_args.logging_steps == 10
    assert training_args.dataloader_pin_memory is torch.accelerator.is_available()
    flags = ["--logging-steps", "500", "--dataloader_pin_memory", "true"]
    given = training_command_arguments(command, flags, tmp_path)
    assert (given.logging_steps, given.dataloader_pin_memory) == (500, True)
    help_text = " ".join(build_command_help(command).split())
    assert "(default: 10)" in help_text and "(default here: only when one is available)" in help_text

    from transformers import Trainer

    trainer = Trainer(model=torch.nn.Linear(1, 1), args=training_args, train_dataset=[{"x": torch.zeros(1)}] * 2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*pin_memory")
        next(iter(trainer.get_train_dataloader()))


def test_a_long_confusion_matrix_title_is_wrapped_not_cut(tmp_path):
    """The linear evaluation's title ran past both edges of a small matrix's figure and was cut there: no text may
    touch the picture's left or right edge, and every word of the title is drawn."""
    from matplotlib.image import imread

    from byola_hf.tools import plots

    title = "Linear evaluation: 0.9500 ± 0.0200 over 3 seed(s) x 5 folds; matrix of seed 42"
    references, predictions = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1])
    path = plots.save_confusion_matrix(references, predictions, ["a", "b", "c"], tmp_path / "matrix.png", title)
    pixels = imread(path)[..., :3]
    assert (pixels[:, [0, -1]] > 0.99).all(), "text touches an edge of the picture"
    figure = plots.confusion_matrix_figure(references, predictions, ["a", "b", "c"], title)
    drawn = figure.axes[0].get_title()
    assert " ".join(drawn.split()) == f"{title} (accuracy 75.0%)"
    renderer = figure.canvas.get_renderer()
    assert figure.bbox.contains(*figure.axes[0].title.get_window_extent(renderer).min)
    assert figure.bbox.contains(*figure.axes[0].title.get_window_extent(renderer).max)


def test_a_split_or_configuration_of_a_source_read_whole_is_refused(tmp_path):
    """A folder of audio files, or a saved dataset without splits, has no `test` split: every command read the
    whole source for `--split test` (statistics, pre-training, a linear probe's test clips that were its training
    clips). A saved DatasetDict keeps its splits."""
    import datasets
    import soundfile

    from byola_hf.tools.data import load_audio_dataset

    folder = tmp_path / "clips"
    folder.mkdir()
    for index in range(2):
        soundfile.write(folder / f"{index}.wav", np.zeros(1600, np.float32), 16000)
    single = tmp_path / "single"
    datasets.Dataset.from_dict({"path": ["a"]}).save_to_disk(str(single))
    for source in (str(folder), str(folder / "*.wav"), str(single)):
        for flags, fragment in (({"split": "test"}, "--split test"), ({"dataset_config_name": "x"}, "--dataset_conf")):
            with pytest.raises(ValueError) as refusal:
                load_audio_dataset(source, **flags)
            assert str(refusal.value).startswith(fragment) and "\n" not in str(refusal.value)
    # An absolute glob is listed too (it was refused as a path that does not exist).
    assert len(load_audio_dataset(str(folder))) == len(load_audio_dataset(str(folder / "*.wav"))) == 2
    splits = tmp_path / "splits"
    test = datasets.Dataset.from_dict({"audio": [str(folder / "0.wav")]}).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"test": test}).save_to_disk(str(splits))
    assert len(load_audio_dataset(str(splits), split="test")) == 1


def test_a_folder_whose_name_holds_glob_characters_is_read_as_that_folder(tmp_path):
    """A folder named `takes[1]` was read as a glob pattern: its files were never read, and those of a folder
    `takes1` beside it were embedded, counted in the statistics or trained on instead, silently. datasets'
    audiofolder globs its `data_dir` the same way, so such a folder there is refused."""
    import soundfile

    from byola_hf.tools.data import load_audio_dataset, load_source

    own, other = tmp_path / "takes[1]", tmp_path / "takes1"
    for folder, count in ((own, 1), (other, 2)):
        folder.mkdir()
        for index in range(count):
            soundfile.write(folder / f"{index}.wav", np.zeros(1600, np.float32), 16000)
    expected = [str(own / "0.wav")]
    assert load_audio_dataset(str(own))["path"] == expected
    assert [item["path"] for item in load_source(str(own))["audio"]] == expected
    assert len(load_audio_dataset(str(tmp_path / "takes?" / "*.wav"))) == 2  # a pattern, no path: still a glob
    (own / "metadata.csv").write_text("file_name,label\n0.wav,a\n")
    for source, data_dir in (("audiofolder", str(own)), (str(own), None)):
        with pytest.raises(ValueError, match=r"reads .*takes\[1\] as a pattern") as refusal:
            load_audio_dataset(source, data_dir=data_dir)
        assert "\n" not in str(refusal.value)


def test_source_fingerprint_changes_with_any_column_or_file(tmp_path):
    """A task CSV whose labels (or any other column) changed, over the same audio files, is other data: a
    fingerprint of the audio alone survived, so a re-run would have resumed or reused results of the old labels."""
    import datasets

    from byola_hf.tools.data import source_fingerprint

    files = [str(tmp_path / f"{index}.wav") for index in range(3)]
    for file in files:
        (tmp_path / file).write_bytes(b"RIFF")

    def fingerprint(labels: list[str], folds: list[int]) -> str:
        table = {"audio": files, "label": labels, "fold": folds}
        dataset = datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio(decode=False))
        return source_fingerprint(dataset, "audio")

    first = fingerprint(["a", "b", "a"], [1, 2, 3])
    assert fingerprint(["a", "b", "a"], [1, 2, 3]) == first
    assert len({first, fingerprint(["a", "a", "b"], [1, 2, 3]), fingerprint(["a", "b", "a"], [1, 3, 2])}) == 3
    (tmp_path / files[0]).write_bytes(b"RIFF, written again")
    assert fingerprint(["a", "b", "a"], [1, 2, 3]) != first


def test_stored_clips_are_fingerprinted_by_datasets_without_hashing_their_bytes(tmp_path, monkeypatch):
    """Clips stored in the dataset (a Hub or save_to_disk dataset) had two rules: byola-extract and byola-run-superb
    hashed every stored byte at each start (a corpus's gigabytes each time), byola-pretrain took datasets' own
    fingerprint. One rule now, datasets' fingerprint: a folder saved with one clip's audio changed is other data,
    the same folder loaded again the same, and no stored byte is read into the hash."""
    import io

    import datasets
    import soundfile

    from byola_hf.tools import data

    def saved(name: str, level: float) -> datasets.Dataset:
        clips = []
        for index, value in enumerate((0.1, level)):
            wav = io.BytesIO()
            soundfile.write(wav, np.full(160_000, value, np.float32), 16000, format="WAV", subtype="FLOAT")
            clips.append({"bytes": wav.getvalue(), "path": f"{index}.wav"})
        table = datasets.Dataset.from_dict({"audio": clips, "label": [0, 1]}).cast_column("audio", datasets.Audio())
        table.save_to_disk(str(tmp_path / name))
        return datasets.load_from_disk(str(tmp_path / name))

    hashed = []
    sha256 = data.hashlib.sha256

    class Recording:
        def __init__(self, chunk: bytes = b""):
            self.digest = sha256()
            self.update(chunk)

        def update(self, chunk: bytes) -> None:
            hashed.append(len(chunk))
            self.digest.update(chunk)

        def hexdigest(self) -> str:
            return self.digest.hexdigest()

    first, other = saved("first", 0.2), saved("other", 0.3)
    monkeypatch.setattr(data.hashlib, "sha256", Recording)
    record = data.source_record(first, "audio")
    assert record["clips"] == 2 and sum(hashed) < 2_000  # two clips of 640 kB each were stored
    assert data.source_record(datasets.load_from_disk(str(tmp_path / "first")), "audio") == record
    assert data.source_record(other, "audio") != record


def test_a_saved_dataset_of_paths_with_a_clip_written_again_is_other_data(tmp_path, monkeypatch):
    """`save_to_disk` embeds the files a dataset of paths names, but its fingerprint is that of the paths: a clip
    written again and the dataset saved again into the same folder kept the record, and a re-run resumed on other
    audio. The same folder loaded again, and a draw of it, keep it."""
    import shutil

    import datasets
    import soundfile

    from byola_hf.tools import data

    clips = [str(tmp_path / f"{index}.wav") for index in range(3)]
    saved = tmp_path / "saved"

    def save(level: float) -> dict:
        for clip, value in zip(clips, (0.1, 0.15, level)):
            soundfile.write(clip, np.full(1600, value, np.float32), 16000, subtype="FLOAT")
        table = datasets.Dataset.from_dict({"audio": clips, "label": [0, 1, 0]}).cast_column("audio", datasets.Audio())
        shutil.rmtree(saved, ignore_errors=True)
        table.save_to_disk(str(saved))  # the clips' bytes are stored: the files may go
        return data.source_record(datasets.load_from_disk(str(saved)), "audio")

    record = save(0.2)
    assert data.source_record(datasets.load_from_disk(str(saved)), "audio") == record
    drawn = data.source_record(data.draw_rows(data.load_source(str(saved)), 2, 0), "audio")
    assert data.source_record(data.draw_rows(data.load_source(str(saved)), 2, 0), "audio") == drawn
    assert save(0.3) != record
    # HF_DATASETS_IN_MEMORY_MAX_SIZE had the commands load such a folder into memory: no Arrow file was left to tell
    # two saves apart.
    monkeypatch.setattr(datasets.config, "IN_MEMORY_MAX_SIZE", 10**9)
    read = data.source_record(data.load_source(str(saved)), "audio")
    save(0.4)
    assert data.source_record(data.load_source(str(saved)), "audio") != read


def test_each_rank_takes_its_own_gpu_and_keeps_a_process_group_it_did_not_create(monkeypatch):
    """Under torchrun a bare "cuda" is the rank's own GPU on its machine (`LOCAL_RANK`, not the global `RANK`), and
    `process_group` leaves a group its caller joined (here a one-process gloo group) as it found it."""
    import torch.distributed as dist

    from byola_hf.tools.distributed import device_for_rank, process_group

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (device_for_rank("cuda"), device_for_rank("cuda:0"), device_for_rank("cpu")) == ("cuda:1", "cuda:0", "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert device_for_rank("cuda") == "cuda"
    monkeypatch.setenv("WORLD_SIZE", "2")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        group = dist.group.WORLD
        with process_group() as (rank, world_size):
            assert (rank, world_size) == (0, 1)
        assert dist.is_initialized() and dist.group.WORLD is group
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_saved_dataset_on_a_read_only_share_is_read_and_left_as_it_is(tmp_path, small_model, monkeypatch):
    """datasets writes a transform's cache-*.arrow beside the files it reads: byola-compute-stats on a save_to_disk
    dataset on a read-only share failed with 'Read-only file system ... choose an --output_dir on a writable disk'
    (the output folder was fine), and on a writable one the commands left their cache files in the user's folder.
    They go to datasets' cache now: statistics, a drawn subset, pre-training's scan and run-superb's held-out split."""
    import io

    import datasets
    import soundfile

    from byola_hf import BYOLAFeatureExtractor
    from byola_hf.pretraining.data import scan_clips
    from byola_hf.stats import StatsArguments, compute_stats
    from byola_hf.superb.run import main as superb_main
    from byola_hf.tools.data import draw_rows

    from conftest import QUICK_TRAINER_FLAGS

    share = tmp_path / "share"
    share.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(share)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        clips = []
        for index in range(12):
            wav = io.BytesIO()
            tone = 0.1 * np.sin(np.arange(8000) * (0.05 + 0.1 * (index % 2)))
            soundfile.write(wav, tone.astype(np.float32), 16000, format="WAV")
            clips.append({"bytes": wav.getvalue(), "path": f"{index}.wav"})
        table = {"audio": clips, "label": ["up", "down"] * 6}
        datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio()).save_to_disk(str(share / "saved"))
        subprocess.run(["mount", "-o", "remount,ro", str(share)], check=True)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
        arguments = StatsArguments(
            str(small_model), str(share / "saved"), max_examples=8, output_dir=str(tmp_path / "s")
        )
        assert compute_stats(arguments).std > 0
        saved = datasets.load_from_disk(str(share / "saved"))
        assert len(draw_rows(saved, 5, seed=0)) == 5
        undecoded = saved.cast_column("audio", datasets.Audio(decode=False))
        assert scan_clips(undecoded, BYOLAFeatureExtractor(), "audio", with_moments=False).longest_samples == 8000
        superb_main(
            ["--task", "ks", "--dataset_name", str(share / "saved"), "--model_name_or_path", str(tmp_path / "s"),
             "--validation_split_percentage", "25", "--output_dir", str(tmp_path / "ks"), "--max_steps", "1",
             *QUICK_TRAINER_FLAGS]
        )  # fmt: skip
        assert sorted(path.name for path in (share / "saved").iterdir()) == [
            "data-00000-of-00001.arrow", "dataset_info.json", "state.json"
        ]  # fmt: skip
    finally:
        subprocess.run(["umount", "--lazy", str(share)], check=False)  # once the memory maps of its files close


def test_two_saved_folders_of_one_fingerprint_are_not_read_from_one_cache(tmp_path, small_model, monkeypatch):
    """`save_to_disk` keeps a dataset of paths' fingerprint while it stores their audio: two folders saved from the
    same paths, the files written again between the saves, share it. Their transforms, cached by that fingerprint in
    one folder of datasets' cache, gave the second folder the first one's statistics (and run-superb its log-mels).
    The cache is named by the Arrow files read too."""
    import datasets
    import soundfile

    from byola_hf.stats import StatsArguments, compute_stats

    clips = [str(tmp_path / f"{index}.wav") for index in range(2)]
    for level, folder in ((0.01, "quiet"), (0.5, "loud")):
        for clip in clips:
            soundfile.write(clip, level * np.sin(np.arange(16000) / 3.0).astype(np.float32), 16000)
        table = datasets.Dataset.from_dict({"audio": clips}).cast_column("audio", datasets.Audio())
        table.save_to_disk(str(tmp_path / folder))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    quiet, loud = (compute_stats(StatsArguments(str(small_model), str(tmp_path / f))) for f in ("quiet", "loud"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "another cache"))
    alone = compute_stats(StatsArguments(str(small_model), str(tmp_path / "loud")))
    assert (loud.mean, loud.std) == (alone.mean, alone.std) and abs(loud.mean - quiet.mean) > 1


def test_caches_are_named_by_the_code_that_made_them(tmp_path, monkeypatch):
    """The caches of transforms were named by the package's version and the corpora's by a number bumped by hand: an
    edited checkout read back the log-mels and moments its old code made. Both are named by byola_hf's source, as
    it was when the command started (review: hashed at the first cache, minutes into a run, an edit in between named
    the old code's output by the new code), with the versions of the packages that decode, resample and compute; an
    editor's broken lock link beside the sources is no source."""
    import shutil
    from pathlib import Path

    import datasets

    from byola_hf.tools import data

    package = Path(data.__file__).resolve().parents[1]
    copy = tmp_path / "byola_hf"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    unchanged = data.package_fingerprint(copy)
    (copy / ".#hear.py").symlink_to("nobody@host.1234")  # as Emacs leaves one while a file is edited
    assert data.package_fingerprint(copy) == unchanged == data.package_fingerprint(package)
    with open(copy / "stats" / "moments.py", "a") as source:
        source.write("# edited\n")
    edited = data.package_fingerprint(copy)
    assert edited != unchanged
    monkeypatch.setattr(Path, "read_bytes", lambda path: pytest.fail(f"{path} read after the start"))
    versions = data.package_versions(data.COMPUTING_PACKAGES)
    assert data.code_fingerprint() == outputs.fingerprint(source=unchanged, packages=versions)
    assert versions["soxr"] is not None and data.package_versions(("no-such-package",)) == {"no-such-package": None}
    dataset = datasets.Dataset.from_dict({"x": [1.0]})
    before = data.cache_file(dataset, "moments", 8)[0]
    monkeypatch.setattr(data, "code_fingerprint", lambda: edited)
    assert data.cache_file(dataset, "moments", 8)[0] != before


def test_a_saved_folder_in_datasets_cache_saved_again_is_other_data_and_a_rebuilt_cache_is_not(
    tmp_path, small_model, monkeypatch
):
    """A saved folder kept inside HF_DATASETS_CACHE was taken for datasets' own cache: its transforms were cached
    beside its files by the paths' fingerprint, which saving it again with other audio keeps, and the old statistics
    came back. And datasets' own cache files (a Hub or parquet dataset) were stamped into the run record, so a cache
    built again, or another machine's, refused an unchanged re-run."""
    import shutil

    import datasets
    import soundfile

    from byola_hf.stats import StatsArguments, compute_stats
    from byola_hf.tools import data

    cache = tmp_path / "cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    clips, saved, means = [str(tmp_path / f"{index}.wav") for index in range(2)], cache / "mine" / "saved", []
    for level in (0.01, 0.5):
        for clip in clips:
            soundfile.write(clip, level * np.sin(np.arange(16000) / 3.0).astype(np.float32), 16000)
        table = datasets.Dataset.from_dict({"audio": clips}).cast_column("audio", datasets.Audio())
        table.save_to_disk(str(saved))  # over the last save, in place
        means.append(compute_stats(StatsArguments(str(small_model), str(saved))).mean)
    assert abs(means[1] - means[0]) > 1
    stored = [{"bytes": open(clip, "rb").read(), "path": os.path.basename(clip)} for clip in clips]
    stored = datasets.Dataset.from_dict({"audio": stored}).cast_column("audio", datasets.Audio())
    stored.to_parquet(str(tmp_path / "clips.parquet"))  # the clips stored: a Hub-like source in datasets' own cache
    records = []
    for _ in range(2):  # built, then built again
        shutil.rmtree(cache, ignore_errors=True)
        loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "clips.parquet"), split="train")
        records.append(data.source_record(loaded.cast_column("audio", datasets.Audio()), "audio"))
    assert records[0] == records[1]


def test_evaluation_leaves_the_trainings_random_draws_alone(tmp_path):
    """Every evaluation drew from torch's generator (a DataLoader iterator draws a seed), so two runs that differed
    only in how often they evaluated (--eval_steps, --eval_on_start: flags that may change on a resume) ended with
    other weights: the later shuffles and dropout masks moved. byola_hf's Trainers evaluate with the state kept."""
    from transformers import Trainer, TrainingArguments

    from byola_hf.finetune.training import FinetuneTrainer
    from byola_hf.superb.run import SuperbTrainer
    from byola_hf.tools.cli import EvaluationLeavesRandomState

    class Dropped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.drop = torch.nn.Linear(4, 1), torch.nn.Dropout(0.5)

        def forward(self, x, labels):
            out = self.layer(self.drop(x)).squeeze(-1)
            return {"loss": ((out - labels) ** 2).mean(), "logits": out}

    class Kept(EvaluationLeavesRandomState, Trainer):
        pass

    generator = torch.Generator().manual_seed(1)
    data = [{"x": torch.randn(4, generator=generator), "labels": torch.tensor(1.0)} for _ in range(16)]

    def final_weights(trainer_class, evaluate: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = Dropped()
        args = TrainingArguments(
            str(tmp_path / f"{trainer_class.__name__}-{evaluate}"), per_device_train_batch_size=4, num_train_epochs=2,
            eval_strategy="steps" if evaluate else "no", eval_steps=1, save_strategy="no", report_to="none",
            use_cpu=True, disable_tqdm=True,
        )  # fmt: skip
        trainer_class(model=model, args=args, train_dataset=data, eval_dataset=data[:4]).train()
        return model.layer.weight.detach().clone()

    assert not torch.equal(final_weights(Trainer, True), final_weights(Trainer, False))  # what the mixin changes
    assert torch.equal(final_weights(Kept, True), final_weights(Kept, False))
    assert issubclass(FinetuneTrainer, EvaluationLeavesRandomState)
    assert issubclass(SuperbTrainer, EvaluationLeavesRandomState)

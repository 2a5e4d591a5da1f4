"""byola-convert: the command end to end, original key layouts of v1 and v2, refused files, and faults (NaN
weights, folders it does not own, full or read-only disks) that end in one line."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from byola_hf import BYOLAConfig, BYOLAModel
from byola_hf.convert_byola_checkpoint import build_parser, convert_byola_checkpoint, load_original_state_dict
from byola_hf.convert_byola_checkpoint import main as convert_main
from byola_hf.stats.cli import main as stats_main

from conftest import (
    assert_one_line,
    assert_rerun_refused_unless_it_may_change,
    console_script,
    every_flag,
    run_main,
)


def mounted_tmpfs(mount_point: Path, options: str):
    """Mount a tmpfs with `options` at `mount_point` (skipped where mounting is not allowed); unmount after."""
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


@pytest.fixture
def read_only_disk(tmp_path):
    """A read-only tmpfs: a real read-only file system, which even root cannot write."""
    yield from mounted_tmpfs(tmp_path / "read_only", "size=1m,ro")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs: a real full disk."""
    yield from mounted_tmpfs(tmp_path / "tiny", "size=2m")


def test_converter_cli_end_to_end(tmp_path, real512_checkpoint, golden, capsys):
    output = tmp_path / "byola-512"
    result = subprocess.run(
        [
            sys.executable,
            console_script("byola-convert"),
            str(real512_checkpoint),
            str(output),
            "--mean",
            "-8.5",
            "--std",
            "4.5",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    print(result.stdout)
    assert "feature_d=512" in result.stdout and "Check against the original network" in result.stdout
    assert {p.name for p in output.iterdir()} >= {"model.safetensors", "config.json", "preprocessor_config.json"}
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "byola" and config["feature_d"] == 512
    assert (config["mean"], config["std"]) == (-8.5, 4.5)
    model = AutoModel.from_pretrained(output)
    original = load_original_state_dict(real512_checkpoint)
    torch.testing.assert_close(model.fc2.weight, original["fc.3.weight"], rtol=0, atol=0)
    convert_main([str(real512_checkpoint), str(tmp_path / "no-stats")])  # in-process: the smoke run is above
    assert "No normalisation statistics yet" in capsys.readouterr().out


def test_converter_rejects_bad_files(tmp_path, real512_checkpoint, capsys):
    """Each bad file ends in one line naming it and exit 2, and pickled code never runs. Each case calls the command's
    `main` in this process, which is what the installed command runs (its smoke run is the end-to-end test above)."""
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(real512_checkpoint.read_bytes()[:5000])
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, foreign)
    text = tmp_path / "notes.pth"
    text.write_text("hello")

    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    pickled = tmp_path / "pickled.pth"
    torch.save({"fc.0.weight": Payload()}, pickled)
    with pytest.raises(SystemExit) as exit_info:
        convert_main([str(pickled), str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert_one_line(exit_info.value.code, printed.err, "byola-convert", "pickles code, which is refused")
    assert "pickled code ran" not in printed.out
    for path, message in [
        (truncated, "not a loadable PyTorch checkpoint"),
        (foreign, "not a BYOL-A (AudioNTT2020 / AudioNTT2022) checkpoint: missing features.0.weight"),
        (text, "which is refused): KeyError: "),  # the error's type: its text alone was a bare number
        (tmp_path / "missing.pth", "missing.pth: check the path."),  # no stray full stop before the colon
    ]:
        code, stderr = run_main(convert_main, [path, tmp_path / "out"], capsys)
        assert_one_line(code, stderr, "byola-convert", message)
    code, stderr = run_main(convert_main, [real512_checkpoint, tmp_path / "o", "--mean", "1"], capsys)
    assert_one_line(code, stderr, "byola-convert", "--mean and --std go together")


def test_converter_accepts_original_key_variants(tmp_path, random2048_checkpoint):
    state_dict = torch.load(random2048_checkpoint, weights_only=True)
    reference = load_original_state_dict(random2048_checkpoint)
    layered_names = {
        "features.0": "conv1.0",
        "features.1": "conv1.1",
        "features.4": "conv2.0",
        "features.5": "conv2.1",
        "features.8": "conv3.0",
        "features.9": "conv3.1",
        "fc.0": "fc1.0",
        "fc.3": "fc2.1",
    }
    variants = {
        "wrapped": {"state_dict": state_dict},
        "prefixed": {f"model.online_encoder.{k}": v for k, v in state_dict.items()},
        "layered": {
            layered_names[".".join(k.split(".")[:2])] + "." + k.split(".")[2]: v for k, v in state_dict.items()
        },
    }
    for name, variant in variants.items():
        path = tmp_path / f"{name}.pth"
        torch.save(variant, path)
        loaded = load_original_state_dict(path)
        assert loaded.keys() == reference.keys(), name
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), name
    model, _, check = convert_byola_checkpoint(tmp_path / "layered.pth")
    assert model.config.feature_d == 2048 and check.relative_diff < 1e-5  # the converter's own tolerance
    # The check itself can fail: one weight off by 0.5 is seen (a check comparing the model with itself passed).
    from byola_hf.convert_byola_checkpoint import verify_conversion

    with torch.no_grad():
        model.fc2.bias[0] += 0.5
    assert verify_conversion(model, reference).max_abs_diff > 0.25


def test_converter_detects_the_version_and_accepts_v2_layouts(
    tmp_path, random3072_checkpoint, random2048_checkpoint, capsys
):
    original = torch.load(random3072_checkpoint, weights_only=True)
    layouts = {
        "plain.pth": original,
        "state_dict.pth": {"state_dict": original},
        "model.pth": {
            "model": {f"model.{key}": value for key, value in original.items()},
            "optimizer": {"lr": torch.tensor(0.1)},
        },
        "extra.pth": {
            **{f"model.{key}": value for key, value in original.items()},
            "projector.0.weight": torch.zeros(3, 3),
        },
    }
    for name, content in layouts.items():
        torch.save(content, tmp_path / name)
        model, _, check = convert_byola_checkpoint(tmp_path / name)
        assert model.config.variant == "AudioNTT2022" and check.relative_diff < 1e-5, name
    v1, _, _ = convert_byola_checkpoint(random2048_checkpoint)
    assert (v1.config.variant, v1.config.num_conv_layers, v1.config.feature_d) == ("AudioNTT2020", 3, 2048)

    v1_tensors = load_original_state_dict(random2048_checkpoint)
    mixed = {
        **original,
        **{k: v for k, v in v1_tensors.items() if k.startswith("features.8") or k.startswith("features.9")},
    }
    truncated = {k: v for k, v in original.items() if k != "fc.3.bias"}
    for name, content, message in (
        ("mixed.pth", mixed, "a AudioNTT2020 network .* Is it a mix of v1 and v2 tensors"),
        ("truncated.pth", truncated, "not a BYOL-A .* checkpoint: missing fc.3.bias"),
    ):
        torch.save(content, tmp_path / name)
        with pytest.raises(ValueError, match=message):
            convert_byola_checkpoint(tmp_path / name)
    convert_main([str(random3072_checkpoint), str(tmp_path / "cli")])
    assert "AudioNTT2022, feature_d=3072, 25 frames/s" in capsys.readouterr().out
    assert '"variant": "AudioNTT2022"' in (tmp_path / "cli" / "config.json").read_text()
    assert "AudioNTT2022" in (tmp_path / "cli" / "README.md").read_text()


def test_a_learner_holding_online_and_target_encoders_is_refused(random2048_checkpoint, tmp_path, capsys):
    """A BYOL learner's state dict (the encoder as `net.` and `online_encoder.net.`, then the target encoder) was
    converted without a word with the target's weights, the last under each key, not BYOL-A's online encoder."""
    state_dict = torch.load(random2048_checkpoint, weights_only=True)
    learner = {f"learner.{name}.{k}": v for name in ("net", "online_encoder.net") for k, v in state_dict.items()}
    torch.save({"state_dict": learner}, tmp_path / "online.ckpt")  # one module under two names: converted
    reference = load_original_state_dict(random2048_checkpoint)
    loaded = load_original_state_dict(tmp_path / "online.ckpt")
    assert loaded.keys() == reference.keys() and all(torch.equal(loaded[k], reference[k]) for k in reference)
    learner.update({f"learner.target_encoder.net.{k}": v + 1 for k, v in state_dict.items()})
    torch.save({"state_dict": learner}, tmp_path / "learner.ckpt")
    code, stderr = run_main(convert_main, [tmp_path / "learner.ckpt", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-convert", "holds two networks", "target_encoder", "the online one")
    assert not (tmp_path / "out").exists()


def test_nan_weights_are_refused_at_conversion(real512_checkpoint, tmp_path, capsys):
    state_dict = torch.load(real512_checkpoint, map_location="cpu", weights_only=True)
    key = next(k for k in state_dict if k.endswith("1.weight") and state_dict[k].ndim == 1)  # a BatchNorm weight
    state_dict[key] = state_dict[key].clone()
    state_dict[key][3] = float("nan")
    damaged = tmp_path / "damaged.pth"
    torch.save(state_dict, damaged)
    with pytest.raises(ValueError, match="NaN or infinite values"):
        convert_byola_checkpoint(damaged)
    code, stderr = run_main(convert_main, [damaged, tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-convert", "NaN or infinite values", "download it again")
    assert not (tmp_path / "out").exists()


def test_zero_byte_checkpoint_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    code, stderr = run_main(convert_main, [empty, tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-convert", "not a loadable PyTorch checkpoint")


def test_converter_never_touches_a_folder_it_does_not_own(real512_checkpoint, tmp_path, capsys):
    """The user's files stay; the same conversion re-runs; another one refuses until --overwrite_output_dir."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.wav").write_bytes(b"RIFF user data")
    code, stderr = run_main(convert_main, [real512_checkpoint, folder, "--no_verify"], capsys)
    assert_one_line(code, stderr, "byola-convert", "did not write", "nothing in it was changed")
    assert sorted(os.listdir(folder)) == ["notes.wav"] and (folder / "notes.wav").read_bytes() == b"RIFF user data"

    out = tmp_path / "model"
    arguments = [real512_checkpoint, out, "--no_verify", "--mean", "-9", "--std", "4"]
    convert_main([str(a) for a in arguments])
    convert_main([str(a) for a in arguments])  # the same run again: allowed
    code, stderr = run_main(convert_main, [*arguments[:3], "--mean", "-8", "--std", "4"], capsys)
    assert_one_line(code, stderr, "byola-convert", "other inputs or arguments", "--overwrite_output_dir")
    assert BYOLAConfig.from_pretrained(out).mean == -9
    convert_main([str(a) for a in [*arguments[:3], "--mean", "-8", "--std", "4", "--overwrite_output_dir"]])
    assert BYOLAConfig.from_pretrained(out).mean == -8


@pytest.mark.parametrize("error_number", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_disk_errors_while_saving_are_one_line(error_number, real512_checkpoint, tmp_path, capsys, monkeypatch):
    """A full, read-only or forbidden disk while saving: one line, and nothing that loads as a model is left."""

    def failing_save(*args, **kwargs):
        raise OSError(error_number, os.strerror(error_number), str(tmp_path / "out" / "model.safetensors"))

    monkeypatch.setattr(BYOLAModel, "save_pretrained", failing_save)
    code, stderr = run_main(convert_main, [real512_checkpoint, tmp_path / "out", "--no_verify"], capsys)
    assert_one_line(code, stderr, "byola-convert", os.strerror(error_number).split()[0])
    assert not (tmp_path / "out" / "config.json").exists()


def test_read_only_disk_is_one_line(real512_checkpoint, small_model, speech, read_only_disk, capsys):
    code, stderr = run_main(convert_main, [real512_checkpoint, read_only_disk / "model", "--no_verify"], capsys)
    assert_one_line(code, stderr, "byola-convert", "Read-only file system", "writable disk")
    arguments = ["--model_name_or_path", small_model, "--dataset_name", speech.parent]
    code, stderr = run_main(stats_main, [*arguments, "--output_dir", read_only_disk / "stats"], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "Read-only file system")


def test_full_disk_is_one_line_and_leaves_no_model(real512_checkpoint, tiny_disk, capsys):
    """The 512-d weights (about 10 MB) do not fit on a 2 MiB disk: the command says so in one line."""
    code, stderr = run_main(convert_main, [real512_checkpoint, tiny_disk / "model", "--no_verify"], capsys)
    assert_one_line(code, stderr, "byola-convert", "No space left on device")
    assert not (tiny_disk / "model" / "config.json").exists()
    assert not [p for p in (tiny_disk / "model").iterdir() if p.name.startswith(".staging")]


def test_unknown_flag_is_one_line(capsys):
    code, stderr = run_main(convert_main, ["a.pth", "out", "--no_such_flag"], capsys)
    assert_one_line(code, stderr, "byola-convert", "--no_such_flag", "byola-convert --help")


class PickledCode:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_refusing_pickled_code_gives_no_advice_to_run_it(tmp_path, capsys):
    """The refusal of a file that pickles code repeated torch's advice to load it with `weights_only=False`, which
    would run that code: byola-convert never does. The line names what the file pickles instead."""
    pickled = tmp_path / "pickled.pth"
    torch.save({"fc.0.weight": PickledCode()}, pickled)
    code, stderr = run_main(convert_main, [pickled, tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-convert", "pickles code, which is refused", "Unsupported global")
    assert "weights_only" not in stderr and "pickled code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("index, name", every_flag(build_parser()))
def test_a_rerun_with_any_flag_changed_is_refused_unless_it_may_change(index, name, tmp_path):
    """byola-convert's record holds the checkpoint and every flag of its dataclass but the shared may-change list;
    the Hub's flags (outside the record) are all on that list."""
    from byola_hf.convert_byola_checkpoint import run_record
    from byola_hf.tools.outputs import MAY_CHANGE_ON_RESUME

    arguments = build_parser().parse_args_into_dataclasses(args=["model.pth", str(tmp_path / "out")])
    if index == 1:  # PushArguments: what happens after the conversion, never in its outputs
        assert name in MAY_CHANGE_ON_RESUME
        return
    assert_rerun_refused_unless_it_may_change(
        lambda args: run_record(args, "model.pth"), arguments[0], name, MAY_CHANGE_ON_RESUME, tmp_path
    )


def test_converting_again_keeps_statistics_computed_in_place(real512_checkpoint, speech, tmp_path, capsys):
    """byola-convert re-run as written (a script, the README's line) into its folder after byola-compute-stats saved
    a task's statistics there in place put the conversion's own back (--mean/--std given, or none) without a word:
    the next commands ran on VoxCeleb's statistics, or none. Refused now; --overwrite_output_dir replaces them; a
    re-run over the conversion's own statistics still resumes."""
    output = tmp_path / "byola-512"
    given = [str(real512_checkpoint), str(output), "--mean", "-8.5", "--std", "4.5", "--no_verify"]
    convert_main(given)
    convert_main(given)  # the same conversion again: nothing of anyone else's to keep
    stats_main(["--model_name_or_path", str(output), "--dataset_name", str(speech.parent)])
    computed = BYOLAConfig.from_pretrained(output)
    assert computed.mean != -8.5
    code, stderr = run_main(convert_main, given, capsys)
    assert_one_line(code, stderr, "byola-convert", "holds statistics computed since it was converted", "--overwrite")
    assert BYOLAConfig.from_pretrained(output).mean == computed.mean
    convert_main([*given, "--overwrite_output_dir"])
    assert BYOLAConfig.from_pretrained(output).mean == -8.5

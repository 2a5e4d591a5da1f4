"""Faults users meet, through the API and the commands: each ends in one clear line (exit code 2) or a correct
result, never lost data, a traceback or a silently wrong number."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from byola_hf import BYOLAConfig, BYOLAFeatureExtractor, BYOLAModel
from byola_hf.audio import load_audio
from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint
from byola_hf.convert_byola_checkpoint import main as convert_main
from byola_hf.stats.cli import main as stats_main
from byola_hf.tools import outputs

from conftest import console_script


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
    config = BYOLAConfig(feature_d=64, mean=-8.0, std=4.0)
    directory = tmp_path_factory.mktemp("small_model")
    torch.manual_seed(0)
    BYOLAModel(config).save_pretrained(directory)
    BYOLAFeatureExtractor.from_model_config(config).save_pretrained(directory)
    return directory


# --- the converter -------------------------------------------------------------------------------------------------


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


def mounted_tmpfs(mount_point: Path, options: str):
    """Mount a tmpfs with `options` at `mount_point` (skipped where mounting is not allowed); unmount after."""
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs: a real full disk."""
    yield from mounted_tmpfs(tmp_path / "tiny", "size=2m")


@pytest.fixture
def read_only_disk(tmp_path):
    """A read-only tmpfs: a real read-only file system, which even root cannot write."""
    yield from mounted_tmpfs(tmp_path / "read_only", "size=1m,ro")


def test_read_only_disk_is_one_line(real512_checkpoint, small_model, speech, read_only_disk, capsys):
    code, stderr = run_main(convert_main, [real512_checkpoint, read_only_disk / "model", "--no_verify"], capsys)
    assert_one_line(code, stderr, "byola-convert", "Read-only file system", "writable disk")
    arguments = ["--model_name_or_path", small_model, "--dataset_name", speech.parent]
    code, stderr = run_main(stats_main, [*arguments, "--output_dir", read_only_disk / "stats"], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "Read-only file system")


def test_full_disk_is_one_line_and_leaves_no_model(real512_checkpoint, tiny_disk):
    """The 512-d weights (about 10 MB) do not fit on a 2 MiB disk: the real console script says so in one line."""
    result = subprocess.run(
        [console_script("byola-convert"), str(real512_checkpoint), str(tiny_disk / "model"), "--no_verify"],
        capture_output=True,
        text=True,
    )
    assert_one_line(result.returncode, result.stderr, "byola-convert", "No space left on device")
    assert not (tiny_disk / "model" / "config.json").exists()
    assert not [p for p in (tiny_disk / "model").iterdir() if p.name.startswith(".staging")]


def test_unknown_flag_is_one_line(capsys):
    code, stderr = run_main(convert_main, ["a.pth", "out", "--no_such_flag"], capsys)
    assert_one_line(code, stderr, "byola-convert", "--no_such_flag", "byola-convert --help")


# --- owned folders, atomic writes ------------------------------------------------------------------------------------


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


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "results.json"
    outputs.write_json_atomic(target, {"accuracy": 0.5})
    with pytest.raises(RuntimeError):
        with outputs.atomic_path(target) as staged:
            staged.write_text('{"accuracy": ')
            raise RuntimeError("killed mid-write")
    assert target.read_text().startswith('{\n  "accuracy": 0.5') and os.listdir(tmp_path) == ["results.json"]


# --- audio in --------------------------------------------------------------------------------------------------------


def test_rate_zero_is_an_error_not_16_khz(small_model):
    from transformers import pipeline

    extractor = pipeline("byola-audio-embedding", model=str(small_model))
    waveform = np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32)
    for rate in (0, -16000, 16000.5):
        with pytest.raises(ValueError, match="positive whole number"):
            extractor(waveform, sampling_rate=rate)
    with pytest.raises(ValueError, match="positive whole number"):
        BYOLAFeatureExtractor()(waveform, sampling_rate=0)


def test_header_only_wav_is_refused_by_path(tmp_path, small_model):
    path = tmp_path / "header_only.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
    with pytest.raises(ValueError, match=f"{path}.* is empty"):
        load_audio(str(path), 16000)


def test_non_utf8_file_name_is_named(tmp_path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.wav")  # as os.listdir gives a Latin-1 name
    with open(name, "wb") as handle:
        handle.write(b"not audio")
    with pytest.raises(ValueError, match=r"caf\\udce9\.wav"):
        load_audio(name, 16000)


def test_big_endian_and_read_only_arrays_give_the_same_features(speech):
    waveform, rate = sf.read(speech, dtype="float32")
    fe = BYOLAFeatureExtractor()
    waveform = load_audio(waveform, 16000, rate)
    expected = fe(waveform, sampling_rate=16000, return_tensors="np")["input_features"]
    big_endian = waveform.astype(">f4")
    read_only = np.frombuffer(waveform.tobytes(), dtype=np.float32)
    for variant in (big_endian, read_only):
        np.testing.assert_array_equal(
            fe(variant, sampling_rate=16000, return_tensors="np")["input_features"], expected
        )


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        ({"pad_to_multiple_of": 0}, "pad_to_multiple_of must be a positive whole number"),
        ({"pad_to_multiple_of": -3}, "pad_to_multiple_of must be a positive whole number"),
        ({"padding": "max_length", "max_length": 0}, "max_length must be a positive whole number"),
    ],
)
def test_feature_extractor_arguments(arguments, fragment):
    with pytest.raises(ValueError, match=fragment):
        BYOLAFeatureExtractor()(np.zeros(16000, np.float32), sampling_rate=16000, **arguments)


@pytest.mark.parametrize(
    "batch, fragment",
    [
        (torch.zeros(2, 16000, device="meta"), "'meta' device"),
        (torch.zeros(16000, device="meta"), "'meta' device"),
        (np.zeros((0, 16000), np.float32), "empty batch"),
        ([], "empty batch"),
    ],
)
def test_feature_extractor_refuses_batches_without_samples(batch, fragment):
    with pytest.raises(ValueError, match=fragment):
        BYOLAFeatureExtractor()(batch, sampling_rate=16000)


def test_preprocessor_config_must_match_the_model_config(small_model, tmp_path):
    from transformers import AutoFeatureExtractor

    copy = tmp_path / "model"
    shutil.copytree(small_model, copy)
    edited = BYOLAFeatureExtractor(hop_length=320)
    edited.save_pretrained(copy)
    with pytest.raises(ValueError, match=r"hop_length=320 \(config.json: 160\)"):
        AutoFeatureExtractor.from_pretrained(copy)


def test_hear_faults(small_model):
    from byola_hf import hear

    with pytest.raises(ValueError, match="Could not load a BYOL-A model from '/nonexistent/model'"):
        hear.load_model("/nonexistent/model")
    model = hear.load_model(str(small_model))
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\), both at least 1"):
        hear.get_scene_embeddings(torch.zeros(0, 16000), model)


# --- statistics ------------------------------------------------------------------------------------------------------


def test_stats_command_faults(small_model, speech, tmp_path, capsys):
    command = "byola-compute-stats"
    base = ["--model_name_or_path", small_model, "--output_dir", tmp_path / "with_stats"]
    code, stderr = run_main(stats_main, [*base, "--dataset_name", "audiofolder"], capsys)
    assert_one_line(code, stderr, command, "needs --data_dir")

    oga = tmp_path / "oga"
    oga.mkdir()
    shutil.copy(speech, oga / "speech.wav")
    sf.write(oga / "chime.oga", np.zeros(8000, np.float32), 16000, format="OGG")
    (oga / "metadata.csv").write_text("file_name,label\nspeech.wav,a\nchime.oga,b\n")
    code, stderr = run_main(stats_main, [*base, "--dataset_name", "audiofolder", "--data_dir", oga], capsys)
    assert_one_line(code, stderr, command, "would leave out 1 audio file", "chime.oga")

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(speech, bad / "speech.wav")
    (bad / "notes.wav").write_text("not audio")
    code, stderr = run_main(stats_main, [*base, "--dataset_name", bad], capsys)
    assert_one_line(code, stderr, command, "Could not decode audio", "notes.wav")

    damaged = tmp_path / "damaged_model"
    shutil.copytree(small_model, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, stderr = run_main(
        stats_main, ["--model_name_or_path", damaged, "--dataset_name", bad, "--output_dir", tmp_path / "o"], capsys
    )
    assert_one_line(code, stderr, command, "cannot be loaded", "convert them again")
    assert not (tmp_path / "o").exists()


def test_stats_into_a_folder_with_user_files_is_refused(small_model, speech, tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    shutil.copy(speech, folder / "speech.wav")
    code, stderr = run_main(
        stats_main, ["--model_name_or_path", small_model, "--dataset_name", folder, "--output_dir", folder], capsys
    )
    assert_one_line(code, stderr, "byola-compute-stats", "did not write")
    assert sorted(os.listdir(folder)) == ["speech.wav"]


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


def test_nan_weights_are_refused_at_load(small_model, tmp_path):
    """One NaN BatchNorm weight: an error at from_pretrained, never embeddings (a fused ReLU would map NaN to 0)."""
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(small_model, damaged)
    weights = load_file(damaged / "model.safetensors")
    key = next(name for name in weights if "batch_norm.weight" in name)
    weights[key][0] = float("nan")
    save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"hold NaN or infinite values \\({key}"):
        BYOLAModel.from_pretrained(damaged)


def test_numpy_attention_mask_is_a_clear_error(small_model):
    model = BYOLAModel.from_pretrained(small_model).eval()
    inputs = BYOLAFeatureExtractor()(np.zeros(16000, np.float32), sampling_rate=16000, return_tensors="pt")
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        model(inputs["input_features"], attention_mask=inputs["attention_mask"].numpy())


def test_former_config_names_still_load_with_a_warning(small_model, tmp_path):
    """Directories saved before the names agreed with transformers' (sample_rate, freeze_base) load as before."""
    import json

    old = tmp_path / "old"
    shutil.copytree(small_model, old)
    config = json.loads((old / "config.json").read_text())
    config["sample_rate"] = config.pop("sampling_rate")
    config["freeze_base"] = config.pop("freeze_base_model")
    (old / "config.json").write_text(json.dumps(config))
    with pytest.warns(FutureWarning, match="use sampling_rate"):
        loaded = BYOLAConfig.from_pretrained(old)
    assert loaded.sampling_rate == 16000 and loaded.freeze_base_model is True
    with pytest.warns(FutureWarning, match="use sampling_rate"):
        assert loaded.sample_rate == 16000


# --- found by a fault trial of every command --------------------------------------------------------------------


def test_feature_extractor_refuses_impossible_front_ends():
    with pytest.raises(ValueError, match="hop_length must be a positive whole number"):
        BYOLAFeatureExtractor(hop_length=0)
    with pytest.raises(ValueError, match=r"f_max <= sampling_rate / 2"):
        BYOLAFeatureExtractor(f_max=20000)


def test_stats_names_short_clips_and_offers_the_flag_it_suggests(small_model, speech, tmp_path, capsys):
    folder = tmp_path / "short"
    folder.mkdir()
    shutil.copy(speech, folder / "speech.wav")
    sf.write(folder / "blip.wav", np.zeros(300, np.float32), 16000)
    base = ["--model_name_or_path", small_model, "--output_dir", tmp_path / "out", "--dataset_name"]
    code, stderr = run_main(stats_main, [*base, folder], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "blip.wav has 300 samples")
    (folder / "blip.wav").unlink()
    stats_main([str(a) for a in [*base, folder]])
    code, stderr = run_main(stats_main, [*base, folder, "--max_examples", "1"], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "--overwrite_output_dir")
    stats_main([str(a) for a in [*base, folder, "--max_examples", "1", "--overwrite_output_dir"]])
    assert BYOLAConfig.from_pretrained(tmp_path / "out").stats_provenance["max_examples"] == 1


def test_non_finite_audio_while_datasets_resamples_is_one_line(small_model, tmp_path, capsys):
    folder = tmp_path / "nan"
    folder.mkdir()
    waveform = np.zeros(22050, np.float32)
    waveform[100] = np.nan
    sf.write(folder / "bad.wav", waveform, 22050, subtype="FLOAT")
    arguments = ["--model_name_or_path", small_model, "--dataset_name", folder, "--output_dir", tmp_path / "out"]
    code, stderr = run_main(stats_main, arguments, capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "NaN or infinite")


def test_missing_model_folder_is_named(tmp_path, speech, capsys):
    arguments = ["--model_name_or_path", tmp_path / "nowhere", "--dataset_name", speech.parent]
    code, stderr = run_main(stats_main, [*arguments, "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-compute-stats", "No model folder at")


def test_mini_sets_never_overwrite_what_they_did_not_write(tmp_path, capsys):
    from byola_hf.superb.mini_sets import main as mini_main

    folder = tmp_path / "mine"
    (folder / "ks" / "train").mkdir(parents=True)
    (folder / "ks" / "train" / "00000.wav").write_bytes(b"the user's recording")
    code, stderr = run_main(mini_main, ["--task", "ks", "--output_dir", folder], capsys)
    assert_one_line(code, stderr, "byola-make-mini-superb", "did not write")
    assert (folder / "ks" / "train" / "00000.wav").read_bytes() == b"the user's recording"


def test_linear_eval_refuses_testing_on_the_training_folder(tmp_path, capsys):
    from byola_hf.linear_eval.cli import main as linear_main

    arguments = ["--train_dir", tmp_path, "--test_dir", tmp_path, "--label_column_name", "label"]
    code, stderr = run_main(linear_main, [*arguments, "--output_dir", tmp_path / "out"], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", "are the same folder")


def test_linear_eval_refuses_splits_embedded_by_different_models(small_model, speech, tmp_path, capsys):
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
    arguments = ["--train_dir", tmp_path / "train", "--test_dir", tmp_path / "test", "--label_column_name", "label"]
    code, stderr = run_main(linear_main, [*arguments, "--output_dir", tmp_path / "eval"], capsys)
    assert_one_line(code, stderr, "byola-linear-eval", "embedded by different models")

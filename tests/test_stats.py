"""Exact per-task statistics: datasets.map, num_proc, torchrun/gloo, saving into the config, errors."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoConfig, AutoModel

from byola_hf import BYOLAConfig, BYOLAFeatureExtractor
from byola_hf.stats import LogMelMoments, StatsArguments, compute_stats, load_audio_dataset
from byola_hf.stats.cli import build_parser
from byola_hf.stats.cli import main as stats_main

from conftest import (
    assert_one_line,
    assert_rerun_refused_unless_it_may_change,
    console_script,
    every_flag,
    run_main,
    run_two_ranks,
    slow,
)


SENTENCES = [
    "open the door",
    "turn on the lights in the kitchen",
    "yes",
    "what time is it",
    "stop",
    "play some music please",
    "the quick brown fox jumps over the lazy dog",
    "left",
]
RATES = [22050, 16000, 8000]


@pytest.fixture(scope="module")
def speech_folder(tmp_path_factory) -> Path:
    """A small real audiofolder: espeak-ng speech of mixed lengths and sampling rates, and digital silence."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run scripts/setup.sh")
    root = tmp_path_factory.mktemp("speech") / "data"
    train = root / "train"
    train.mkdir(parents=True)
    rows = ["file_name,label"]
    for index, sentence in enumerate(SENTENCES):
        raw = train / f"raw{index}.wav"
        subprocess.run(["espeak-ng", "-s", str(130 + 15 * index), "-w", str(raw), sentence], check=True)
        waveform, rate = sf.read(raw, dtype="float32")
        raw.unlink()
        target = RATES[index % len(RATES)]
        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=target) if target != rate else waveform
        sf.write(train / f"clip{index}.wav", waveform, target, subtype="FLOAT")
        rows.append(f"clip{index}.wav,{sentence.split()[0]}")
    sf.write(train / "silence.wav", np.zeros(12000, np.float32), 16000, subtype="FLOAT")
    rows.append("silence.wav,silence")
    (train / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def expected_stats(speech_folder):
    """Float64 numpy over the concatenated, unpadded log-mels of every example (decoded the same way)."""
    fe = BYOLAFeatureExtractor()
    dataset = load_audio_dataset("audiofolder", data_dir=str(speech_folder), sampling_rate=fe.sampling_rate)
    values = np.concatenate(
        [
            fe(example["audio"]["array"], sampling_rate=example["audio"]["sampling_rate"])["input_features"][0].ravel()
            for example in dataset
        ]
    ).astype(np.float64)
    return float(values.mean()), float(values.std()), len(dataset)


def assert_close(result, expected):
    mean, std, examples = expected
    assert result.num_examples == examples
    assert abs(result.mean - mean) <= 1e-9 * abs(mean), (result.mean, mean)
    assert abs(result.std - std) <= 1e-9 * std, (result.std, std)


def test_moments_merge_is_exact():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(-9, 5, size) for size in (1, 7, 1000, 3)]
    merged = LogMelMoments()
    for chunk in chunks:
        merged = merged.merge(LogMelMoments.from_values(chunk))
    everything = np.concatenate(chunks)
    assert merged.count == everything.size
    assert abs(merged.mean - everything.mean()) <= 1e-12 * abs(everything.mean())
    assert abs(merged.std - everything.std()) <= 1e-12 * everything.std()
    with pytest.raises(ValueError, match="empty set"):  # was a ZeroDivisionError
        _ = LogMelMoments().merge(LogMelMoments.from_values(np.zeros(0))).std


def test_running_estimate_is_the_s3prl_upstreams_calcnorm():
    """`--mode s3prl`'s estimate batch by batch in float64, as s3prl's byol_a `RunningNorm` computed it: the running
    mean of the batch means is updated first, then the running mean of each batch's mean squared deviation from that
    updated mean; the std is its square root; the first `max_updates` batches count. Before, only "below the exact
    mean" was checked, which measuring each batch against the mean before its update also gave."""
    from byola_hf.stats.moments import RunningNormEstimate

    rng = np.random.default_rng(0)
    batches = [rng.normal(-9 + k, 3 + k, (2, 4, 10 + 3 * k)) for k in range(4)]
    estimate, mean, variance = RunningNormEstimate(max_updates=3), 0.0, 0.0
    for k, batch in enumerate(batches[:3], start=1):
        mean += (batch.mean() - mean) / k
        variance += (np.mean((batch - mean) ** 2) - variance) / k
    for batch in batches:
        estimate.put(torch.from_numpy(batch))
    assert estimate.updates == 3
    assert abs(estimate.mean - mean) <= 1e-12 * abs(mean) and abs(estimate.std - np.sqrt(variance)) <= 1e-12
    silent = RunningNormEstimate()  # s3prl clamps the std to float32's [eps, max]: silence gives eps, not 0
    silent.put(torch.zeros(2, 4, 10))
    assert silent.std == float(np.finfo(np.float32).eps)


@pytest.mark.parametrize("num_proc", [None, 2])
def test_exact_stats_match_float64(speech_folder, expected_stats, random2048_dir, tmp_path, num_proc):
    result = compute_stats(
        StatsArguments(
            str(random2048_dir),
            "audiofolder",
            data_dir=str(speech_folder),
            num_proc=num_proc,
            batch_size=3,
            output_dir=str(tmp_path / "model"),
        )
    )
    print(f"\nnum_proc={num_proc}: mean={result.mean!r} std={result.std!r} expected {expected_stats[:2]}")
    assert_close(result, expected_stats)
    config = AutoConfig.from_pretrained(tmp_path / "model")
    assert (config.mean, config.std) == (result.mean, result.std)
    assert config.stats_provenance["num_examples"] == expected_stats[2]
    assert config.stats_provenance["num_frames"] == result.num_frames
    assert config.stats_provenance["split"] == "train" and config.stats_provenance["method"] == "exact"
    assert (
        config.stats_provenance["data_dir"] == str(speech_folder)
        and config.stats_provenance["dataset"] == "audiofolder"
    )
    assert result.num_values == config.stats_provenance["num_values"] == result.num_frames * 64
    # The seconds of audio read: every decoded clip's samples at 16 kHz (not its log-mel frames).
    dataset = load_audio_dataset("audiofolder", data_dir=str(speech_folder), sampling_rate=16000)
    assert result.audio_seconds == sum(len(example["audio"]["array"]) for example in dataset) / 16000
    model = AutoModel.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        outputs = model(torch.full((1, 64, 200), -9.0))
    assert outputs.pooler_output.shape == (1, 2048)


def test_unit_seconds_statistics_cover_the_cut_and_zero_padded_clips(speech_folder, random2048_dir, tmp_path):
    """--unit_seconds: the statistics of the clips as byola-extract --unit_seconds embeds them (and EVAR estimates
    them), cut or zero-padded to the unit, the padding's log(eps) values included: float64 numpy over those log-mels,
    recorded in the provenance and the run's record."""
    from byola_hf.stats.compute import run_record

    fe = BYOLAFeatureExtractor()
    dataset = load_audio_dataset("audiofolder", data_dir=str(speech_folder), sampling_rate=fe.sampling_rate)
    unit = 19200  # 1.2 s: longer than some clips, shorter than others
    clips = [example["audio"]["array"] for example in dataset]
    assert min(len(clip) for clip in clips) < unit < max(len(clip) for clip in clips)
    units = [np.pad(clip[:unit], (0, max(0, unit - len(clip)))) for clip in clips]
    values = np.concatenate([fe(clip, sampling_rate=16000)["input_features"][0].ravel() for clip in units])
    arguments = StatsArguments(
        str(random2048_dir), "audiofolder", data_dir=str(speech_folder), batch_size=3, unit_seconds=1.2,
        output_dir=str(tmp_path / "model"),
    )  # fmt: skip
    result = compute_stats(arguments)
    assert_close(result, (float(values.astype(np.float64).mean()), float(values.astype(np.float64).std()), 9))
    assert result.num_frames == len(units) * fe.num_frames(unit)
    assert AutoConfig.from_pretrained(tmp_path / "model").stats_provenance["unit_seconds"] == 1.2
    assert run_record(arguments)["arguments"]["unit_seconds"] == 1.2
    with pytest.raises(ValueError, match="--unit_seconds 0.05 is shorter than one output frame"):
        compute_stats(dataclasses.replace(arguments, unit_seconds=0.05, output_dir=str(tmp_path / "short")))
    assert not (tmp_path / "short").exists()


def test_unit_seconds_pads_a_clip_too_short_for_a_frame_as_extraction_does(random2048_dir, tmp_path):
    """A clip shorter than one log-mel frame (513 samples) was refused ("remove it from the data") even with
    --unit_seconds, which zero-pads it to the unit, as byola-extract --unit_seconds embeds it and EVAR pads it: the
    statistics of the units included it; float64 numpy over the padded units."""
    folder = tmp_path / "data" / "train"
    folder.mkdir(parents=True)
    clips = [np.random.default_rng(0).uniform(-0.5, 0.5, size).astype(np.float32) for size in (8000, 100)]
    for index, clip in enumerate(clips):
        sf.write(folder / f"clip{index}.wav", clip, 16000, subtype="FLOAT")
    fe = BYOLAFeatureExtractor()
    units = [np.pad(clip, (0, 8000 - len(clip))) for clip in clips]
    values = np.concatenate([fe(unit, sampling_rate=16000)["input_features"][0].ravel() for unit in units])
    result = compute_stats(
        StatsArguments(str(random2048_dir), "audiofolder", data_dir=str(tmp_path / "data"), unit_seconds=0.5)
    )
    assert_close(result, (float(values.astype(np.float64).mean()), float(values.astype(np.float64).std()), 2))
    with pytest.raises(ValueError, match="clip1.wav has 100 samples, fewer than the 513"):  # whole clips: refused
        compute_stats(StatsArguments(str(random2048_dir), "audiofolder", data_dir=str(tmp_path / "data")))


def test_unit_seconds_reports_the_seconds_of_audio_read(random2048_dir, tmp_path):
    """With --unit_seconds, `StatsResult.audio_seconds` (the command's "h of audio") counted the units, cuts and
    zero padding included: clips of 0.5 s and 6.25 ms with a unit of 2 s read as 4 s of audio. It is the audio as
    decoded, as byola-extract's `duration` and the whole-clip mode count it."""
    folder = tmp_path / "data" / "train"
    folder.mkdir(parents=True)
    for index, size in enumerate((8000, 100)):
        sf.write(folder / f"clip{index}.wav", np.full(size, 0.1, np.float32), 16000, subtype="FLOAT")
    result = compute_stats(
        StatsArguments(str(random2048_dir), "audiofolder", data_dir=str(tmp_path / "data"), unit_seconds=2.0)
    )
    assert result.audio_seconds == 8100 / 16000
    assert result.num_frames == 2 * BYOLAFeatureExtractor().num_frames(32000)  # the moments are the units'


def test_streaming_and_save_to_disk(speech_folder, expected_stats, random2048_dir, tmp_path):
    assert_close(
        compute_stats(StatsArguments(str(random2048_dir), "audiofolder", data_dir=str(speech_folder), streaming=True)),
        expected_stats,
    )
    import datasets

    saved = tmp_path / "saved"
    datasets.load_dataset("audiofolder", data_dir=str(speech_folder)).save_to_disk(str(saved))
    assert_close(compute_stats(StatsArguments(str(random2048_dir), str(saved))), expected_stats)


@slow
def test_torchrun_two_processes_equal_single(speech_folder, expected_stats, random2048_dir, tmp_path):
    output = tmp_path / "distributed"
    result = run_two_ranks(
        console_script("byola-compute-stats"),
        "--model_name_or_path",
        str(random2048_dir),
        "--dataset_name",
        "audiofolder",
        "--data_dir",
        str(speech_folder),
        "--batch_size",
        "2",
        "--output_dir",
        str(output),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    config = json.loads((output / "config.json").read_text())
    assert_close(
        type(
            "R",
            (),
            {"mean": config["mean"], "std": config["std"], "num_examples": config["stats_provenance"]["num_examples"]},
        ),
        expected_stats,
    )
    assert result.stdout.count("mean,std=") == 1  # only rank 0 reports


def test_cli_writes_in_place_and_prints(speech_folder, expected_stats, random2048_checkpoint, tmp_path):
    """Without --output_dir the statistics go into the model folder itself, which byola-convert wrote (its marker
    lists the files rewritten); a folder no byola_hf command wrote is refused (tests/test_faults.py)."""
    from byola_hf.convert_byola_checkpoint import main as convert_main

    model_dir = tmp_path / "model"
    convert_main([str(random2048_checkpoint), str(model_dir), "--no_verify"])
    result = subprocess.run(
        [
            sys.executable,
            console_script("byola-compute-stats"),
            "--model_name_or_path",
            str(model_dir),
            "--dataset_name",
            "audiofolder",
            "--data_dir",
            str(speech_folder),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    print(result.stdout)
    config = json.loads((model_dir / "config.json").read_text())
    assert f"mean,std={config['mean']},{config['std']}" in result.stdout
    assert_close(
        type("R", (), {"mean": config["mean"], "std": config["std"], "num_examples": expected_stats[2]}),
        expected_stats,
    )


def test_max_examples_is_reproducible(speech_folder, random2048_dir):
    runs = [
        compute_stats(
            StatsArguments(str(random2048_dir), "audiofolder", data_dir=str(speech_folder), max_examples=4, seed=seed)
        )
        for seed in (1, 1, 2)
    ]
    assert all(run.num_examples == 4 for run in runs)
    assert (runs[0].mean, runs[0].std) == (runs[1].mean, runs[1].std)
    assert (runs[0].mean, runs[0].num_frames) != (runs[2].mean, runs[2].num_frames)
    assert runs[0].provenance["max_examples"] == 4 and runs[0].provenance["seed"] == 1


def test_s3prl_mode_runs_and_differs(speech_folder, expected_stats, random2048_dir):
    estimate = compute_stats(
        StatsArguments(str(random2048_dir), "audiofolder", data_dir=str(speech_folder), mode="s3prl", batch_size=4)
    )
    print(
        f"\ns3prl running estimate: mean={estimate.mean:.4f} std={estimate.std:.4f}; "
        f"exact: mean={expected_stats[0]:.4f} std={expected_stats[1]:.4f}"
    )
    assert estimate.provenance["method"] == "s3prl"
    # zero padding pulls the running mean towards log(eps) ~ -15.9
    assert estimate.mean < expected_stats[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"audio_column_name": "speech"}, "has no column 'speech'; its columns are"),
        ({"audio_column_name": "label"}, "Column 'label' is not an audio column"),
        ({"split": "test"}, "Could not load split 'test'"),
        ({"model_name_or_path": "/nonexistent/model"}, "No model folder at /nonexistent/model"),
        ({"mode": "approximate"}, "mode must be 'exact' or 's3prl'"),
    ],
)
def test_bad_inputs(speech_folder, random2048_dir, kwargs, message):
    arguments = {
        "model_name_or_path": str(random2048_dir),
        "dataset_name": "audiofolder",
        "data_dir": str(speech_folder),
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        compute_stats(StatsArguments(**arguments))


def test_empty_split_is_refused(random2048_dir, tmp_path):
    import datasets

    empty = datasets.Dataset.from_dict({"audio": []}, features=datasets.Features({"audio": datasets.Value("string")}))
    empty.save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="is empty: there is nothing to work on"):
        compute_stats(StatsArguments(str(random2048_dir), str(tmp_path / "empty")))


def test_device_path_equals_the_cpu_numpy_path(speech_folder, expected_stats, random2048_dir):
    """--device runs the log-mels and their moments in torch on the device; on CPU it equals the numpy path."""
    result = compute_stats(
        StatsArguments(str(random2048_dir), "audiofolder", data_dir=str(speech_folder), batch_size=3, device="cpu")
    )
    assert_close(result, expected_stats)
    with pytest.raises(ValueError, match="forked map workers cannot share a GPU"):
        compute_stats(
            StatsArguments(str(random2048_dir), "audiofolder", data_dir=str(speech_folder), num_proc=2, device="cuda")
        )


def test_new_statistics_for_a_model_with_a_trained_head_are_refused(small_model, speech, tmp_path, capsys):
    """byola-compute-stats on a byola-run-superb output (in place, as its marker allowed, or copied to a new folder)
    replaced the statistics its head was trained with: the folder's results and card (whose task section it
    dropped) no longer described what the model predicts (a KS head's test accuracy 0.15 became 0.10), without a
    word. Refused before any work; its encoder alone is what takes a task's statistics."""
    from byola_hf import BYOLAForSequenceClassification, BYOLAModel
    from byola_hf.superb.run import COMMAND as SUPERB
    from byola_hf.superb.run import OUTPUT_PATTERNS
    from byola_hf.tools.outputs import MARKER

    trained = tmp_path / "trained"
    BYOLAForSequenceClassification.from_pretrained(small_model, num_labels=2).save_pretrained(trained)
    BYOLAFeatureExtractor.from_pretrained(small_model).save_pretrained(trained)
    (trained / MARKER).write_text(
        json.dumps({"command": SUPERB, "fingerprint": "f", "outputs": list(OUTPUT_PATTERNS)})
    )
    before = (trained / "config.json").read_text()
    for output in (trained, tmp_path / "copy"):
        arguments = ["--model_name_or_path", trained, "--dataset_name", speech.parent, "--output_dir", output]
        code, stderr = run_main(stats_main, arguments, capsys)
        assert_one_line(code, stderr, "byola-compute-stats", "holds a trained BYOLAForSequenceClassification head")
    assert (trained / "config.json").read_text() == before and not (tmp_path / "copy").exists()
    BYOLAModel.from_pretrained(trained).save_pretrained(tmp_path / "encoder")
    arguments = ["--model_name_or_path", tmp_path / "encoder", "--dataset_name", speech.parent]
    stats_main([str(a) for a in [*arguments, "--output_dir", tmp_path / "encoder-stats"]])
    assert BYOLAConfig.from_pretrained(tmp_path / "encoder-stats").stats_provenance["dataset"] == str(speech.parent)


def test_stats_command_faults(small_model, speech, tmp_path, capsys):
    command = "byola-compute-stats"
    base = ["--model_name_or_path", small_model, "--output_dir", tmp_path / "with_stats"]
    code, stderr = run_main(stats_main, [*base, "--dataset_name", "audiofolder"], capsys)
    assert_one_line(code, stderr, command, "needs --data_dir")
    code, stderr = run_main(stats_main, [*base, "--dataset_name", speech, "--batch_size", "0"], capsys)
    assert_one_line(code, stderr, command, "batch_size must be a positive whole number")

    oga = tmp_path / "oga"
    oga.mkdir()
    shutil.copy(speech, oga / "speech.wav")
    sf.write(oga / "chime.oga", np.zeros(8000, np.float32), 16000, format="OGG")
    (oga / "metadata.csv").write_text("file_name,label\nspeech.wav,a\nchime.oga,b\n")
    code, stderr = run_main(stats_main, [*base, "--dataset_name", "audiofolder", "--data_dir", oga], capsys)
    assert_one_line(code, stderr, command, "would leave out 1 audio file", "chime.oga")
    # A metadata file beside split folders: datasets read none of it and labelled each clip by its folder.
    split = tmp_path / "split"
    for folder in ("train", "test"):
        (split / folder).mkdir(parents=True)
        shutil.copy(speech, split / folder / "speech.wav")
    (split / "metadata.csv").write_text("file_name,label\ntrain/speech.wav,a\ntest/speech.wav,b\n")
    code, stderr = run_main(stats_main, [*base, "--dataset_name", "audiofolder", "--data_dir", split], capsys)
    assert_one_line(code, stderr, command, "metadata.csv lies beside split folders (test, train)", "in its folder")
    # Audio soundfile cannot decode was left out of a folder without a word (a folder, a glob or an audiofolder).
    (oga / "metadata.csv").unlink()
    (oga / "chime.oga").rename(oga / "voice memo.m4a")
    for source in (
        ["--dataset_name", oga],
        ["--dataset_name", f"{oga}/*"],
        ["--dataset_name", "audiofolder", "--data_dir", oga],
    ):
        code, stderr = run_main(stats_main, [*base, *source], capsys)
        assert_one_line(code, stderr, command, "1 audio file(s) soundfile cannot decode (voice memo.m4a)", "ffmpeg")

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(speech, bad / "speech.wav")
    (bad / "notes.wav").write_text("not audio")
    code, stderr = run_main(stats_main, [*base, "--dataset_name", bad], capsys)
    assert_one_line(code, stderr, command, "Could not read audio from", "notes.wav")

    damaged = tmp_path / "damaged_model"
    shutil.copytree(small_model, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, stderr = run_main(
        stats_main, ["--model_name_or_path", damaged, "--dataset_name", bad, "--output_dir", tmp_path / "o"], capsys
    )
    # the model's own message, once (it was wrapped in a second one: "(...download the model again.): convert them")
    assert_one_line(code, stderr, command, "model.safetensors is truncated or damaged", "download the model again.")
    assert "convert them again" not in stderr and not (tmp_path / "o").exists()


def test_stats_into_a_folder_with_user_files_is_refused(small_model, speech, tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    shutil.copy(speech, folder / "speech.wav")
    code, stderr = run_main(
        stats_main, ["--model_name_or_path", small_model, "--dataset_name", folder, "--output_dir", folder], capsys
    )
    assert_one_line(code, stderr, "byola-compute-stats", "did not write")
    assert sorted(os.listdir(folder)) == ["speech.wav"]


def test_a_rank_left_in_the_environment_without_a_launch_still_claims_the_folder(
    small_model, speech, tmp_path, capsys, monkeypatch
):
    """With RANK=1 but no torchrun launch (no WORLD_SIZE), the command computed on as the only process but skipped
    the output folder's claim as if rank 0 held it: it wrote its model files over a user's config.json, exit 0."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "config.json").write_text("the user's")
    (tmp_path / "audio").mkdir()
    shutil.copy(speech, tmp_path / "audio" / "speech.wav")
    code, stderr = run_main(
        stats_main,
        ["--model_name_or_path", small_model, "--dataset_name", tmp_path / "audio", "--output_dir", folder],
        capsys,
    )
    assert_one_line(code, stderr, "byola-compute-stats", "did not write")
    assert sorted(os.listdir(folder)) == ["config.json"] and (folder / "config.json").read_text() == "the user's"


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


def test_a_copy_takes_the_model_files_only(small_model, speech, tmp_path):
    """Into a new folder the command copies the model directory's own files, not another command's run that shares
    the folder: a pre-trained model's checkpoints and run record, copied, made byola-pretrain take the copy for its
    run, resume there and write the pre-training statistics over the task's."""
    model = tmp_path / "pretrained"
    shutil.copytree(small_model, model)
    (model / "checkpoint-3").mkdir()
    (model / "checkpoint-3" / "model.safetensors").write_text("learner")
    for name in ("pretraining_statistics.json", "trainer_state.json", "train_results.json", "notes.txt"):
        (model / name).write_text("{}")
    (model / "modeling_byola.py").write_text("# the code saved for trust_remote_code")
    stats_main(["--model_name_or_path", str(model), "--dataset_name", str(speech.parent), "--output_dir",
                str(tmp_path / "task")])  # fmt: skip
    copied = {path.name for path in (tmp_path / "task").iterdir()}
    model_files = {path.name for path in small_model.iterdir()} | {"modeling_byola.py", "README.md"}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= model_files
    assert copied == model_files | {".byola_hf_output.json"}


@pytest.mark.parametrize("index, name", every_flag(build_parser()))
def test_a_rerun_with_any_flag_changed_is_refused_unless_it_may_change(index, name, tmp_path):
    """byola-compute-stats' record (in an --output_dir of its own) holds every flag of its dataclass but its
    may-change list: the shared one, and the map workers and the device, which change the rounding of the merged
    moments only (--streaming and --batch_size are recorded: they change the subset drawn and s3prl's estimate). The
    Hub's flags, outside the record, are all on the shared list."""
    from byola_hf.stats.compute import MAY_CHANGE, run_record
    from byola_hf.tools.outputs import MAY_CHANGE_ON_RESUME

    arguments = build_parser().parse_args_into_dataclasses(
        args=["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", str(tmp_path / "run")]
    )
    assert MAY_CHANGE - MAY_CHANGE_ON_RESUME == {"num_proc", "device"}
    if index == 1:  # PushArguments: what happens after the run, never in its outputs
        assert name in MAY_CHANGE_ON_RESUME
        return
    assert_rerun_refused_unless_it_may_change(run_record, arguments[0], name, MAY_CHANGE, tmp_path)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--seed", "1"], "--seed only draws the --max_examples subset"),
        (["--num_proc", "2", "--streaming"], "--num_proc has no effect with --streaming"),
        (["--num_proc", "2", "--mode", "s3prl"], "--num_proc has no effect with --mode s3prl"),
        (["--device", "cpu", "--mode", "s3prl"], "--device has no effect with --mode s3prl"),
        (["--unit_seconds", "1", "--mode", "s3prl"], "--unit_seconds has no effect with --mode s3prl"),
        (["--overwrite_output_dir"], "--overwrite_output_dir only replaces an earlier run in an --output_dir"),
        (["--output_dir", "{model}", "--overwrite_output_dir"], "--overwrite_output_dir only replaces"),
        (["--hub_model_id", "user/x"], "--hub_model_id only applies to --push_to_hub"),
        (["--public"], "--public only applies to --push_to_hub"),
    ],
)
def test_a_flag_the_others_make_of_no_effect_is_refused(small_model, speech, tmp_path, capsys, arguments, message):
    """Each was silently ignored: a --seed without a subset to draw, workers a stream or the running estimate never
    fork, a device the running estimate never uses, an overwrite of a run the in-place update has not, Hub flags
    without a push."""
    copy = tmp_path / "model"
    shutil.copytree(small_model, copy)
    before = sorted((path.name, path.stat().st_mtime_ns) for path in copy.iterdir())
    given = [argument.format(model=copy) for argument in arguments]
    code, stderr = run_main(
        stats_main, ["--model_name_or_path", copy, "--dataset_name", speech.parent, *given], capsys
    )
    assert_one_line(code, stderr, "byola-compute-stats", message)
    assert sorted((path.name, path.stat().st_mtime_ns) for path in copy.iterdir()) == before


def test_max_examples_without_a_seed_draws_with_the_default_seed(speech_folder, random2048_dir):
    """--seed's default is now 'not given' (so that one given without --max_examples is refused): a subset drawn
    without it is the one of seed 42, recorded as such."""
    from byola_hf.stats.compute import DEFAULT_SEED

    folder = {"data_dir": str(speech_folder), "max_examples": 4}
    default = compute_stats(StatsArguments(str(random2048_dir), "audiofolder", **folder))
    given = compute_stats(StatsArguments(str(random2048_dir), "audiofolder", **folder, seed=DEFAULT_SEED))
    assert DEFAULT_SEED == 42 and default.provenance["seed"] == 42
    assert (default.mean, default.std, default.num_frames) == (given.mean, given.std, given.num_frames)


def test_statistics_in_place_refuse_a_model_folder_with_files_no_command_wrote(small_model, speech, tmp_path, capsys):
    """In place (--output_dir the model folder) the command rewrites config.json, the preprocessor config and
    README.md: a folder the user saved, with a README of their own, is refused and left as it was (skipping the
    check survived: it rewrote the user's card)."""
    model = tmp_path / "mine"
    shutil.copytree(small_model, model)
    (model / "README.md").write_text("my own notes")
    before = {path.name: path.read_bytes() for path in model.iterdir()}
    code, stderr = run_main(
        stats_main, ["--model_name_or_path", model, "--dataset_name", speech.parent, "--output_dir", model], capsys
    )
    assert_one_line(code, stderr, "byola-compute-stats", "holds files no byola_hf command wrote (", "README.md")
    assert {path.name: path.read_bytes() for path in model.iterdir()} == before


def test_statistics_in_place_into_a_folder_that_cannot_be_written_are_refused_first(
    small_model, speech, tmp_path, capsys
):
    """Saving in place into a model folder on a read-only file system (or another user's) failed with 'Permission
    denied' after the whole computation; refused before it, naming --output_dir."""
    stats_main([str(a) for a in ["--model_name_or_path", small_model, "--dataset_name", speech.parent,
                                 "--output_dir", tmp_path / "ours"]])  # fmt: skip
    view = tmp_path / "read_only"
    view.mkdir()
    if subprocess.run(
        ["mount", "--bind", "-o", "ro", str(tmp_path / "ours"), str(view)], capture_output=True
    ).returncode:
        pytest.skip("cannot bind-mount a read-only view here")
    try:
        if os.access(view, os.W_OK) and not subprocess.run(["touch", str(view / "x")], capture_output=True).returncode:
            pytest.skip("the bind mount is not read-only here")
        code, stderr = run_main(stats_main, ["--model_name_or_path", view, "--dataset_name", speech.parent], capsys)
        assert_one_line(code, stderr, "byola-compute-stats", f"{view} cannot be written (", "--output_dir NEW_FOLDER")
    finally:
        subprocess.run(["umount", str(view)], check=False)

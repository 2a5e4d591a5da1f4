"""byola-extract: embeddings of an audiofolder equal the model's example by example; workers, resumption, bad audio."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoModel

from byola_hf import BYOLAFeatureExtractor
from byola_hf.extract import extract, extract_embeddings, load_embeddings
from byola_hf.pipelines import load_audio

from conftest import PROJECT_ROOT, run_torchrun


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    """Two labels; 16 kHz mono, 44.1 kHz stereo and 22.05 kHz clips of several lengths; one corrupt, one empty."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    specs = [
        ("yes", 16000, 1, 1.0),
        ("yes", 44100, 2, 0.7),
        ("no", 22050, 1, 2.3),
        ("no", 16000, 2, 0.3),
        ("yes", 48000, 1, 1.6),
    ]
    for index, (label, rate, channels, seconds) in enumerate(specs):
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        samples = (0.1 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32)
        sf.write(root / "train" / label / f"clip{index}.wav", samples, rate)
    bad = root.parent / (root.name + "_bad")
    for label in ("yes", "no"):
        (bad / "train" / label).mkdir(parents=True)
    for index, (label, rate, channels, seconds) in enumerate(specs[:3]):
        sf.write(
            bad / "train" / label / f"clip{index}.wav",
            (0.1 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32),
            rate,
        )
    (bad / "train" / "no" / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(bad / "train" / "yes" / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    return root, bad


def test_embeddings_equal_the_model_example_by_example(audio_folder, random2048_dir, tmp_path):
    root, _ = audio_folder
    result = extract_embeddings(
        str(random2048_dir),
        "audiofolder",
        str(tmp_path / "out"),
        data_dir=str(root),
        frames=True,
        layers="0,4",
        batch_size=3,
        shard_size=2,
    )
    dataset = load_embeddings(str(tmp_path / "out"))
    assert result.num_examples == len(dataset) == 5 and result.skipped == []
    assert {"label", "path", "duration", "embedding", "timestamps", "frames_0", "frames_4"} <= set(
        dataset.column_names
    )
    model = AutoModel.from_pretrained(random2048_dir).eval()
    fe = BYOLAFeatureExtractor.from_model_config(model.config)
    worst = 0.0
    for row in dataset:
        waveform = load_audio(row["path"], 16000)  # soundfile + librosa: the same decoding as datasets' Audio
        with torch.no_grad():
            outputs = model(**fe(waveform, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
        expected = outputs.pooler_output[0].numpy()
        worst = max(worst, float(np.abs(np.asarray(row["embedding"]) - expected).max() / np.abs(expected).max()))
        frames = np.asarray(row["frames_4"])
        assert frames.shape == outputs.last_hidden_state[0].shape
        np.testing.assert_allclose(frames, outputs.last_hidden_state[0].numpy(), atol=1e-4 * np.abs(frames).max())
        np.testing.assert_allclose(row["timestamps"], 80 * np.arange(len(frames)) + 35, atol=1e-3)
    assert dataset.features["embedding"].feature.dtype == "float32"
    assert dataset.features["frames_0"].feature.feature.dtype == "float32"
    print(f"\nbyola-extract vs the model, clip embeddings: max relative deviation {worst:.2g}")
    assert worst < 1e-4


def test_workers_and_resumption_give_the_same_dataset(audio_folder, random2048_dir, tmp_path, monkeypatch):
    root, _ = audio_folder
    reference = extract_embeddings(
        str(random2048_dir), "audiofolder", str(tmp_path / "one"), data_dir=str(root), shard_size=2
    )
    expected = np.stack(load_embeddings(reference.output_dir)["embedding"])
    workers = extract_embeddings(
        str(random2048_dir), "audiofolder", str(tmp_path / "two"), data_dir=str(root), shard_size=2, num_proc=2
    )
    np.testing.assert_allclose(np.stack(load_embeddings(workers.output_dir)["embedding"]), expected, atol=1e-6)

    calls = {"count": 0}
    original = extract.embed_batch

    def interrupted(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 1:  # the second shard dies
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(extract, "embed_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(
            str(random2048_dir), "audiofolder", str(tmp_path / "resumed"), data_dir=str(root), shard_size=2
        )
    assert (tmp_path / "resumed" / "shards" / "00000" / "COMPLETE").exists()
    monkeypatch.setattr(extract, "embed_batch", original)
    resumed = extract_embeddings(
        str(random2048_dir), "audiofolder", str(tmp_path / "resumed"), data_dir=str(root), shard_size=2
    )
    dataset = load_embeddings(resumed.output_dir)
    assert dataset["path"] == load_embeddings(reference.output_dir)["path"]
    np.testing.assert_array_equal(np.stack(dataset["embedding"]), expected)


def test_bad_audio_is_reported_or_skipped(audio_folder, random2048_dir, tmp_path):
    _, bad = audio_folder
    with pytest.raises(ValueError, match=r"2 example\(s\) could not be embedded.*(corrupt|empty)\.wav"):
        extract_embeddings(str(random2048_dir), "audiofolder", str(tmp_path / "stop"), data_dir=str(bad))
    result = extract_embeddings(
        str(random2048_dir), "audiofolder", str(tmp_path / "skip"), data_dir=str(bad), skip_bad=True
    )
    assert result.num_examples == 3
    assert sorted(item["path"].rsplit("/", 1)[-1] for item in result.skipped) == ["corrupt.wav", "empty.wav"]
    assert json.loads((tmp_path / "skip" / "skipped.json").read_text()) == result.skipped


def test_cli_on_a_folder_of_files(audio_folder, random2048_dir, tmp_path):
    root, _ = audio_folder
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "byola_hf.extract.cli",
            "--model_name_or_path",
            str(random2048_dir),
            "--dataset_name",
            str(root / "train"),
            "--output_dir",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert output.returncode == 0, output.stderr[-2000:]
    assert "5 clips" in output.stdout and "audio-hours per minute" in output.stdout
    assert len(load_embeddings(str(tmp_path / "cli"))) == 5


def test_two_ranks_write_the_same_dataset_as_one_process(audio_folder, random2048_dir, tmp_path):
    root, _ = audio_folder
    result = run_torchrun(
        "-m",
        "byola_hf.extract.cli",
        "--model_name_or_path",
        str(random2048_dir),
        "--dataset_name",
        "audiofolder",
        "--data_dir",
        str(root),
        "--output_dir",
        str(tmp_path / "ranks"),
        "--shard_size",
        "2",
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = extract_embeddings(
        str(random2048_dir), "audiofolder", str(tmp_path / "one"), data_dir=str(root), shard_size=2
    )
    ranks, one = load_embeddings(str(tmp_path / "ranks")), load_embeddings(single.output_dir)
    assert ranks["path"] == one["path"] and ranks["label"] == one["label"]
    np.testing.assert_allclose(np.stack(ranks["embedding"]), np.stack(one["embedding"]), atol=1e-6)

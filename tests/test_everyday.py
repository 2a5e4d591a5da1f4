"""The paths a transformers user takes: batched pipelines, the datasets.map + collator recipe, any audio in."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoFeatureExtractor, AutoModel, DataCollatorWithPadding, pipeline

import byola_hf  # noqa: F401  (registers the model type and the pipelines)
from byola_hf import BYOLAFeatureExtractor, BYOLAForSequenceClassification
from byola_hf.pipelines import load_audio

from conftest import IN_CI


SOUNDS = {
    "bell": Path("/usr/share/sounds/freedesktop/stereo/bell.oga"),  # 44.1 kHz stereo OGG/Vorbis
    "front_center": Path("/usr/share/sounds/alsa/Front_Center.wav"),  # 48 kHz mono WAV
}


@pytest.fixture(scope="module")
def sound_files(tmp_path_factory) -> list[str]:
    """Real recordings of several rates and channel layouts, plus espeak-ng speech at 22.05 kHz."""
    missing = [str(path) for path in SOUNDS.values() if not path.exists()]
    if missing:
        message = f"Sound files missing: {missing} (scripts/setup.sh installs sound-theme-freedesktop, alsa-utils)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    speech = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "turn the lights on"], check=True)
    files = [str(SOUNDS["bell"]), str(SOUNDS["front_center"]), str(speech)]
    rates = {soundfile.info(f).samplerate for f in files}
    channels = {soundfile.info(f).channels for f in files}
    assert len(rates) == 3 and channels == {1, 2}
    return files


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, random2048_dir) -> Path:
    """A three-class head on the random 2048-d encoder, saved with its feature extractor."""
    torch.manual_seed(0)
    head = BYOLAForSequenceClassification.from_pretrained(
        random2048_dir, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2}
    )
    output = tmp_path_factory.mktemp("classifier")
    head.save_pretrained(output)
    AutoFeatureExtractor.from_pretrained(random2048_dir).save_pretrained(output)
    return output


def test_embedding_pipeline_batches_mixed_lengths(random2048_dir, sound_files):
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir))
    alone = [extractor(path) for path in sound_files]
    batched = extractor(sound_files, batch_size=2)
    worst = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(alone, batched))
    frames_alone = [extractor(path, frame_level=True) for path in sound_files]
    frames_batched = extractor(sound_files, frame_level=True, batch_size=3)
    assert [f.shape for f in frames_alone] == [f.shape for f in frames_batched]
    assert len({f.shape[0] for f in frames_alone}) == 3  # really mixed lengths
    worst = max([worst] + [float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(frames_alone, frames_batched)])
    print(f"\nembedding pipeline, batch_size 2/3 vs alone on mixed files: {worst:.2g}")
    assert worst < 1e-5


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))],
)
def test_pipeline_computes_log_mel_per_batch_on_its_device(random2048_dir, sound_files, device):
    """Decoding stays in preprocess (CPU, DataLoader workers); the log-mel is one batched call in _forward, on the
    pipeline's device, and equals the feature extractor's numpy path followed by the model."""
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir), device=device)
    decoded = extractor.preprocess(sound_files[0])
    assert set(decoded) == {"waveforms", "lengths"} and decoded["waveforms"].device.type == "cpu"
    calls = []
    log_mel = extractor.feature_extractor.log_mel

    def recording_log_mel(waveforms, lengths=None):
        calls.append((waveforms.device.type, tuple(waveforms.shape[:1])))
        return log_mel(waveforms, lengths)

    extractor.feature_extractor.log_mel = recording_log_mel
    batched = extractor(sound_files, batch_size=3)
    assert calls == [(device, (3,))]
    with_workers = extractor(sound_files, batch_size=3, num_workers=2)  # decoding in DataLoader workers
    assert all(np.array_equal(a, b) for a, b in zip(batched, with_workers))

    fe = extractor.feature_extractor
    model = AutoModel.from_pretrained(random2048_dir).eval()
    for path, embedding in zip(sound_files, batched):
        with torch.no_grad():
            expected = model(**fe(load_audio(path, 16000), sampling_rate=16000, return_tensors="pt")).pooler_output
        assert np.abs(embedding - expected[0].numpy()).max() / np.abs(embedding).max() < 1e-5


def test_classification_pipeline_batches_and_reads_files(classifier_dir, sound_files):
    classifier = pipeline("audio-classification", model=str(classifier_dir))
    arrays = [load_audio(path, 16000) for path in sound_files]
    alone = [classifier(array, sampling_rate=16000) for array in arrays]
    batched = classifier(arrays, sampling_rate=16000, batch_size=2)
    for a, b in zip(alone, batched):
        assert [s["label"] for s in a] == [s["label"] for s in b]
        assert np.allclose([s["score"] for s in a], [s["score"] for s in b], atol=1e-6)
    from_files = classifier(sound_files[0])  # a path: soundfile decodes, librosa resamples; no ffmpeg
    assert {s["label"] for s in from_files} == {"a", "b", "c"}
    stated = classifier({"raw": arrays[0][:16000], "sampling_rate": 22050})  # resampled, no torchaudio needed
    assert len(stated) == 3


def test_classification_pipeline_leaves_other_models_alone():
    from transformers import AudioClassificationPipeline

    assert issubclass(byola_hf.BYOLAAudioClassificationPipeline, AudioClassificationPipeline)


def test_datasets_map_collator_recipe(random2048_dir):
    """fe(..., padding=False) rows stored by datasets.map, padded by fe.pad or DataCollatorWithPadding: fe(batch)."""
    import datasets

    fe = AutoFeatureExtractor.from_pretrained(random2048_dir)
    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 5000, 23000)]
    dataset = datasets.Dataset.from_dict(
        {"audio": [{"array": w, "sampling_rate": 16000} for w in waveforms], "label": [0, 1, 2]}
    )
    dataset = dataset.map(
        lambda batch: fe(batch["audio"], sampling_rate=16000, padding=False), batched=True, remove_columns=["audio"]
    )
    expected = fe(waveforms, sampling_rate=16000, return_tensors="pt")
    collated = DataCollatorWithPadding(fe)(list(dataset))
    padded = fe.pad(list(dataset), return_tensors="pt")
    for batch in (collated, padded):
        assert torch.equal(batch["input_features"], expected["input_features"])
        assert torch.equal(batch["attention_mask"].int(), expected["attention_mask"].int())
    assert collated["labels"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"expected \(64, frames\)"):
        fe.pad([{"input_features": np.zeros((10, 63))}])


def test_no_prompt_when_byola_hf_is_imported(random2048_dir):
    script = textwrap.dedent(f"""
        import byola_hf, numpy as np
        from transformers import pipeline
        extractor = pipeline("byola-audio-embedding", model={str(random2048_dir)!r})
        print(extractor(np.zeros(16000, np.float32), sampling_rate=16000).shape)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(2048,)" in result.stdout
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr


def test_any_audio_in(random2048_dir, sound_files, tmp_path):
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir))
    mono = load_audio(sound_files[2], 16000)
    reference = extractor(mono, sampling_rate=16000)
    stereo = np.stack([mono, mono])
    for variant in (
        stereo,
        stereo.T,
        {"raw": stereo.T, "sampling_rate": 16000},
        {"array": mono, "sampling_rate": 16000, "path": "x.wav"},
    ):
        np.testing.assert_allclose(
            extractor(variant, sampling_rate=16000) if not isinstance(variant, dict) else extractor(variant),
            reference,
            rtol=0,
            atol=1e-5,
        )
    # Integer PCM is scaled by its dtype: int16 samples give the float result.
    pcm = np.round(mono * 20000).astype(np.int16)
    np.testing.assert_allclose(
        extractor(pcm, sampling_rate=16000), extractor(pcm / 32768.0, sampling_rate=16000), atol=1e-5
    )
    fe = AutoFeatureExtractor.from_pretrained(random2048_dir)
    np.testing.assert_array_equal(
        fe(pcm, sampling_rate=16000)["input_features"][0],
        fe(pcm.astype(np.float32) / 32768, sampling_rate=16000)["input_features"][0],
    )
    # A stated rate is resampled: the 48 kHz WAV read by hand equals the file path.
    samples, rate = soundfile.read(sound_files[1], dtype="float32")
    np.testing.assert_allclose(extractor(samples, sampling_rate=rate), extractor(sound_files[1]), atol=1e-5)
    # Raw bytes of a file.
    np.testing.assert_allclose(extractor(Path(sound_files[0]).read_bytes()), extractor(sound_files[0]), atol=1e-6)
    # Errors that say what is wrong.
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(ValueError, match="Could not read audio from .*notes.wav"):
        extractor(str(bad))
    with pytest.raises(ValueError, match=r"Could not read audio from the given bytes \(9 bytes\)"):
        extractor(b"not audio")
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 5\)"):
        extractor(mono, layer=5)
    with pytest.raises(ValueError, match="'raw' or 'array'"):
        extractor({"samples": mono, "sampling_rate": 16000})


def test_short_clips_pad_to_one_frame(random2048_dir):
    fe = BYOLAFeatureExtractor()
    clip = np.random.default_rng(1).standard_normal(800).astype(np.float32)  # 0.05 s
    model = AutoModel.from_pretrained(random2048_dir).eval()
    with pytest.raises(ValueError, match="too short for one BYOL-A output frame.*pad_to_min_length=True"):
        model(**fe(clip, sampling_rate=16000, return_tensors="pt"))  # 6 log-mel frames, 8 needed
    with pytest.raises(ValueError, match="pad_to_min_length=True"):
        fe(clip[:300], sampling_rate=16000)  # too short even for the STFT
    padded = fe(clip, sampling_rate=16000, pad_to_min_length=True, return_tensors="pt")
    zero_padded = np.concatenate([clip, np.zeros(fe.min_samples - 800, np.float32)])
    np.testing.assert_array_equal(
        padded["input_features"][0].numpy(), fe(zero_padded, sampling_rate=16000)["input_features"][0]
    )
    with torch.no_grad():
        assert model(**padded).last_hidden_state.shape == (1, 1, 2048)
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir))
    with pytest.raises(ValueError, match="pad_to_min_length"):
        extractor(clip, sampling_rate=16000)
    np.testing.assert_allclose(
        extractor(clip, sampling_rate=16000, pad_to_min_length=True),
        extractor(zero_padded, sampling_rate=16000),
        atol=1e-6,
    )


def test_bfloat16_models_and_pipelines(random2048_dir, classifier_dir):
    fe = AutoFeatureExtractor.from_pretrained(random2048_dir)
    waveform = np.random.default_rng(2).standard_normal(24000).astype(np.float32) * 0.1
    inputs = fe(waveform, sampling_rate=16000, return_tensors="pt")
    full = AutoModel.from_pretrained(random2048_dir).eval()
    half = AutoModel.from_pretrained(random2048_dir, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        a, b = full(**inputs).pooler_output[0], half(**inputs).pooler_output[0].float()
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    print(f"\nbf16 model vs fp32, pooled cosine {cosine:.5f}")
    assert half.fc1.weight.dtype == torch.bfloat16 and cosine > 0.99
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir), dtype=torch.bfloat16)
    assert extractor(waveform, sampling_rate=16000).dtype == np.float32
    classifier = pipeline("audio-classification", model=str(classifier_dir), dtype=torch.bfloat16)
    assert len(classifier(waveform, sampling_rate=16000)) == 3


def test_feature_extractor_on_torch_batches_equals_numpy():
    fe = BYOLAFeatureExtractor()
    rng = np.random.default_rng(3)
    waveforms = [rng.standard_normal(n).astype(np.float32) for n in (4000, 9000, 7001)]
    expected = fe(waveforms, sampling_rate=16000, return_tensors="np")
    batch = torch.zeros(3, 9000)
    for row, waveform in zip(batch, waveforms):
        row[: len(waveform)] = torch.from_numpy(waveform)
    got = fe(batch, sampling_rate=16000, lengths=torch.tensor([4000, 9000, 7001]), device="cpu")
    assert isinstance(got["input_features"], torch.Tensor)
    np.testing.assert_array_equal(got["input_features"].numpy(), expected["input_features"])
    np.testing.assert_array_equal(got["attention_mask"].numpy(), expected["attention_mask"])
    for index, waveform in enumerate(waveforms):  # each row as if alone
        alone = fe(waveform, sampling_rate=16000)["input_features"][0]
        np.testing.assert_array_equal(got["input_features"][index, :, : alone.shape[-1]].numpy(), alone)
    with pytest.raises(ValueError, match="lengths must give each"):
        fe(batch, sampling_rate=16000, lengths=[4000, 9001, 1])

    # pad_to_min_length's zeros (audio) and the padding value (not audio) land alike from numpy rows and tensors
    fe = BYOLAFeatureExtractor(padding_value=0.5)
    short = [rng.standard_normal(600), waveforms[1].astype(np.float64), waveforms[2]]
    lengths = [600, 9000, 7001]
    from_rows = fe._pad_rows(short, lengths, 9000, fe.min_samples, None)
    tensor = torch.zeros(3, 9000)
    for row, waveform in zip(tensor, short):
        row[: len(waveform)] = torch.from_numpy(waveform.astype(np.float32))
    torch.testing.assert_close(from_rows, fe._pad_rows(tensor, lengths, 9000, fe.min_samples, None), rtol=0, atol=0)
    assert from_rows.dtype == torch.float32 and from_rows.is_contiguous()
    assert (from_rows[0, 600 : fe.min_samples] == 0).all() and (from_rows[0, fe.min_samples :] == 0.5).all()
    assert (from_rows[2, 7001:] == 0.5).all()
    np.testing.assert_array_equal(
        fe(short, sampling_rate=16000, pad_to_min_length=True, return_tensors="np")["input_features"],
        fe(tensor, sampling_rate=16000, lengths=lengths, pad_to_min_length=True, device="cpu")[
            "input_features"
        ].numpy(),
    )


def test_integer_rule_is_one_rule():
    """Integer PCM is scaled by its dtype; lists are values; non-PCM integer dtypes are refused, never guessed."""
    fe = BYOLAFeatureExtractor()
    values = np.random.default_rng(4).uniform(-0.5, 0.5, 4000).astype(np.float32)
    as_list = fe(values.tolist(), sampling_rate=16000)["input_features"][0]
    np.testing.assert_array_equal(as_list, fe(values, sampling_rate=16000)["input_features"][0])
    for dtype, scale, offset in ((np.int8, 128, 0), (np.int32, 2**31, 0), (np.uint8, 128, 128)):
        pcm = np.clip(np.round(values * scale + offset), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
        np.testing.assert_allclose(
            fe(pcm, sampling_rate=16000)["input_features"][0],
            fe((pcm.astype(np.float64) - offset) / scale, sampling_rate=16000)["input_features"][0],
            atol=1e-4,
        )
    with pytest.raises(TypeError, match="int64 are neither float nor integer PCM"):
        fe(np.arange(4000), sampling_rate=16000)
    with pytest.raises(TypeError, match="int64 are neither float nor integer PCM"):
        load_audio(np.arange(4000), 16000, 16000)


def test_v2_feature_extractor_pads_short_clips_to_its_own_minimum(random3072_dir):
    fe = AutoFeatureExtractor.from_pretrained(random3072_dir)
    assert fe.time_downsampling == 4 and fe.min_samples == 513  # 3 hops = 480, raised to the STFT's 513
    padded = fe(np.ones(300, np.float32) * 0.1, sampling_rate=16000, pad_to_min_length=True, return_tensors="pt")
    model = AutoModel.from_pretrained(random3072_dir).eval()
    with torch.no_grad():
        assert model(**padded).last_hidden_state.shape == (1, 1, 3072)


def test_read_only_arrays_give_no_torch_warning(random2048_dir):
    """Arrays from `datasets`' numpy format, `np.frombuffer` or memory maps are read-only: no torch warning about
    them (torch warns once per process, hence a fresh interpreter)."""
    script = textwrap.dedent(
        f"""
        import warnings
        import numpy as np
        import byola_hf
        from transformers import pipeline

        warnings.simplefilter("error")
        fe = byola_hf.BYOLAFeatureExtractor()
        floats = np.frombuffer((0.1 * np.ones(16000, np.float32)).tobytes(), np.float32)
        pcm = np.frombuffer(np.full(12000, 300, np.int16).tobytes(), np.int16)
        batch = np.frombuffer(np.zeros(32000, np.float32).tobytes(), np.float32).reshape(2, 16000)
        assert not floats.flags.writeable and not pcm.flags.writeable and not batch.flags.writeable
        fe([floats, pcm], sampling_rate=16000, return_tensors="pt")
        fe(batch, sampling_rate=16000, lengths=[16000, 9000], return_tensors="pt")
        fe(floats, sampling_rate=16000, device="cpu")
        extractor = pipeline("byola-audio-embedding", model={str(random2048_dir)!r})
        extractor([floats, pcm], sampling_rate=16000, batch_size=2)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"

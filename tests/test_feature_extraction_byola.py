"""BYOLAFeatureExtractor: the log-mel against the original and an exact float64 computation, padding and
truncation, every input form, the datasets.map / collator recipe, and the one-line errors for bad arguments."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor, AutoModel, DataCollatorWithPadding

import byola_hf  # noqa: F401  (registers the model type and the pipelines)
from byola_hf import BYOLAFeatureExtractor
from byola_hf.audio import load_audio

from conftest import LOG_MEL_ATOL, clips


def float64_log_mel(waveform: np.ndarray, fe: BYOLAFeatureExtractor) -> np.ndarray:
    """The front-end's definition computed independently in float64 numpy (rfft of reflect-padded Hann frames)."""
    x = np.pad(waveform.astype(np.float64), fe.n_fft // 2, mode="reflect")
    frames = 1 + (len(x) - fe.n_fft) // fe.hop_length
    window = np.zeros(fe.n_fft)
    offset = (fe.n_fft - fe.win_length) // 2
    window[offset : offset + fe.win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(fe.win_length) / fe.win_length)
    index = np.arange(fe.n_fft)[None, :] + fe.hop_length * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(x[index] * window, axis=-1)) ** 2
    return np.log(fe.mel_filters.T @ power.T + fe.log_offset)


def test_log_mel_matches_original(golden):
    fe = BYOLAFeatureExtractor()
    worst_golden, worst_float64 = 0.0, 0.0
    for name, waveform, clip in clips(golden):
        features = fe(waveform, sampling_rate=16000, return_tensors="np")
        log_mel = features["input_features"][0]
        reference = golden["arrays"][f"{name}/log_mel"]
        assert log_mel.shape == reference.shape == (64, clip["mel_frames"])
        assert features["attention_mask"].sum() == clip["mel_frames"] == fe.num_frames(clip["samples"])
        audible = np.exp(reference.astype(np.float64)) > 1e-6
        if audible.any():
            deviation = float(np.abs(log_mel - reference)[audible].max())
            assert deviation < LOG_MEL_ATOL, name
            worst_golden = max(worst_golden, deviation)
        else:  # digital silence: exactly log(eps)
            np.testing.assert_array_equal(log_mel, reference)
        exact = float64_log_mel(waveform, fe)
        audible = np.exp(exact) > 1e-6
        if audible.any():
            worst_float64 = max(worst_float64, float(np.abs(log_mel - exact)[audible].max()))
    print(f"\nlog-mel: max |ours - original| = {worst_golden:.3g}, max |ours - float64| = {worst_float64:.3g}")
    assert worst_float64 < 5e-4  # float32 FFT rounding in the quietest bins; reached 1.4e-4


def test_padding_truncation_and_max_length():
    fe = BYOLAFeatureExtractor()
    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(n).astype(np.float32) for n in (4000, 16000)]
    padded = fe(waveforms, sampling_rate=16000, padding="max_length", max_length=20000, return_tensors="pt")
    assert padded["input_features"].shape == (2, 64, fe.num_frames(20000))
    assert padded["attention_mask"].sum(-1).tolist() == [fe.num_frames(4000), fe.num_frames(16000)]
    multiple = fe(waveforms, sampling_rate=16000, pad_to_multiple_of=1600, return_tensors="np")
    assert multiple["input_features"].shape[-1] == fe.num_frames(16000)
    cut = fe(
        waveforms, sampling_rate=16000, max_length=8000, truncation=True, padding="max_length", return_tensors="np"
    )
    assert cut["attention_mask"].sum(-1).tolist() == [fe.num_frames(4000), fe.num_frames(8000)]
    np.testing.assert_array_equal(
        cut["input_features"][1], fe(waveforms[1][:8000], sampling_rate=16000)["input_features"][0]
    )
    unpadded = fe(waveforms, sampling_rate=16000, padding=False)
    assert [f.shape for f in unpadded["input_features"]] == [(64, fe.num_frames(4000)), (64, fe.num_frames(16000))]
    np.testing.assert_array_equal(
        unpadded["input_features"][0], padded["input_features"][0, :, : fe.num_frames(4000)].numpy()
    )
    # padded frames hold digital silence
    assert np.all(padded["input_features"][0, :, fe.num_frames(4000) :].numpy() == np.log(np.float32(fe.log_offset)))


def test_unpadded_rows_come_back_as_numpy_rows():
    """`padding=False, return_tensors="np"`, a documented pair, raised BatchFeature's "inhomogeneous shape" error
    for clips of different lengths: its numpy conversion looks for ragged rows on the first axis, and these rows
    differ on the last. They come back as `pad()` returns them: a 1-D object array of `(64, frames)` rows."""
    fe = BYOLAFeatureExtractor()
    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(n).astype(np.float32) for n in (4000, 16000)]
    rows = fe(waveforms, sampling_rate=16000, padding=False, return_tensors="np")
    listed = fe(waveforms, sampling_rate=16000, padding=False)
    for key in ("input_features", "attention_mask"):
        assert isinstance(rows[key], np.ndarray) and rows[key].shape == (2,)
        for row, expected in zip(rows[key], listed[key]):
            np.testing.assert_array_equal(row, expected)
    padded = fe.pad([{"input_features": row} for row in rows["input_features"]], padding=False, return_tensors="np")
    assert padded["input_features"].shape == rows["input_features"].shape == (2,)
    equal = fe([waveforms[0]] * 2, sampling_rate=16000, padding=False, return_tensors="np")
    assert equal["input_features"].shape == (2, 64, fe.num_frames(4000))


def test_dropping_the_mask_of_a_padded_batch_warns(small_model, caplog):
    """`return_attention_mask=False` on a padded batch gave features that a model, with no mask, reads as longer
    clips ending in digital silence: the shorter clip's embedding moved far from its own, without a word. Dropping
    the mask of padded rows now warns, in `__call__` and `pad`; unpadded and equal-length batches stay quiet."""
    import logging

    fe, model = BYOLAFeatureExtractor(), AutoModel.from_pretrained(small_model).eval()
    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000)]
    with torch.no_grad():
        alone = model(**fe(waveforms[1], sampling_rate=16000, return_tensors="pt")).pooler_output[0]
        unmasked = fe(waveforms, sampling_rate=16000, return_tensors="pt", return_attention_mask=False)
        assert not torch.allclose(model(**unmasked).pooler_output[1], alone, atol=1e-3)
    rows = [{"input_features": row} for row in fe(waveforms, sampling_rate=16000, padding=False)["input_features"]]
    quiet = (
        lambda: fe([waveforms[0]] * 2, sampling_rate=16000, return_attention_mask=False),
        lambda: fe(waveforms, sampling_rate=16000, padding=False, return_attention_mask=False),
        lambda: fe.pad(rows[:1], return_attention_mask=False),
    )
    loud = (
        lambda: fe(waveforms, sampling_rate=16000, return_attention_mask=False),
        lambda: fe(
            waveforms[1], sampling_rate=16000, padding="max_length", max_length=16000, return_attention_mask=False
        ),
        lambda: fe.pad(rows, return_attention_mask=False),
    )
    for call, warns in [(call, False) for call in quiet] + [(call, True) for call in loud]:
        logging.Logger.warning_once.cache_clear()  # transformers' warn-once cache would hide a repeat
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="byola_hf"):
            call()
        assert any("return_attention_mask=False on a padded batch" in r.getMessage() for r in caplog.records) == warns


def test_accepts_every_input_form():
    fe = BYOLAFeatureExtractor()
    waveform = np.sin(np.arange(3200) / 5.0).astype(np.float32)
    expected = fe(waveform, sampling_rate=16000)["input_features"][0]

    class FakeAudioDecoder:  # the torchcodec AudioDecoder that datasets>=4 hands to map
        def get_all_samples(self):
            return type("AudioSamples", (), {"data": torch.from_numpy(waveform)[None], "sample_rate": 16000})()

    for form in (
        torch.from_numpy(waveform),
        waveform.tolist(),
        waveform.astype(np.float64),
        {"array": waveform, "sampling_rate": 16000, "path": None},
        FakeAudioDecoder(),
    ):
        np.testing.assert_allclose(fe(form, sampling_rate=16000)["input_features"][0], expected, atol=1e-6)
    for batch_form in (
        [waveform, waveform],
        np.stack([waveform, waveform]),
        [{"array": waveform, "sampling_rate": 16000}] * 2,
    ):
        out = fe(batch_form, sampling_rate=16000, return_tensors="np")["input_features"]
        assert out.shape == (2, 64, fe.num_frames(3200))
    # the rate carried by datasets audio is checked without the argument
    assert fe({"array": waveform, "sampling_rate": 16000})["input_features"][0].shape == expected.shape


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda fe: fe(np.zeros(16000, np.float32), sampling_rate=44100),
            ValueError,
            "expects audio sampled at 16000 Hz but got 44100",
        ),
        (lambda fe: fe({"array": np.zeros(16000), "sampling_rate": 8000}), ValueError, "Resample it first"),
        (lambda fe: fe([np.zeros((2, 16000), np.float32)], sampling_rate=16000), ValueError, "mono audio"),
        (
            lambda fe: fe(np.zeros((1, 2, 16000), np.float32), sampling_rate=16000),
            ValueError,
            "mix multi-channel audio down",
        ),
        (
            lambda fe: fe(np.zeros((16000, 2), np.float32), sampling_rate=16000),
            ValueError,
            "shape (samples, channels), mix it down",
        ),
        (
            lambda fe: fe(np.zeros(300, np.float32), sampling_rate=16000),
            ValueError,
            "too short for one BYOL-A output frame (at least 1120; the centred STFT alone needs 513)",
        ),
        (lambda fe: fe(np.full(16000, np.nan, np.float32), sampling_rate=16000), ValueError, "NaN or infinite"),
        (lambda fe: fe(["not", "audio"], sampling_rate=16000), TypeError, "Unsupported audio element of type str"),
        (lambda fe: fe(np.array(["a"] * 2000), sampling_rate=16000), TypeError, "Audio must be numeric"),
        (lambda fe: fe(object(), sampling_rate=16000), TypeError, "Unsupported audio input"),
        (lambda fe: fe([], sampling_rate=16000), ValueError, "empty batch"),
        (lambda fe: fe(np.zeros(16000), sampling_rate=16000, device="gpu0"), ValueError, "is not a torch device"),
        (
            lambda fe: fe(np.zeros(16000), sampling_rate=16000, truncation=True),
            ValueError,
            "truncation=True needs max_length",
        ),
        (
            lambda fe: fe(np.zeros(16000), sampling_rate=16000, padding="max_length", max_length=8000),
            ValueError,
            "pass truncation=True",
        ),
    ],
)
def test_feature_extractor_errors(call, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(BYOLAFeatureExtractor())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is")
def test_feature_extractor_asked_for_a_missing_gpu():
    fe = BYOLAFeatureExtractor()
    for batch in (np.zeros(16000, np.float32), torch.zeros(2, 16000)):
        with pytest.raises(ValueError, match="no CUDA GPU is available.*device='cpu'"):
            fe(batch, sampling_rate=16000, device="cuda")


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


@pytest.mark.parametrize("loader", ["AutoFeatureExtractor", "BYOLAFeatureExtractor", "pipeline"])
def test_preprocessor_config_must_match_the_model_config(small_model, tmp_path, loader):
    """Every way of loading a folder's feature extractor checks it against the folder's config.json
    (transformers 5.25's AutoFeatureExtractor reads the JSON itself and skips the class's from_pretrained)."""
    import transformers

    copy = tmp_path / "model"
    shutil.copytree(small_model, copy)
    load = {
        "AutoFeatureExtractor": transformers.AutoFeatureExtractor.from_pretrained,
        "BYOLAFeatureExtractor": BYOLAFeatureExtractor.from_pretrained,
        "pipeline": lambda path: transformers.pipeline("byola-audio-embedding", model=str(path)),
    }[loader]
    # another hop, and v2's 4 log-mel frames per output frame (its shortest clip) beside a v1 model
    for front_end, found in (({"hop_length": 320}, "hop_length=320 (config.json: 160)"),
                             ({"time_downsampling": 4}, "time_downsampling=4 (config.json: 8)")):  # fmt: skip
        BYOLAFeatureExtractor(**front_end).save_pretrained(copy)
        with pytest.raises(ValueError, match=re.escape(found)):
            load(copy)
    BYOLAFeatureExtractor().save_pretrained(copy)  # matching again: loads
    load(copy)


def test_feature_extractor_refuses_impossible_front_ends():
    with pytest.raises(ValueError, match="hop_length must be a positive whole number"):
        BYOLAFeatureExtractor(hop_length=0)
    with pytest.raises(ValueError, match=r"f_max <= sampling_rate / 2"):
        BYOLAFeatureExtractor(f_max=20000)


def test_a_padded_batch_refuses_a_clip_without_an_output_frame(small_model):
    """`model(**fe([clip_1s, clip_900_samples], device="cuda"))`, the GPU recipe of docs/api.md, gave the v1 clip of
    900 samples (a log-mel of 6 frames, no output frame) a NaN embedding: the fe let it through, and a forward on an
    accelerator reads no lengths back (`check_values=False`). The fe knows the lengths before the transfer, so a
    padded batch now refuses it, naming pad_to_min_length=True; unpadded rows (what byola-compute-stats reads) still
    need a log-mel frame only."""
    fe = AutoFeatureExtractor.from_pretrained(small_model)
    model = AutoModel.from_pretrained(small_model).eval()
    batch = [np.full(16000, 0.1, np.float32), np.full(fe.min_samples - 220, 0.1, np.float32)]
    with pytest.raises(ValueError, match=f"Example 1 has 900 samples, too short .* \\(at least {fe.min_samples};"):
        fe(batch, sampling_rate=16000, return_tensors="pt")
    with pytest.raises(ValueError, match="pad_to_min_length=True"):
        fe(torch.stack([torch.from_numpy(batch[0])] * 2), sampling_rate=16000, lengths=[16000, 900])
    assert fe(batch, sampling_rate=16000, padding=False)["input_features"][1].shape == (64, 6)
    padded = fe(batch, sampling_rate=16000, return_tensors="pt", pad_to_min_length=True)
    with torch.no_grad():
        assert torch.isfinite(model(**padded, check_values=False).pooler_output).all()


def test_the_collator_refuses_a_row_without_an_output_frame(small_model):
    """docs/api.md's recipe, `ds.map(fe(..., padding=False))` then `DataCollatorWithPadding(fe)`, padded a v1 clip of
    900 samples (6 log-mel frames) beside a longer one, and a GPU forward gave it a NaN embedding. `fe.pad` knows each
    row's frames on the host and refuses it, as the padded `__call__` does."""
    fe = AutoFeatureExtractor.from_pretrained(small_model)
    rows = fe([np.full(16000, 0.1, np.float32), np.full(900, 0.1, np.float32)], sampling_rate=16000, padding=False)
    features = [{"input_features": row} for row in rows["input_features"]]
    with pytest.raises(ValueError, match="Row 1 has 6 log-mel frames, too short .*pad_to_min_length=True"):
        DataCollatorWithPadding(fe)(features)
    assert fe.pad(features, padding=False)["input_features"][1].shape == (64, 6)  # rows apart: no mask to misread

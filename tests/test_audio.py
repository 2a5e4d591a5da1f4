"""byola_hf.audio, the one way in for audio: integer PCM, stated rates and unreadable files."""

import os
import wave

import numpy as np
import pytest

import byola_hf  # noqa: F401  (registers the model type and the pipelines)
from byola_hf import BYOLAFeatureExtractor
from byola_hf.audio import check_clip_lengths, load_audio


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
    pcm16 = np.round(values * 32768).astype(np.int16)
    for as_list in (pcm16.tolist(), list(pcm16)):  # Python ints or numpy int16 scalars: no dtype to scale by
        with pytest.raises(ValueError, match="list of integers beyond"):
            fe(as_list, sampling_rate=16000)
        with pytest.raises(ValueError, match="list of integers beyond"):
            fe([as_list], sampling_rate=16000)
    silent = fe([0] * 4000, sampling_rate=16000)["input_features"][0]  # whole-number amplitudes are still values
    np.testing.assert_array_equal(silent, fe(np.zeros(4000, np.float32), sampling_rate=16000)["input_features"][0])
    with pytest.raises(TypeError, match="int64 are neither float nor integer PCM"):
        load_audio(np.arange(4000), 16000, 16000)


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


def test_a_stated_rate_is_resampled_to_the_models():
    """A 48 kHz array given with its rate (a dict, as the pipelines take it, or `input_rate`) comes out as the same
    sound at 16 kHz: one second of a 440 Hz sine is 16000 samples of that sine. Taken at 16 kHz, or resampled the
    wrong way round, it would be another sound, and only the shape of an embedding was checked."""
    tone = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32)
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    for resampled in (load_audio({"array": tone, "sampling_rate": 48000}, 16000), load_audio(tone, 16000, 48000)):
        assert resampled.shape == (16000,) and resampled.dtype == np.float32
        np.testing.assert_allclose(resampled[100:-100], expected[100:-100], rtol=0, atol=1e-3)


def test_clip_lengths_of_a_stereo_clip_name_mono_not_its_channel_count():
    """A (channels, samples) clip (datasets.Audio(mono=False)) was said to have 2 samples, fewer than one frame."""
    stereo = np.zeros((2, 16000), np.float32)
    with pytest.raises(ValueError, match=r"clip.wav has shape \(2, 16000\): BYOL-A takes mono audio"):
        check_clip_lengths([stereo], [{"path": "/data/clip.wav"}], 1120)

"""The HEAR 2021 API: shapes, dtypes, timestamps, equality with the model's outputs, v1 and v2; clear errors."""

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModel

from byola_hf import hear


@pytest.mark.parametrize("fixture", ["random2048_dir", "random3072_dir"])
def test_hear_api_on_a_padded_batch_of_mixed_audio(fixture, request, golden):
    directory = request.getfixturevalue(fixture)
    model = hear.load_model(str(directory))
    width = AutoModel.from_pretrained(directory).config.feature_d
    assert (model.sample_rate, model.scene_embedding_size, model.timestamp_embedding_size) == (16000, width, width)
    # Speech, a sweep, noise and silence, zero-padded to one length as the HEAR harness pads a batch.
    clips = [
        golden["arrays"][f"{name}/waveform"]
        for name in ("espeak_command", "sine_sweep_3s", "white_noise_0p5s", "silence_1s")
    ]
    longest = max(len(clip) for clip in clips)
    audio = torch.zeros(len(clips), longest)
    for row, clip in zip(audio, clips):
        row[: len(clip)] = torch.from_numpy(clip)
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    scenes = hear.get_scene_embeddings(audio, model)
    config = model.model.config
    frames = (1 + longest // config.hop_length) // config.time_downsampling
    assert embeddings.shape == (4, frames, width) and embeddings.dtype == torch.float32
    assert timestamps.shape == (4, frames) and timestamps.dtype == torch.float32
    assert scenes.shape == (4, width) and scenes.dtype == torch.float32
    # Frame t pools log-mel frames t*D .. t*D+D-1, centred at (t*D + (D-1)/2) hops: 80 t + 35 ms (v1), 40 t + 15 (v2).
    step = 1000 / config.frames_per_second
    np.testing.assert_allclose(timestamps[0].numpy(), np.arange(frames) * step + (step - 10) / 2, rtol=0, atol=1e-3)
    assert torch.equal(timestamps[0], timestamps[3])
    # The same as the model on the same (padded) audio, one sound at a time.
    reference = AutoModel.from_pretrained(directory).eval()
    fe = AutoFeatureExtractor.from_pretrained(directory)
    with torch.no_grad():
        for index in range(4):
            outputs = reference(**fe(audio[index].numpy(), sampling_rate=16000, return_tensors="pt"))
            torch.testing.assert_close(embeddings[index], outputs.last_hidden_state[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(scenes[index], outputs.pooler_output[0], rtol=1e-5, atol=1e-5)


def test_hear_load_model_errors(tmp_path, random2048_checkpoint):
    from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint

    with pytest.raises(ValueError, match="needs a model directory"):
        hear.load_model("")
    convert_byola_checkpoint(random2048_checkpoint, tmp_path / "no-stats")
    with pytest.raises(ValueError, match="no normalisation statistics"):
        hear.load_model(str(tmp_path / "no-stats"))
    model = hear.load_model(str(tmp_path / "no-stats"), mean=-9.0, std=4.0)
    assert (model.model.config.mean, model.model.config.std) == (-9.0, 4.0)
    # Bad statistics were loaded as given and refused only at the first embedding (a string, NaN, std <= 0).
    for mean, std, message in [("abc", 4.0, "finite number"), (float("nan"), 4.0, "finite"), (-9.0, -1.0, "positive")]:
        with pytest.raises(ValueError, match=message):
            hear.load_model(str(tmp_path / "no-stats"), mean=mean, std=std)
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
        hear.get_scene_embeddings(torch.zeros(16000), model)


def test_hear_faults(small_model):
    from byola_hf import hear

    with pytest.raises(ValueError, match="Could not load a BYOL-A model from '/nonexistent/model'"):
        hear.load_model("/nonexistent/model")
    model = hear.load_model(str(small_model))
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\), both at least 1"):
        hear.get_scene_embeddings(torch.zeros(0, 16000), model)


@pytest.mark.parametrize("embed", [hear.get_scene_embeddings, hear.get_timestamp_embeddings])
def test_hear_audio_too_short_names_the_minimum_length(small_model, embed):
    """Too short a sound was refused with the feature extractor's advice to pass `pad_to_min_length=True`, an
    argument the HEAR API has no way to pass: the error says the length needed instead. That length embeds."""
    model = hear.load_model(str(small_model))
    minimum = model.model.config.min_samples
    with pytest.raises(ValueError) as error:
        embed(torch.zeros(2, minimum - 1), model)
    message = str(error.value)
    assert f"at least {minimum} samples ({minimum / 16000:g} s at 16000 Hz)" in message
    assert "pad_to_min_length" not in message
    embed(torch.randn(2, minimum), model)


def test_hear_model_stays_in_eval_mode_when_trained(small_model):
    """A HEAR model inside the user's own probe module, whose `.train()` reaches it, embedded in training mode: a
    clip's scene embedding moved (BatchNorm on the batch's statistics, dropout on) and the running statistics were
    overwritten, so it stayed wrong after `.eval()`. HEAR embeddings are inference: the network stays in eval mode."""
    model = hear.load_model(str(small_model))
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32) * 0.1)
    expected = hear.get_scene_embeddings(audio, model)
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    probe = torch.nn.ModuleDict({"embedding": model, "head": torch.nn.Linear(64, 2)}).train()
    assert probe["head"].training and not model.model.training
    torch.testing.assert_close(hear.get_scene_embeddings(audio, model), expected, rtol=0, atol=0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in running.items())

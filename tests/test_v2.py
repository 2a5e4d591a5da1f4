"""BYOL-A v2 (AudioNTT2022): parity with the original v2 code, batching, hidden states, converter detection."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from test_core import HIDDEN_RTOL, LOG_MEL_ATOL, relative_deviation
from transformers import AutoFeatureExtractor, AutoModel

from byola_hf import BYOLAConfig, BYOLAForCTC
from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint, load_original_state_dict

from conftest import console_script


def test_v2_matches_original(golden_v2, random3072_dir):
    model = AutoModel.from_pretrained(random3072_dir).eval()
    fe = AutoFeatureExtractor.from_pretrained(random3072_dir)
    assert (model.config.variant, model.config.feature_d, model.config.frames_per_second) == ("AudioNTT2022", 3072, 25)
    worst = {"log_mel": 0.0, "last_hidden_state": 0.0, "pooled": 0.0, "network alone": 0.0}
    for clip in golden_v2["meta"]["clips"]:
        name = clip["name"]
        arrays = {
            key: golden_v2["arrays"][f"{name}/{key}"]
            for key in ("waveform", "log_mel", "v2_3072/last_hidden_state", "v2_3072/pooled")
        }
        inputs = fe(arrays["waveform"], sampling_rate=16000, return_tensors="pt")
        audible = np.exp(arrays["log_mel"].astype(np.float64)) > 1e-6
        if audible.any():
            worst["log_mel"] = max(
                worst["log_mel"], float(np.abs(inputs["input_features"][0].numpy() - arrays["log_mel"])[audible].max())
            )
        with torch.no_grad():
            outputs = model(**inputs)
            alone = model(torch.from_numpy(arrays["log_mel"])[None])
        assert (
            outputs.last_hidden_state.shape == (1, clip["feature_frames"], 3072) == (1, clip["mel_frames"] // 4, 3072)
        )
        worst["last_hidden_state"] = max(
            worst["last_hidden_state"],
            relative_deviation(outputs.last_hidden_state[0].numpy(), arrays["v2_3072/last_hidden_state"]),
        )
        worst["pooled"] = max(
            worst["pooled"], relative_deviation(outputs.pooler_output[0].numpy(), arrays["v2_3072/pooled"])
        )
        worst["network alone"] = max(
            worst["network alone"],
            relative_deviation(alone.last_hidden_state[0].numpy(), arrays["v2_3072/last_hidden_state"]),
        )
    print("\nv2 (random 3072-d) vs the original v2 code: " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    assert worst["log_mel"] < LOG_MEL_ATOL
    assert max(worst["last_hidden_state"], worst["pooled"]) < HIDDEN_RTOL
    assert worst["network alone"] < 1e-5


def test_v2_batched_equals_each_clip_alone(golden_v2, random3072_dir):
    model = AutoModel.from_pretrained(random3072_dir).eval()
    fe = AutoFeatureExtractor.from_pretrained(random3072_dir)
    waveforms = [golden_v2["arrays"][f"{clip['name']}/waveform"] for clip in golden_v2["meta"]["clips"]]
    with torch.no_grad():
        batched = model(**fe(waveforms, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
        worst = 0.0
        for index, waveform in enumerate(waveforms):
            alone = model(**fe(waveform, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
            valid = alone.last_hidden_state.shape[1]
            for layer in range(model.config.num_hidden_layers):
                got, expected = batched.hidden_states[layer][index], alone.hidden_states[layer][0]
                worst = max(worst, relative_deviation(got[:valid].numpy(), expected.numpy()))
                assert torch.all(got[valid:] == 0)
            worst = max(
                worst, relative_deviation(batched.pooler_output[index].numpy(), alone.pooler_output[0].numpy())
            )
    print(f"\nv2 batched vs alone, every hidden state: {worst:.2g}")
    assert worst < 1e-5


def test_v2_hidden_states_are_defined_layers(random3072_dir):
    """conv1 (averaged 50 -> 25 Hz), conv2, fc1, fc2, output: five layers, each zero-padded to 3072."""
    model = AutoModel.from_pretrained(random3072_dir).eval()
    config = model.config
    assert config.num_hidden_layers == 5 and config.layer_hidden_size == 3072
    assert config.conv_hidden_sizes == [2048, 1024] and config.mlp_sizes == (2048, 2048)
    log_mel = torch.randn(2, 64, 203) * 3 - 8
    with torch.no_grad():
        outputs = model(log_mel, output_hidden_states=True)
        conv1, conv2, fc1, fc2, output = outputs.hidden_states
        assert all(state.shape == (2, 50, 3072) for state in outputs.hidden_states)
        torch.testing.assert_close(output, outputs.last_hidden_state, rtol=0, atol=0)
        torch.testing.assert_close(fc2[..., :2048], output[..., 1024:], rtol=0, atol=0)
        # conv2 is flattened channel-major (like v1's layered upstream); the output's conv part is mel-major.
        mel_major = output[..., :1024].reshape(2, 50, 16, 64).transpose(2, 3).reshape(2, 50, 1024)
        torch.testing.assert_close(conv2[..., :1024], mel_major, rtol=0, atol=0)
        for state, width in ((conv1, 2048), (conv2, 1024), (fc1, 2048), (fc2, 2048)):
            assert torch.all(state[..., width:] == 0)
        reference = model.conv_blocks[0](((log_mel - config.mean) / config.std)[:, None])  # (2, 64, 32, 101)
        averaged = reference[..., :100].reshape(2, 64, 32, 50, 2).mean(-1)
        averaged[..., -1] = reference[..., 98] / 2 + reference[..., 99:101].mean(-1) / 2  # odd tail, as the original
        expected = averaged.permute(0, 3, 1, 2).reshape(2, 50, 2048)
        torch.testing.assert_close(conv1[..., :2048], expected, rtol=1e-5, atol=1e-5)


def test_v2_ctc_uses_25_hz_frames():
    config = BYOLAConfig.from_variant("AudioNTT2022", mean=-9.0, std=4.0, vocab_size=6)
    head = BYOLAForCTC(config).eval()
    log_mel = torch.randn(1, 64, 101) * 3 - 8  # 1 s: 25 output frames
    labels = torch.ones(1, 26, dtype=torch.long)
    with torch.no_grad():
        assert head(log_mel).logits.shape == (1, 25, 6)
        assert torch.isfinite(head(log_mel, labels=labels[:, :25]).loss)
        with pytest.raises(ValueError, match="one frame per 40 ms"):
            head(log_mel, labels=labels)


def test_converter_detects_the_version_and_accepts_v2_layouts(tmp_path, random3072_checkpoint, random2048_checkpoint):
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
    result = subprocess.run(
        [
            sys.executable,
            console_script("byola-convert"),
            str(random3072_checkpoint),
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "AudioNTT2022, feature_d=3072, 25 frames/s" in result.stdout
    assert '"variant": "AudioNTT2022"' in (tmp_path / "cli" / "config.json").read_text()
    assert "AudioNTT2022" in (tmp_path / "cli" / "README.md").read_text()

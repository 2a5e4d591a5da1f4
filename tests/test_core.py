"""Parity of the core port with the original implementation's golden outputs, batching, errors, round trips."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from byola_hf import BYOLAConfig, BYOLAFeatureExtractor, BYOLAModel
from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint, load_original_state_dict

from conftest import console_script


LOG_MEL_ATOL = 1e-3  # where the mel power is above 1e-6 (reference/README.md)
HIDDEN_RTOL = 1e-4  # relative to the largest magnitude of the array


def clips(golden):
    return [(clip["name"], golden["arrays"][f"{clip['name']}/waveform"], clip) for clip in golden["meta"]["clips"]]


def relative_deviation(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


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


# ---------------------------------------------------------------- parity with the original implementation


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


def test_random2048_hidden_states_match_original(golden, random2048_dir):
    model = AutoModel.from_pretrained(random2048_dir).eval()
    fe = AutoFeatureExtractor.from_pretrained(random2048_dir)
    worst = [0.0] * 6
    for name, waveform, clip in clips(golden):
        with torch.no_grad():
            outputs = model(**fe(waveform, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
        assert len(outputs.hidden_states) == 5
        for layer in range(5):
            expected = golden["arrays"][f"{name}/random2048/hidden_state_{layer}"]
            actual = outputs.hidden_states[layer][0].numpy()
            assert actual.shape == expected.shape == (clip["feature_frames"], 2048)
            worst[layer] = max(worst[layer], relative_deviation(actual, expected))
        expected = golden["arrays"][f"{name}/random2048/pooled"]
        worst[5] = max(worst[5], relative_deviation(outputs.pooler_output[0].numpy(), expected))
        np.testing.assert_array_equal(outputs.last_hidden_state.numpy(), outputs.hidden_states[4].numpy())
    print(
        "\nrandom 2048-d, max relative deviation: "
        + ", ".join(
            f"{label}={value:.2g}" for label, value in zip(["conv1", "conv2", "conv3", "fc1", "fc2", "pooled"], worst)
        )
    )
    assert max(worst) < HIDDEN_RTOL


def test_real512_matches_original(golden, real512_dir):
    model = AutoModel.from_pretrained(real512_dir).eval()
    fe = AutoFeatureExtractor.from_pretrained(real512_dir)
    assert model.config.feature_d == 512
    worst_last, worst_pooled = 0.0, 0.0
    for name, waveform, clip in clips(golden):
        with torch.no_grad():
            outputs = model(**fe(waveform, sampling_rate=16000, return_tensors="pt"))
        expected = golden["arrays"][f"{name}/real512/last_hidden_state"]
        assert outputs.last_hidden_state.shape == (1, clip["feature_frames"], 512)
        worst_last = max(worst_last, relative_deviation(outputs.last_hidden_state[0].numpy(), expected))
        expected = golden["arrays"][f"{name}/real512/pooled"]
        worst_pooled = max(worst_pooled, relative_deviation(outputs.pooler_output[0].numpy(), expected))
    print(f"\nreal 512-d, max relative deviation: last_hidden_state={worst_last:.2g}, pooled={worst_pooled:.2g}")
    assert max(worst_last, worst_pooled) < HIDDEN_RTOL


def test_network_alone_from_golden_log_mel(golden, random2048_dir, real512_dir):
    """Fed the original's own log-mel, the network isolates the port of the layers from the front-end's rounding."""
    worst = 0.0
    for directory, tag, keys in [
        (random2048_dir, "random2048", [f"hidden_state_{i}" for i in range(5)] + ["pooled"]),
        (real512_dir, "real512", ["last_hidden_state", "pooled"]),
    ]:
        model = AutoModel.from_pretrained(directory).eval()
        for name, _, _ in clips(golden):
            log_mel = torch.from_numpy(golden["arrays"][f"{name}/log_mel"])[None]
            with torch.no_grad():
                outputs = model(log_mel, output_hidden_states=True)
            got = {f"hidden_state_{i}": outputs.hidden_states[i][0] for i in range(5)}
            got["pooled"], got["last_hidden_state"] = outputs.pooler_output[0], outputs.last_hidden_state[0]
            for key in keys:
                worst = max(worst, relative_deviation(got[key].numpy(), golden["arrays"][f"{name}/{tag}/{key}"]))
    print(f"\nnetwork on the original log-mel: max relative deviation {worst:.2g}")
    assert worst < 1e-5


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize("fixture", ["random2048_dir", "real512_dir"])
def test_padded_batch_equals_each_example_alone(golden, fixture, request):
    directory = request.getfixturevalue(fixture)
    model = AutoModel.from_pretrained(directory).eval()
    fe = AutoFeatureExtractor.from_pretrained(directory)
    waveforms = [waveform for _, waveform, _ in clips(golden)]
    batch = fe(waveforms, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        batched = model(**batch, output_hidden_states=True)
    worst = 0.0
    for index, waveform in enumerate(waveforms):
        alone_features = fe(waveform, sampling_rate=16000, return_tensors="pt")
        frames = alone_features["input_features"].shape[-1]
        np.testing.assert_array_equal(
            batch["input_features"][index, :, :frames].numpy(), alone_features["input_features"][0].numpy()
        )
        with torch.no_grad():
            alone = model(**alone_features, output_hidden_states=True)
        valid = alone.last_hidden_state.shape[1]
        assert int(batched.attention_mask[index].sum()) == valid
        for layer in range(5):
            got, expected = batched.hidden_states[layer][index, :valid], alone.hidden_states[layer][0]
            worst = max(worst, relative_deviation(got.numpy(), expected.numpy()))
            assert torch.all(batched.hidden_states[layer][index, valid:] == 0)
        worst = max(worst, relative_deviation(batched.pooler_output[index].numpy(), alone.pooler_output[0].numpy()))
    print(f"\n{fixture}: batched vs alone, max relative deviation {worst:.2g}")
    assert worst < 1e-5


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


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def tiny_model():
    return BYOLAModel(BYOLAConfig(feature_d=32, mean=-9.0, std=4.0)).eval()


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
        (lambda fe: fe(np.zeros(300, np.float32), sampling_rate=16000), ValueError, "too short"),
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


def test_model_errors(tiny_model):
    fe = BYOLAFeatureExtractor()
    short = fe(np.zeros(1119, np.float32), sampling_rate=16000, return_tensors="pt")
    with pytest.raises(ValueError, match="too short for one BYOL-A output frame.*at least 1120 samples"):
        tiny_model(**short)
    ok = fe(np.zeros(1120, np.float32), sampling_rate=16000, return_tensors="pt")
    assert tiny_model(**ok).last_hidden_state.shape == (1, 1, 32)
    with pytest.raises(ValueError, match=r"shape \(batch, 64, frames\).*feature extractor first"):
        tiny_model(torch.zeros(2, 16000))
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_model(torch.full((1, 64, 100), float("nan")))
    with pytest.raises(TypeError, match="return_tensors='pt'"):
        tiny_model(np.zeros((1, 64, 100), np.float32))
    with pytest.raises(ValueError, match="right padding"):
        tiny_model(torch.zeros(1, 64, 100), attention_mask=torch.tensor([[0] * 50 + [1] * 50]))
    no_stats = BYOLAModel(BYOLAConfig(feature_d=32))
    with pytest.raises(ValueError, match="no normalisation statistics.*byola-compute-stats"):
        no_stats(torch.zeros(1, 64, 100))


def test_config_validation():
    with pytest.raises(ValueError, match="both normalisation statistics or neither"):
        BYOLAConfig(mean=-9.0)
    with pytest.raises(ValueError, match="`std` must be positive"):
        BYOLAConfig(mean=-9.0, std=0.0)
    with pytest.raises(ValueError, match="must be a finite number"):
        BYOLAConfig(mean=float("nan"), std=1.0)
    with pytest.raises(ValueError, match="f_max <= sampling_rate / 2"):
        BYOLAConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="feature_d must be a positive integer"):
        BYOLAConfig(feature_d=0)


# ---------------------------------------------------------------- narrow models' hidden states


def test_narrow_model_hidden_states_are_zero_padded(golden, real512_dir):
    """feature_d < 2048: the original layered path cannot concatenate; we pad every layer to the widest (2048)."""
    model = AutoModel.from_pretrained(real512_dir).eval()
    fe = AutoFeatureExtractor.from_pretrained(real512_dir)
    name, waveform, clip = clips(golden)[0]
    with torch.no_grad():
        outputs = model(**fe(waveform, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
    assert model.config.layer_hidden_size == 2048
    assert [tuple(h.shape) for h in outputs.hidden_states] == [(1, clip["feature_frames"], 2048)] * 5
    for layer, width in zip(range(5), [2048, 1024, 512, 512, 512]):
        assert torch.all(outputs.hidden_states[layer][..., width:] == 0)
    torch.testing.assert_close(outputs.hidden_states[4][..., :512], outputs.last_hidden_state, rtol=0, atol=0)
    expected = golden["arrays"][f"{name}/real512/last_hidden_state"]
    assert relative_deviation(outputs.hidden_states[4][0, :, :512].numpy(), expected) < HIDDEN_RTOL


# ---------------------------------------------------------------- converter and round trips


def test_converter_cli_end_to_end(tmp_path, real512_checkpoint, golden):
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
    no_stats = subprocess.run(
        [
            sys.executable,
            console_script("byola-convert"),
            str(real512_checkpoint),
            str(tmp_path / "no-stats"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "No normalisation statistics yet" in no_stats.stdout


def test_converter_rejects_bad_files(tmp_path, real512_checkpoint):
    script = console_script("byola-convert")
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
    for path, message in [
        (truncated, "not a loadable PyTorch checkpoint"),
        (foreign, "not a BYOL-A (AudioNTT2020 / AudioNTT2022) checkpoint: missing features.0.weight"),
        (text, "not a loadable PyTorch checkpoint"),
        (pickled, "pickles code, which is refused"),
        (tmp_path / "missing.pth", "No checkpoint file"),
    ]:
        result = subprocess.run(
            [sys.executable, script, str(path), str(tmp_path / "out")], capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert "pickled code ran" not in result.stdout
    result = subprocess.run(
        [sys.executable, script, str(real512_checkpoint), str(tmp_path / "o"), "--mean", "1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--mean and --std go together" in result.stderr


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


def test_save_pretrained_round_trip(tmp_path, random2048_dir, golden):
    model = AutoModel.from_pretrained(random2048_dir).eval()
    fe = AutoFeatureExtractor.from_pretrained(random2048_dir)
    assert isinstance(model, BYOLAModel) and isinstance(fe, BYOLAFeatureExtractor)
    assert isinstance(AutoConfig.from_pretrained(random2048_dir), BYOLAConfig)
    assert fe.matches_model_config(model.config)
    model.save_pretrained(tmp_path)
    fe.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    reloaded_fe = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert reloaded.config.to_diff_dict() | {"_name_or_path": ""} == model.config.to_diff_dict() | {
        "_name_or_path": ""
    }
    assert reloaded_fe.to_dict() == fe.to_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    waveform = golden["arrays"]["espeak_command/waveform"]
    with torch.no_grad():
        a = model(**fe(waveform, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
        b = reloaded(**reloaded_fe(waveform, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert torch.equal(x, y)

"""BYOLAModel (v1 AudioNTT2020 and v2 AudioNTT2022) against the original code's golden outputs, batching, input
errors, save/load, bf16; the task heads (sequence, slots, CTC, frame): learning, masking, freezing, losses."""

import copy
import shutil

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, pipeline

import byola_hf  # noqa: F401  (registers the model type and the pipelines)
from byola_hf import (
    BYOLAConfig,
    BYOLAFeatureExtractor,
    BYOLAForAudioFrameClassification,
    BYOLAForCTC,
    BYOLAForSequenceClassification,
    BYOLAModel,
)
from byola_hf.inference_byola import masked_conv_block, update_running_statistics

from conftest import FE, HIDDEN_RTOL, LOG_MEL_ATOL, clips, relative_deviation, waveforms


@pytest.fixture(scope="module")
def tiny_model():
    return BYOLAModel(BYOLAConfig(feature_d=32, mean=-9.0, std=4.0)).eval()


def config(**kwargs) -> BYOLAConfig:
    return BYOLAConfig(feature_d=64, mean=-9.0, std=4.5, **kwargs)


HEADS = {
    "sequence": lambda: BYOLAForSequenceClassification(config(num_labels=4)),
    "slots": lambda: BYOLAForSequenceClassification(config(classifier_slots=[3, 2, 4], num_labels=9)),
    "ctc": lambda: BYOLAForCTC(config(vocab_size=12)),
    "ctc_bilstm": lambda: BYOLAForCTC(config(vocab_size=12, ctc_head="bilstm", ctc_proj_size=32, ctc_lstm_layers=2)),
    "frame": lambda: BYOLAForAudioFrameClassification(
        config(num_labels=2, problem_type="multi_label_classification", frame_lstm_hidden_size=16)
    ),
}


def labels_for(name: str, batch: dict) -> torch.Tensor:
    frames = batch["attention_mask"].shape[-1] // 8
    return {
        "sequence": torch.tensor([0, 3, 1]),
        "slots": torch.tensor([[0, 1, 3], [2, 0, 1], [1, 1, 0]]),
        "ctc": torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100], [7, -100, -100, -100]]),
        "ctc_bilstm": torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100], [7, -100, -100, -100]]),
        "frame": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[:, None, :].expand(3, frames, 2).contiguous(),
    }[name]


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


@pytest.mark.parametrize("fixture", ["random2048_dir", "real512_dir", "random3072_dir"])
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
        for layer in range(model.config.num_hidden_layers):
            got, expected = batched.hidden_states[layer][index, :valid], alone.hidden_states[layer][0]
            worst = max(worst, relative_deviation(got.numpy(), expected.numpy()))
            assert torch.all(batched.hidden_states[layer][index, valid:] == 0)
        worst = max(worst, relative_deviation(batched.pooler_output[index].numpy(), alone.pooler_output[0].numpy()))
    print(f"\n{fixture}: batched vs alone, max relative deviation {worst:.2g}")
    assert worst < 1e-5


def test_model_errors(tiny_model):
    fe = BYOLAFeatureExtractor()
    with pytest.raises(ValueError, match="1119 samples, too short for one BYOL-A output frame"):  # a padded batch
        fe(np.zeros(1119, np.float32), sampling_rate=16000, return_tensors="pt")
    short = fe(np.zeros(1119, np.float32), sampling_rate=16000, padding=False, return_tensors="pt")  # stats' rows
    with pytest.raises(ValueError, match="too short for one BYOL-A output frame.*at least 1120 samples"):
        tiny_model(**short)
    ok = fe(np.zeros(1120, np.float32), sampling_rate=16000, return_tensors="pt")
    assert tiny_model(**ok).last_hidden_state.shape == (1, 1, 32)
    # Any example of a padded batch, not the first only: one without an output frame pools to NaN.
    mask = (torch.arange(100)[None] < torch.tensor([[100], [5]])).long()
    with pytest.raises(ValueError, match="Example 1 has 5 log-mel frames, too short"):
        tiny_model(torch.zeros(2, 64, 100), attention_mask=mask)
    with pytest.raises(ValueError, match=r"shape \(batch, 64, frames\).*feature extractor first"):
        tiny_model(torch.zeros(2, 16000))
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_model(torch.full((1, 64, 100), float("nan")))
    with pytest.raises(TypeError, match="return_tensors='pt'"):
        tiny_model(np.zeros((1, 64, 100), np.float32))
    with pytest.raises(ValueError, match="right padding"):
        tiny_model(torch.zeros(1, 64, 100), attention_mask=torch.tensor([[0] * 50 + [1] * 50]))
    for values in ([0.5] * 100, [1.5] * 50 + [0.0] * 50):  # read as 0 and 50 frames once cast to integers
        with pytest.raises(ValueError, match="right padding"):
            tiny_model(torch.zeros(1, 64, 100), attention_mask=torch.tensor([values]))
    bool_mask = torch.tensor([[True] * 60 + [False] * 40])
    torch.testing.assert_close(
        tiny_model(torch.zeros(1, 64, 100), attention_mask=bool_mask).last_hidden_state,
        tiny_model(torch.zeros(1, 64, 100), attention_mask=bool_mask.float()).last_hidden_state,
    )
    no_stats = BYOLAModel(BYOLAConfig(feature_d=32))
    with pytest.raises(ValueError, match="no normalisation statistics.*byola-compute-stats"):
        no_stats(torch.zeros(1, 64, 100))


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
        with pytest.raises(ValueError, match="one frame per 40 ms"):  # training on it is refused
            head.train()(log_mel, labels=labels)


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


@pytest.mark.parametrize("name", list(HEADS))
def test_head_learns_and_masks(name):
    torch.manual_seed(0)
    model = HEADS[name]()
    batch = FE(waveforms(), sampling_rate=16000, return_tensors="pt")
    labels = labels_for(name, batch)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    assert not model.byola.training  # frozen encoder stays in eval mode
    losses = []
    for _ in range(60):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    print(f"\n{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.8 * losses[0]
    assert all(p.grad is None for p in model.byola.parameters())
    # padding does not change valid outputs: each example alone gives the batch's values
    model.eval()
    with torch.no_grad():
        batched = model(**batch).logits
        for index, waveform in enumerate(waveforms()):
            alone = model(**FE(waveform, sampling_rate=16000, return_tensors="pt")).logits[0]
            got = batched[index] if batched.ndim == 2 else batched[index, : alone.shape[0]]
            torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(HEADS))
def test_head_save_load_round_trip(name, tmp_path):
    model = HEADS[name]().eval()
    with torch.no_grad():
        model.featurizer.layer_weights.copy_(torch.arange(5.0))
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    batch = FE(waveforms(), sampling_rate=16000, return_tensors="pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    with torch.no_grad():  # LSTM kernels may reorder float sums between instances
        torch.testing.assert_close(model(**batch).logits, reloaded(**batch).logits, rtol=1e-5, atol=1e-6)


def test_head_from_converted_base_loads_encoder(real512_dir):
    head = BYOLAForSequenceClassification.from_pretrained(real512_dir, num_labels=3)
    base = BYOLAModel.from_pretrained(real512_dir)
    for key, value in base.state_dict().items():
        assert torch.equal(head.byola.state_dict()[key], value), key
    assert torch.all(head.featurizer.layer_weights == 0)  # equal weights at the start
    assert head.featurizer.output_size == 2048  # 512-d: layers are padded to the widest


def test_weighted_layer_sum_is_the_softmax_weighted_sum_of_the_hidden_states():
    """SUPERB's featurizer: `sum_l softmax(w)_l h_l` over the encoder's hidden states, in float64. The weights start
    equal (where a plain mean of the layers gives the same), so the test sets unequal ones, as training makes them."""
    model = HEADS["sequence"]().double().eval()
    with torch.no_grad():
        model.featurizer.layer_weights.copy_(torch.tensor([2.0, -1.0, 0.5, 0.0, 3.0]))
        log_mel = torch.randn(2, 64, 96, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 - 9
        outputs = model.byola(log_mel, output_hidden_states=True)
        weights = torch.softmax(model.featurizer.layer_weights, dim=0)
        expected = sum(weight * state for weight, state in zip(weights, outputs.hidden_states))
        torch.testing.assert_close(model.featurizer(outputs), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("trains", [True, False], ids=["fine-tuning", "training-mode-frozen"])
def test_training_mode_does_not_depend_on_how_much_padding_a_batch_holds(trains):
    # BatchNorm's batch statistics over every frame (padding included) moved the outputs by 0.26 and the running
    # statistics by 2e-4 when the same two clips came padded 64 frames further.
    torch.manual_seed(0)
    reference = BYOLAModel(config(hidden_dropout=0.0)).double()
    features = torch.randn(2, 64, 96, dtype=torch.float64) * 4 - 9
    mask = torch.ones(2, 96, dtype=torch.long)
    mask[1, 41:] = 0  # an odd length: its last frame counts in the first block's statistics, as alone

    def step(extra: int):
        model = BYOLAModel(reference.config).double().train()
        model.load_state_dict(reference.state_dict())
        model.requires_grad_(trains)
        outputs = model(nn.functional.pad(features, (0, extra)), attention_mask=nn.functional.pad(mask, (0, extra)))
        valid = outputs.last_hidden_state[:, :12] * outputs.attention_mask[:, :12, None]
        buffers = [buffer.clone() for name, buffer in model.named_buffers() if "running" in name]
        if trains:
            valid.square().sum().backward()
            buffers += [parameter.grad for parameter in model.parameters()]
        return [valid, *buffers]

    for got, expected in zip(step(64), step(0), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_masked_batch_norm_is_batch_norm_over_the_valid_frames_alone():
    torch.manual_seed(1)
    block = BYOLAModel(config()).conv_blocks[1].double().train()
    lengths = torch.tensor([10, 7, 3])
    hidden = torch.randn(3, 64, 16, 10, dtype=torch.float64)
    hidden *= (torch.arange(10) < lengths[:, None]).double()[:, None, None, :]  # zero past each end, as the model
    alone = copy.deepcopy(block)
    got = masked_conv_block(block, hidden, lengths)
    conv = torch.cat([alone.conv(hidden[i : i + 1, ..., :length]) for i, length in enumerate(lengths)], dim=-1)
    normalised = alone.batch_norm(conv).split(lengths.tolist(), dim=-1)  # one batch of the valid parts
    for index, length in enumerate(lengths.tolist()):
        expected = alone.activation(alone.pool(normalised[index]))[0]
        torch.testing.assert_close(got[index, ..., : length // 2], expected, rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(block.batch_norm, name), getattr(alone.batch_norm, name))


def test_masked_batch_norm_under_bf16_autocast_sums_in_float32():
    # Statistics summed in bf16 (the conv's autocast dtype) moved the running mean by 2e-3 of its size.
    torch.manual_seed(1)
    block = BYOLAModel(config()).conv_blocks[1].train()
    lengths = torch.tensor([10, 7, 3])
    hidden = torch.randn(3, 64, 16, 10) + 3.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv = block.conv(hidden).double()  # the bf16 values the block normalises
        masked_conv_block(block, hidden, lengths)
    valid = (torch.arange(10) < lengths[:, None]).double()[:, None, None, :]
    count = valid.sum() * conv.shape[-2]
    mean = (conv * valid).sum((0, 2, 3)) / count
    variance = ((conv - mean[:, None, None]).square() * valid).sum((0, 2, 3)) / count
    expected_mean, expected_var = 0.1 * mean, 0.9 + 0.1 * variance * count / (count - 1)
    torch.testing.assert_close(block.batch_norm.running_mean.double(), expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(block.batch_norm.running_var.double(), expected_var, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("momentum", [0.1, None, "untracked"])
def test_update_running_statistics_is_batch_norms_update(momentum):
    """The fused kernels' running-statistics update equals BatchNorm2d's own over three batches, with a momentum,
    with `momentum=None` (the cumulative average) and without running statistics."""
    torch.manual_seed(0)
    track = momentum != "untracked"
    modules, ours = (nn.BatchNorm2d(4, track_running_stats=track).double().train() for _ in range(2))
    modules.momentum = ours.momentum = None if momentum == "untracked" else momentum
    for _ in range(3):
        batch = torch.randn(5, 4, 3, 2, dtype=torch.float64) * 3 + 1
        modules(batch)
        mean, variance = batch.mean((0, 2, 3)), batch.var((0, 2, 3), unbiased=False)
        update_running_statistics(ours, mean, variance, 5 * 3 * 2)
    for name, buffer in modules.named_buffers():
        torch.testing.assert_close(ours.get_buffer(name), buffer, rtol=1e-12, atol=1e-12, msg=name)
    assert ours.running_mean is None if not track else int(ours.num_batches_tracked) == 3


def test_frozen_encoder_can_be_unfrozen():
    model = BYOLAForSequenceClassification(config(num_labels=2, freeze_base_model=False)).train()
    assert model.byola.training and all(p.requires_grad for p in model.byola.parameters())
    model.freeze_base_model()
    model.train()
    assert not model.byola.training and not any(p.requires_grad for p in model.byola.parameters())


@pytest.mark.parametrize("freeze", [True, False])
def test_a_loaded_heads_frozen_encoder_needs_no_gradient(freeze, tmp_path):
    """A head loaded from an encoder folder with a frozen encoder (the default) had every encoder parameter with
    `requires_grad=True` (loading put new ones in place): Trainer then counted the whole network as trainable while
    it got no gradient. Only the head's parameters may be counted; an unfrozen encoder's count too."""
    from transformers.trainer_pt_utils import get_model_param_count

    BYOLAModel(config()).save_pretrained(tmp_path)
    head = BYOLAForSequenceClassification.from_pretrained(tmp_path, num_labels=3, freeze_base_model=freeze)
    encoder = sum(parameter.numel() for parameter in head.byola.parameters())
    assert all(parameter.requires_grad is not freeze for parameter in head.byola.parameters())
    assert get_model_param_count(head, trainable_only=True) == head.num_parameters() - (encoder if freeze else 0)


def test_ctc_refuses_targets_longer_than_output_in_training_and_scores_them_in_evaluation():
    """Training on a target longer than its output frames would train nothing: an error naming the fix. Evaluated,
    such a clip is scored as s3prl scores it: logits for every frame, its loss zeroed (`ctc_zero_infinity`)."""
    model = BYOLAForCTC(config(vocab_size=12))
    batch = FE(waveforms(lengths=(8000,)), sampling_rate=16000, return_tensors="pt")  # 6 output frames
    labels = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    with pytest.raises(ValueError, match="target of 7 tokens but only 6 output frames.*one frame per 80 ms"):
        model(**batch, labels=labels)
    with torch.no_grad():
        output = model.eval()(**batch, labels=labels)
    assert output.logits.shape == (1, 6, 12) and output.loss.item() == 0.0


@pytest.mark.parametrize("bad", [-1, 12])
def test_ctc_refuses_labels_that_are_neither_tokens_nor_padding(bad):
    """Labels padded with -1 (or another negative value) instead of -100 gave a finite, wrong loss (5.07 where the
    -100-padded batch scores 9.45): torch's CTC loss takes them as targets without a check. Every label must be a
    token id below vocab_size or -100."""
    model = BYOLAForCTC(config(vocab_size=12)).eval()
    batch = FE(waveforms(lengths=(24000, 12000)), sampling_rate=16000, return_tensors="pt")
    with pytest.raises(ValueError, match=rf"token ids in \[0, 12\) or -100 \(padding\), got {bad}"):
        model(**batch, labels=torch.tensor([[1, 2, 3], [4, bad, bad]]))


def test_frame_loss_is_permutation_invariant():
    model = HEADS["frame"]().eval()
    batch = FE(waveforms(), sampling_rate=16000, return_tensors="pt")
    labels = labels_for("frame", batch)
    with torch.no_grad():
        assert torch.isclose(model(**batch, labels=labels).loss, model(**batch, labels=labels.flip(-1)).loss)
    with pytest.raises(ValueError, match="labels must have the logits' shape"):
        model(**batch, labels=labels[:, :-1])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 6])
def test_assignment_minimum_is_the_lowest_sum_over_every_order(size):
    """The SD loss tried every speaker order, each a BCE pass over the batch (num_labels! of them: 5 s a training step
    for 8 speakers here, hours for 10); it is an assignment over the speaker pairs' costs now, which must be the
    minimum over every order, with that order's gradient."""
    import itertools

    from byola_hf.modeling_byola import assignment_minimum

    generator = torch.Generator().manual_seed(size)
    cost = torch.randn(4, size, size, dtype=torch.float64, generator=generator, requires_grad=True)
    orders = torch.tensor(list(itertools.permutations(range(size))))  # (orders, size)
    every_order = cost[:, torch.arange(size), orders].sum(-1)  # (batch, orders)
    expected = every_order.min(-1).values
    found = assignment_minimum(cost)
    torch.testing.assert_close(found, expected, rtol=1e-12, atol=1e-12)
    (expected_gradient,) = torch.autograd.grad(expected.sum(), cost)
    (gradient,) = torch.autograd.grad(found.sum(), cost)
    assert torch.equal(gradient, expected_gradient)  # one 1 per row, in the best order's columns
    with pytest.raises(ValueError, match="square costs"):
        assignment_minimum(cost[:, :, :-1] if size > 1 else cost[0])


def test_assignment_minimum_traced_by_torch_export_leaves_later_calls_exact():
    """torch.export traced the tables' construction with fake tensors and left them in the table cache: every later
    SD loss or DER for that many speakers failed or returned a fake tensor."""
    from byola_hf.modeling_byola import assignment_minimum

    class Assignment(nn.Module):
        def forward(self, cost):
            return assignment_minimum(cost)

    cost = torch.tensor([[[1.0, 0.0, 5.0, 5.0], [0.0, 1.0, 5.0, 5.0], [5.0, 5.0, 1.0, 0.0], [5.0, 5.0, 0.0, 1.0]]])
    program = torch.export.export(Assignment(), (cost.repeat(2, 1, 1) + 7,))
    assert torch.equal(assignment_minimum(cost), torch.tensor([0.0]))
    assert torch.equal(program.module()(cost.repeat(2, 1, 1)), torch.tensor([0.0, 0.0]))


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "single_label_classification"])
def test_frame_loss_of_a_batch_without_a_labelled_frame_is_zero_not_nan(problem_type):
    """Every label row -100 (labels shorter than the clips): the loss was 0 / 0, a NaN that the step spreads into
    every weight; the batch adds nothing now, for speaker activity and frame classes alike."""
    model = BYOLAForAudioFrameClassification(
        config(num_labels=2, problem_type=problem_type, frame_lstm_hidden_size=16)
    ).train()
    batch = FE(waveforms(), sampling_rate=16000, return_tensors="pt")
    labels = torch.full_like(labels_for("frame", batch), -100.0)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert loss.item() == 0.0 and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_frame_loss_of_many_speakers_is_the_best_order_over_valid_frames():
    """The loss's definition (s3prl's pit_loss) for 4 speakers and a padded batch: per clip, the lowest over the 24
    speaker orders of the BCE summed over its valid frames (mean over speakers), over the batch's valid frames."""
    import itertools

    torch.manual_seed(0)
    model = BYOLAForAudioFrameClassification(
        config(num_labels=4, problem_type="multi_label_classification", frame_lstm_hidden_size=16)
    ).eval()
    nn.init.normal_(model.classifier.weight, std=3.0)
    batch = FE(waveforms(lengths=(48000, 12000)), sampling_rate=16000, return_tensors="pt")
    frames = (batch["attention_mask"].sum(-1) // 8).tolist()
    labels = torch.randint(0, 2, (2, max(frames), 4)).float()
    with torch.no_grad():
        output = model(**batch, labels=labels)
    logits, targets, total = output.logits.double(), labels.double(), 0.0
    for example, length in enumerate(frames):
        total += min(
            nn.functional.binary_cross_entropy_with_logits(
                logits[example, :length], targets[example, :length][:, order], reduction="none"
            )
            .mean(-1)
            .sum()
            for order in map(list, itertools.permutations(range(4)))
        )
    torch.testing.assert_close(output.loss.double(), total / sum(frames), rtol=1e-6, atol=0)


def test_frame_loss_weights_every_valid_frame_equally_as_s3prl():
    """s3prl's SD loss (`diarization/utils.py` pit_loss): per clip, the best speaker order's BCE summed over its valid
    frames (mean over speakers), then summed over the batch and divided by the batch's valid frames, so a long clip
    weighs by its length. A mean of per-clip means (the defect) gave a short clip's frames more weight."""
    torch.manual_seed(0)
    model = HEADS["frame"]().eval()
    nn.init.normal_(model.classifier.weight, std=3.0)  # logits far from 0: clips' mean losses differ
    batch = FE(waveforms(lengths=(48000, 12000)), sampling_rate=16000, return_tensors="pt")
    frames = batch["attention_mask"].sum(-1) // 8  # (37, 9) output frames
    labels = torch.randint(0, 2, (2, int(frames.max()), 2)).float()
    with torch.no_grad():
        output = model(**batch, labels=labels)
    logits, targets = output.logits.double(), labels.double()
    total = 0.0
    for example, length in enumerate(frames.tolist()):
        per_order = [
            nn.functional.binary_cross_entropy_with_logits(
                logits[example, :length], targets[example, :length][:, order], reduction="none"
            )
            .mean(-1)
            .sum()
            for order in ([0, 1], [1, 0])
        ]
        total += min(per_order)
    torch.testing.assert_close(output.loss.double(), total / frames.sum().double(), rtol=1e-6, atol=0)


def test_frame_loss_leaves_out_frames_without_a_label_row_as_s3prl():
    """A clip whose speaker labels are one row short of its output frames (byola-run-superb accepts one row apart;
    8 of the mini SD set's 40 clips are) is collated with -100 in that frame. The loss clamped it to 0 and trained
    it as silence of both speakers, counted among the batch's frames; s3prl's loss (and our DER) covers the labelled
    frames only."""
    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.tasks import SUPERB_TASKS

    torch.manual_seed(0)
    model = HEADS["frame"]().eval()
    nn.init.normal_(model.classifier.weight, std=3.0)
    batch = FE(waveforms(lengths=(48000, 12000)), sampling_rate=16000, return_tensors="pt")
    frames = (batch["attention_mask"].sum(-1) // 8).tolist()  # (37, 9) output frames
    rows = [frames[0], frames[1] - 1]  # the short clip's labels stop one frame early
    activity = [torch.randint(0, 2, (length, 2)).tolist() for length in rows]
    labels = recipe_for(SUPERB_TASKS["sd"], ["activity"]).collate_labels(activity, frames)
    assert labels[1, rows[1]].tolist() == [-100, -100]  # inside the clip's frames
    with torch.no_grad():
        output = model(**batch, labels=labels)
    logits, total = output.logits.double(), 0.0
    for example, length in enumerate(rows):
        targets = torch.tensor(activity[example], dtype=torch.float64)
        total += min(
            nn.functional.binary_cross_entropy_with_logits(logits[example, :length], targets[:, order]).mul(length)
            for order in ([0, 1], [1, 0])
        )
    torch.testing.assert_close(output.loss.double(), total / sum(rows), rtol=1e-6, atol=0)


@pytest.mark.parametrize("problem_type", [None, "single_label_classification"])
def test_frame_classes_keep_their_identity(problem_type):
    """A frame classifier loaded as transformers users load one (`AutoModelForAudioFrameClassification`, num_labels
    classes, one-hot label rows) trained SD's speaker loss: matched in the best order, the classes had no identity
    (swapping two columns gave the same loss) and 8 classes took 40320 orders a forward. Outside
    `multi_label_classification` the loss is transformers' (Wav2Vec2ForAudioFrameClassification's): cross-entropy
    against each row's class, over the valid frames whose row is not -100."""
    torch.manual_seed(0)
    model = BYOLAForAudioFrameClassification(config(num_labels=3, problem_type=problem_type)).eval()
    nn.init.normal_(model.classifier.weight, std=3.0)
    batch = FE(waveforms(lengths=(48000, 12000)), sampling_rate=16000, return_tensors="pt")
    frames = (batch["attention_mask"].sum(-1) // 8).tolist()  # (37, 9) output frames
    classes = torch.randint(0, 3, (2, frames[0]))
    labels = nn.functional.one_hot(classes, 3).float()
    labels[0, 5] = -100  # a frame without a label
    with torch.no_grad():
        output = model(**batch, labels=labels)
        swapped = model(**batch, labels=labels[..., [1, 0, 2]]).loss
    log_probabilities = nn.functional.log_softmax(output.logits.double(), dim=-1)
    kept = [(b, t) for b, length in enumerate(frames) for t in range(length) if (b, t) != (0, 5)]
    expected = -sum(log_probabilities[b, t, classes[b, t]] for b, t in kept) / len(kept)
    torch.testing.assert_close(output.loss.double(), expected, rtol=1e-6, atol=0)
    assert not torch.isclose(swapped, output.loss)
    with pytest.raises(ValueError, match="regression"):
        BYOLAForAudioFrameClassification(config(num_labels=3, problem_type="regression"))(**batch, labels=labels)


def test_slot_labels_shape_error():
    model = HEADS["slots"]()
    batch = FE(waveforms(), sampling_rate=16000, return_tensors="pt")
    with pytest.raises(ValueError, match=r"labels must have shape \(batch, 3\)"):
        model(**batch, labels=torch.tensor([0, 1, 2]))


def test_losses_are_transformers_losses_with_the_original_formulas():
    """The heads' losses (transformers' ForSequenceClassification / ForCTC) equal the plain formulas."""
    torch.manual_seed(0)
    log_mel = torch.randn(2, 64, 160) * 3 - 8
    single = BYOLAForSequenceClassification(BYOLAConfig(feature_d=512, mean=-9.0, std=4.0, num_labels=3)).eval()
    labels = torch.tensor([0, 2])
    output = single(log_mel, labels=labels)
    torch.testing.assert_close(output.loss, nn.functional.cross_entropy(output.logits, labels))
    multi = BYOLAForSequenceClassification(
        BYOLAConfig(feature_d=512, mean=-9.0, std=4.0, num_labels=3, problem_type="multi_label_classification")
    ).eval()
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    output = multi(log_mel, labels=targets)
    torch.testing.assert_close(output.loss, nn.functional.binary_cross_entropy_with_logits(output.logits, targets))
    ctc = BYOLAForCTC(BYOLAConfig(feature_d=512, mean=-9.0, std=4.0, vocab_size=5)).eval()
    tokens = torch.tensor([[1, 2, 3], [4, 1, -100]])
    output = ctc(log_mel, labels=tokens)
    log_probs = nn.functional.log_softmax(output.logits, dim=-1).transpose(0, 1)
    expected = nn.functional.ctc_loss(
        log_probs,
        torch.tensor([1, 2, 3, 4, 1]),
        torch.tensor([20, 20]),
        torch.tensor([3, 2]),
        blank=0,
        zero_infinity=True,
    )
    torch.testing.assert_close(output.loss, expected)


def test_heads_return_hidden_states_when_asked_and_refuse_unknown_arguments():
    """Defects fixed: hidden states were None with use_weighted_layer_sum=False; misspelt arguments were ignored."""
    log_mel = torch.randn(1, 64, 160) * 3 - 8
    for weighted in (True, False):
        head = BYOLAForSequenceClassification(config(num_labels=2, use_weighted_layer_sum=weighted)).eval()
        with torch.no_grad():
            outputs = head(log_mel, output_hidden_states=True)
            assert outputs.hidden_states is not None and len(outputs.hidden_states) == 5
            assert head(log_mel).hidden_states is None
            assert isinstance(head(log_mel, return_dict=False), tuple)
    model = BYOLAModel(config())
    with pytest.raises(TypeError, match="output_hidden_state"):
        model(log_mel, output_hidden_state=True)
    with pytest.raises(TypeError, match="attention_masks"):
        head(log_mel, attention_masks=torch.ones(1, 160))


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


def test_weights_of_another_model_in_the_folder_are_one_line(small_model, tmp_path, capsys):
    """A converted folder whose model.safetensors a user replaced with another model's (another feature_d): every
    command but byola-compute-stats ended in transformers' RuntimeError traceback. Now one line at from_pretrained,
    for the encoder and its heads, and byola-extract exits 2 with it; `ignore_mismatched_sizes=True` still loads."""
    from byola_hf.extract import main as extract_main

    from conftest import assert_one_line, run_main

    other = tmp_path / "other"
    torch.manual_seed(0)
    BYOLAModel(BYOLAConfig(feature_d=32, mean=-8.0, std=4.0)).save_pretrained(other)
    swapped = tmp_path / "swapped"
    shutil.copytree(small_model, swapped)
    shutil.copy(other / "model.safetensors", swapped / "model.safetensors")
    for model_class in (BYOLAModel, BYOLAForSequenceClassification):
        with pytest.raises(
            ValueError, match=r"do not fit the model its config describes \(.*fc1.bias: \(32,\) saved"
        ) as error:
            model_class.from_pretrained(swapped)
        assert isinstance(error.value, RuntimeError)  # what transformers raises for them, for library callers
    assert BYOLAModel.from_pretrained(swapped, ignore_mismatched_sizes=True).config.feature_d == 64
    audio = tmp_path / "audio"
    audio.mkdir()
    shutil.copy("/usr/share/sounds/alsa/Front_Center.wav", audio)
    arguments = ["--model_name_or_path", swapped, "--dataset_name", audio, "--output_dir", tmp_path / "out"]
    code, stderr = run_main(extract_main, [str(a) for a in arguments], capsys)
    assert_one_line(code, stderr, "byola-extract", "do not fit the model its config describes")


def test_weights_of_another_shape_print_no_loading_table_unless_asked_for(small_model, tmp_path):
    """Refused weights of another shape printed transformers' ten-line LOAD REPORT table before the one-line error
    (it was asked for `ignore_mismatched_sizes=True` internally); the table stays when the caller asks for it."""
    import logging

    other = tmp_path / "other"
    BYOLAModel(BYOLAConfig(feature_d=32, mean=-8.0, std=4.0)).save_pretrained(other)
    swapped = tmp_path / "swapped"
    shutil.copytree(small_model, swapped)
    shutil.copy(other / "model.safetensors", swapped / "model.safetensors")
    reports = []
    handler = logging.Handler()
    handler.emit = lambda record: reports.append(record.getMessage())  # what passes the loading logger's filters
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addHandler(handler)
    try:
        with pytest.raises(ValueError, match="or pass ignore_mismatched_sizes=True"):
            BYOLAModel.from_pretrained(swapped)
        assert not any("LOAD REPORT" in message for message in reports), reports
        BYOLAModel.from_pretrained(swapped, ignore_mismatched_sizes=True)
        assert any("LOAD REPORT" in message for message in reports)
    finally:
        report_logger.removeHandler(handler)


def test_missing_encoder_weights_are_refused_at_load(small_model, tmp_path):
    """A folder without some encoder weights: an error, not a network transformers fills with random ones. A head
    missing from an encoder folder is expected (new for fine-tuning)."""
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(small_model, damaged)
    weights = load_file(damaged / "model.safetensors")
    key = next(name for name in weights if name.endswith("fc1.weight"))
    del weights[key]
    save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
    for model_class in (BYOLAModel, BYOLAForSequenceClassification):
        with pytest.raises(ValueError, match="has no weights for .*fc1.weight: they would be random"):
            model_class.from_pretrained(damaged)
    model, info = BYOLAForSequenceClassification.from_pretrained(small_model, output_loading_info=True)
    assert info["missing_keys"] and not any(key.startswith("byola.") for key in info["missing_keys"])


def test_numpy_attention_mask_is_a_clear_error(small_model):
    model = BYOLAModel.from_pretrained(small_model).eval()
    inputs = BYOLAFeatureExtractor()(np.zeros(16000, np.float32), sampling_rate=16000, return_tensors="pt")
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        model(inputs["input_features"], attention_mask=inputs["attention_mask"].numpy())


@pytest.mark.parametrize("loader", [BYOLAForSequenceClassification, AutoModelForAudioClassification, AutoConfig])
def test_num_labels_disagreeing_with_id2label_is_refused(small_model, loader):
    """`from_pretrained(folder, num_labels=5, id2label={0: "a", 1: "b"})` silently built a 2-output head: transformers
    sets num_labels, then id2label replaces its labels. The two disagreeing is now a clear error, through the Auto
    classes too (they hand the model class a config already built, so a check there alone let them build 2 outputs)."""
    with pytest.raises(ValueError, match="num_labels=5 but id2label names 2 labels"):
        loader.from_pretrained(small_model, num_labels=5, id2label={0: "a", 1: "b"})
    head = BYOLAForSequenceClassification.from_pretrained(small_model, num_labels=2, id2label={0: "a", 1: "b"})
    assert head.classifier.out_features == 2 and head.config.id2label == {0: "a", 1: "b"}


def test_loading_and_saving_say_only_what_matters(tmp_path, capfd, caplog):
    """A head put on an encoder folder printed transformers' "LOAD REPORT" table of the head's keys (new, as
    expected), and every load and save of a few-MB model drew a progress bar. Now: no bar, no table, one info line
    for the new head; a head missing in part is still a warning naming what is new. Progress bars stay enabled."""
    import logging

    from safetensors.torch import load_file, save_file
    from transformers.utils import logging as transformers_logging

    BYOLAModel(config()).save_pretrained(tmp_path / "encoder")
    with caplog.at_level(logging.INFO, logger="byola_hf"):
        head = BYOLAForSequenceClassification.from_pretrained(tmp_path / "encoder", num_labels=3)
        head.save_pretrained(tmp_path / "head")
        BYOLAModel.from_pretrained(tmp_path / "head")  # the encoder taken out of a head model
    output = capfd.readouterr()
    for noise in ("LOAD REPORT", "Loading weights", "Writing model shards"):
        assert noise not in output.err + output.out, noise
    assert [record.levelname for record in caplog.records] == ["INFO"]
    assert "the task head is new" in caplog.records[0].getMessage()
    assert transformers_logging.is_progress_bar_enabled()

    weights = load_file(tmp_path / "head" / "model.safetensors")
    save_file({key: value for key, value in weights.items() if key != "classifier.bias"},
              tmp_path / "head" / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    caplog.clear()
    BYOLAForSequenceClassification.from_pretrained(tmp_path / "head")
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "lacks classifier.bias" in caplog.records[0].getMessage()


def test_input_gradients_in_training_mode_reach_the_input():
    # The CPU training kernels' fused first block gives its input no gradient: with an input that needs one
    # (saliency, adversarial examples) the modules must run, or the gradient would be silently missing.
    torch.manual_seed(0)
    model = BYOLAModel(config(hidden_dropout=0.0)).train()
    features = torch.randn(2, 64, 96) * 4 - 9
    gradients = []
    for kernels in ("cpu", "reference"):
        model.training_kernels = kernels
        inputs = features.clone().requires_grad_(True)
        model(inputs).pooler_output.square().sum().backward()
        gradients.append(inputs.grad)
    assert gradients[0] is not None and float(gradients[0].abs().max()) > 0
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-4, atol=1e-6)

"""Every fast path equals the reference computation: folded BatchNorm + channels-last, chunked long audio, bf16."""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoFeatureExtractor, AutoModel

from byola_hf import BYOLAConfig, BYOLAModel, inference_byola
from byola_hf.convert_byola_checkpoint import load_original_state_dict
from byola_hf.reference_network import original_forward

from conftest import slow


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).abs().max() / expected.float().abs().max())


def test_folded_conv_block_equals_unfused_modules(random2048_dir):
    """The CPU kernels' conv block (folded BatchNorm, pool before ReLU, channels-last, the first block in slices)
    against the block's own modules. Through the kernels: the block's `forward` is the modules themselves (the test
    once called it, comparing the modules with themselves)."""
    model = AutoModel.from_pretrained(random2048_dir).eval()
    kernels = inference_byola.CPUKernels()
    worst = 0.0
    step = inference_byola._FIRST_BLOCK_SLICE_VALUES // (2 * 32 * 64)  # first-block output columns per slice
    assert 301 // 2 < step < 2003 // 2 and (2003 // 2) % step  # one slice; several, the last one short
    for hidden in (torch.randn(2, 1, 64, 301), torch.randn(2, 1, 64, 2003) * 3):
        with torch.no_grad():
            for block in model.conv_blocks:
                fast = kernels.conv_block(block, hidden)
                reference = block.pool(block.activation(block.batch_norm(block.conv(hidden))))
                assert fast.shape == reference.shape
                worst = max(worst, relative(fast, reference))
                hidden = reference
    print(f"\nfolded BatchNorm, pool-then-ReLU, channels-last, sliced first block vs modules: {worst:.2g}")
    assert worst < 1e-5


def test_eval_with_gradients_takes_the_autograd_path(random2048_dir):
    """Gradients through an eval-mode model (saliency, adversarial work) use differentiable ops and agree."""
    model = AutoModel.from_pretrained(random2048_dir).eval()
    log_mel = (torch.randn(2, 64, 2003) * 3 - 8).requires_grad_()
    outputs = model(log_mel, output_hidden_states=True)
    outputs.pooler_output.sum().backward()
    assert log_mel.grad is not None and bool(log_mel.grad.abs().sum() > 0)
    with torch.inference_mode():
        fast = model(log_mel.detach(), output_hidden_states=True)
    worst = max(relative(a.detach(), b) for a, b in zip(outputs.hidden_states, fast.hidden_states))
    print(f"\neval with autograd vs inference fast path, every hidden state: {worst:.2g}")
    assert worst < 1e-5


def test_fast_model_equals_functional_original(random2048_checkpoint, random2048_dir, golden):
    """The whole eval path against an unfused functional computation straight from the original tensors."""
    model = AutoModel.from_pretrained(random2048_dir).eval()
    state_dict = load_original_state_dict(random2048_checkpoint)
    log_mel = torch.from_numpy(golden["arrays"]["sine_sweep_3s/log_mel"])[None]
    with torch.no_grad():
        expected = original_forward(state_dict, ((log_mel - model.config.mean) / model.config.std)[:, None])
        deviation = relative(model(log_mel).last_hidden_state, expected)
    print(f"\nfast eval path vs functional original: {deviation:.2g}")
    assert deviation < 1e-5


def training_pair(variant: str, kernels: str, dtype: torch.dtype) -> tuple[BYOLAModel, BYOLAModel]:
    """A training-mode encoder on the modules' layout and its copy on the `kernels` training kernels."""
    torch.manual_seed(0)
    config = BYOLAConfig.from_variant(variant, feature_d=32 if variant == "AudioNTT2020" else 1056)
    config.mean, config.std, config.hidden_dropout = -9.0, 4.0, 0.0
    reference = BYOLAModel(config).to(dtype).train()
    reference.training_kernels = "reference"
    fast = copy.deepcopy(reference)
    fast.training_kernels = kernels
    return reference, fast


def forward_backward(model: BYOLAModel, log_mel, mask, weights):
    outputs = model(log_mel, attention_mask=mask, output_hidden_states=True)
    (outputs.pooler_output * weights).sum().backward()
    return outputs


@pytest.mark.parametrize("variant", ["AudioNTT2020", "AudioNTT2022"])
@pytest.mark.parametrize("padded", [False, True])
def test_training_mode_through_the_training_kernels_is_the_modules_function(variant, padded):
    """A training-mode forward whose parameters train (fine-tuning) runs its conv blocks through the training kernels
    of pre-training. In float64 their layout computes the modules' function: every hidden state, gradient and
    BatchNorm running statistic, on a padded batch (masks between the blocks) too. (In float32 a padded v2 batch moves
    some gradients by a few percent either way: near-ties of the max over time among ReLU zeros flip with rounding.)"""
    reference, fast = training_pair(variant, "channels_last", torch.float64)
    assert type(fast._kernels(torch.zeros(1, 64, 8, dtype=torch.float64))).__name__ == "ChannelsLastKernels"
    log_mel = (torch.randn(3, 64, 200) * 4 - 9).double()
    mask = (torch.arange(200)[None] < torch.tensor([[200], [131], [77]])).long() if padded else None
    weights = torch.randn(3, reference.config.feature_d, dtype=torch.float64)
    expected, actual = (forward_backward(model, log_mel, mask, weights) for model in (reference, fast))
    for one, other in zip(expected.hidden_states, actual.hidden_states, strict=True):
        assert relative(other.detach(), one.detach()) < 1e-9
    scale = max(float(parameter.grad.abs().max()) for parameter in reference.parameters())
    for (name, one), other in zip(reference.named_parameters(), fast.parameters()):
        assert float((other.grad - one.grad).abs().max()) / scale < 1e-9, name
    for (name, one), other in zip(reference.named_buffers(), fast.buffers()):
        torch.testing.assert_close(other, one, rtol=1e-9, atol=1e-12, msg=name)
    fast.requires_grad_(False)  # a frozen encoder in training mode keeps the modules
    assert type(fast._kernels(log_mel)) is inference_byola.InferenceKernels


@pytest.mark.parametrize("variant", ["AudioNTT2020", "AudioNTT2022"])
def test_training_mode_on_cpu_fuses_the_first_block_within_float32_rounding(variant):
    """On CPU, float32, the training kernels fuse the first block (float64 checks of that block are in
    test_pretraining.py); outputs and gradients stay within float32 rounding of the modules'."""
    reference, fast = training_pair(variant, "cpu", torch.float32)
    assert type(fast._kernels(torch.zeros(1, 64, 8))).__name__ == "CPUTrainingKernels"
    log_mel, weights = torch.randn(3, 64, 200) * 4 - 9, torch.randn(3, reference.config.feature_d)
    expected, actual = (forward_backward(model, log_mel, None, weights) for model in (reference, fast))
    assert relative(actual.pooler_output.detach(), expected.pooler_output.detach()) < 1e-5
    # Relative to the largest gradient: a conv bias's gradient is zero (BatchNorm cancels it) but for rounding.
    scale = max(float(parameter.grad.abs().max()) for parameter in reference.parameters())
    for (name, one), other in zip(reference.named_parameters(), fast.parameters()):
        assert float((other.grad - one.grad).abs().max()) / scale < 1e-4, name
    assert int(fast.conv_blocks[0].batch_norm.num_batches_tracked) == 1  # batch statistics were used and tracked


@pytest.mark.parametrize("kernels", ["cpu", "accelerator"])
def test_chunked_long_audio_equals_unchunked(random2048_dir, golden, kernels):
    model = AutoModel.from_pretrained(random2048_dir).eval()
    model.inference_kernels = kernels  # long audio on a GPU runs the accelerator kernels chunk by chunk
    fe = AutoFeatureExtractor.from_pretrained(random2048_dir)
    speech = np.concatenate(
        [
            golden["arrays"]["espeak_command/waveform"],
            golden["arrays"]["alsa_front_center/waveform"],
            golden["arrays"]["sine_sweep_3s/waveform"][:30001],
        ]
    )
    batch = fe([speech, speech[:20000]], sampling_rate=16000, return_tensors="pt")  # padded batch, odd lengths
    worst = 0.0
    with torch.no_grad():
        whole = model(**batch, output_hidden_states=True, inference_chunk_frames=0)
        for chunk in (64, 200, 333):
            chunked = model(**batch, output_hidden_states=True, inference_chunk_frames=chunk)
            assert torch.equal(chunked.attention_mask, whole.attention_mask)
            for got, expected in zip(chunked.hidden_states, whole.hidden_states):
                assert got.shape == expected.shape
                worst = max(worst, relative(got, expected))
            worst = max(worst, relative(chunked.pooler_output, whole.pooler_output))
    print(f"\n{kernels} kernels, chunked vs unchunked, every hidden state and pooled: {worst:.2g}")
    assert worst < 1e-5
    # the default chunk size applies only to long inputs and can be overridden from the config
    assert model.config.inference_chunk_frames == 12000


def test_feature_extractor_in_runs_of_frames_equals_one_call(monkeypatch, golden):
    """Long audio goes through the STFT a run of frames at a time; the log-mel is that of one call."""
    from byola_hf import BYOLAFeatureExtractor, feature_extraction_byola

    fe = BYOLAFeatureExtractor()
    speech = np.concatenate(
        [golden["arrays"]["espeak_command/waveform"], golden["arrays"]["alsa_front_center/waveform"]] * 3
    )
    batch = [speech, speech[:20011]]  # padded batch, each example reflect-padded at its own end
    whole = fe(batch, sampling_rate=16000, return_tensors="pt")
    monkeypatch.setitem(feature_extraction_byola._STFT_FRAMES_PER_CALL, "cpu", 2 * 333)  # runs of 333 frames
    assert whole["input_features"].shape[-1] > 3 * 333
    runs = fe(batch, sampling_rate=16000, return_tensors="pt")
    assert torch.equal(runs["attention_mask"], whole["attention_mask"])
    deviation = float((runs["input_features"] - whole["input_features"]).abs().max())
    print(f"\nfeature extractor in runs of 333 frames vs one call: max abs deviation {deviation:.2g}")
    assert deviation < 1e-5


def test_bf16_autocast_stays_close_to_fp32(real512_dir, random2048_dir, golden):
    speech = [golden["arrays"]["espeak_command/waveform"], golden["arrays"]["alsa_front_center/waveform"]]
    for directory in (real512_dir, random2048_dir):
        model = AutoModel.from_pretrained(directory).eval()
        fe = AutoFeatureExtractor.from_pretrained(directory)
        batch = fe(speech, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            reference = model(**batch, output_hidden_states=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                fast = model(**batch, output_hidden_states=True)
        assert fe(speech[0], sampling_rate=16000)["input_features"][0].dtype == np.float32
        cosines = [
            float(nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))
            for a, b in zip(fast.hidden_states, reference.hidden_states)
        ]
        pooled = float(
            nn.functional.cosine_similarity(fast.pooler_output.double(), reference.pooler_output.double()).min()
        )
        print(
            f"\n{model.config.feature_d}-d bf16 vs fp32: layer cosines {[round(c, 5) for c in cosines]}, "
            f"pooled {pooled:.5f},"
            f" max relative deviation {relative(fast.last_hidden_state, reference.last_hidden_state):.2g}"
        )
        assert min(cosines) >= 0.999 and pooled >= 0.999


def test_original_front_end_and_reference_network_match_golden(random2048_checkpoint, golden):
    """The parts of the benchmarks' original-style baseline, the original front-end (nnAudio as the original code
    sets it up) and the plain reference network, compute the golden layers from the waveform; with the benchmark
    command's own check that its baseline equals our model (below), the benchmark's ratios compare equal work."""
    import nnAudio.features

    meta = golden["meta"]
    to_melspec = nnAudio.features.MelSpectrogram(
        sr=16000, n_fft=1024, win_length=1024, hop_length=160, n_mels=64, fmin=60, fmax=7800, power=2, verbose=False
    )
    waveform = torch.from_numpy(golden["arrays"]["espeak_command/waveform"])[None]
    state_dict = load_original_state_dict(random2048_checkpoint)
    with torch.no_grad():
        log_mel = (to_melspec(waveform) + torch.finfo(torch.float).eps).log()
        layers = original_forward(state_dict, ((log_mel - meta["mean"]) / meta["std"])[:, None], layered=True)
    assert len(layers) == 5
    for index, layer in enumerate(layers):
        expected = torch.from_numpy(golden["arrays"][f"espeak_command/random2048/hidden_state_{index}"])
        assert layer[0].shape == expected.shape and relative(layer[0], expected) < 1e-5, index


@slow
def test_benchmark_command_runs_and_agrees(tmp_path, random2048_checkpoint):
    """`benchmarks/benchmark.py` end to end (one repeat): every row compares equal outputs and reports a ratio; with
    `--memory` (one case: the measurement is the same for each, in two fresh processes) each side's peak memory and
    the long-clip rows."""
    import subprocess
    import sys

    from conftest import PROJECT_ROOT

    def benchmark(*arguments: str) -> dict:
        report = tmp_path / "benchmark.json"
        script = str(PROJECT_ROOT / "benchmarks" / "benchmark.py")
        common = ["--checkpoint", str(random2048_checkpoint), "--device", "cpu", "--shapes", "1x10s", "--repeats", "1"]
        subprocess.run([sys.executable, script, *common, *arguments, "--json", str(report)], check=True)
        return json.loads(report.read_text())

    rows = benchmark("--cases", "frontend,network,all,readme", "--long_audio_minutes", "0")["rows"]
    assert [row["case"] for row in rows] == ["frontend", "network", "all", "readme"]
    for row in rows:
        assert row["max_rel_deviation"] < 1e-5 and row["cosine"] > 0.999999
        assert row["ours_xrt"] > 0 and row["baseline_xrt"] > 0
    assert [row.get("goal") for row in rows] == [None, None, 3.0, None]  # the CPU goal: "all" in fp32
    assert isinstance(rows[2]["goal_met"], bool)
    results = benchmark("--cases", "all", "--memory", "--long_audio_minutes", "0.2")
    assert results["rows"][0]["ours_mb"] > 0 and results["rows"][0]["baseline_mb"] > 0
    assert [(row["hidden_states"], row["chunked"]) for row in results["long_audio"]] == [
        (False, True),
        (True, True),
        (True, False),
    ]
    assert all(row["peak_mb"] >= row["loaded_mb"] > 0 for row in results["long_audio"])


@pytest.mark.parametrize("fixture", ["random2048_dir", "random3072_dir"])
def test_every_kernel_set_equals_the_reference(fixture, request, golden):
    """The CPU and accelerator kernels (forced on CPU tensors) against the plain modules, padded batches too."""
    model = AutoModel.from_pretrained(request.getfixturevalue(fixture)).eval()
    fe = AutoFeatureExtractor.from_pretrained(request.getfixturevalue(fixture))
    waveforms = [golden["arrays"][f"{clip['name']}/waveform"] for clip in golden["meta"]["clips"]]
    inputs = fe(waveforms, sampling_rate=16000, return_tensors="pt")
    outputs = {}
    with torch.no_grad():
        for kernels in ("reference", "cpu", "accelerator"):
            model.inference_kernels = kernels
            outputs[kernels] = model(**inputs, output_hidden_states=True)
    worst = 0.0
    for kernels in ("cpu", "accelerator"):
        for got, expected in zip(outputs[kernels].hidden_states, outputs["reference"].hidden_states):
            worst = max(worst, relative(got, expected))
        worst = max(worst, relative(outputs[kernels].pooler_output, outputs["reference"].pooler_output))
    print(f"\n{fixture}: cpu and accelerator kernels vs reference modules, padded batch: {worst:.2g}")
    assert worst < 1e-5
    with pytest.raises(ValueError, match="Unknown inference kernels"):
        model.inference_kernels = "gpu"
        model(**inputs)


@pytest.mark.parametrize("kernels", ["cpu", "accelerator"])
def test_weights_edited_through_data_reach_the_fast_kernels(kernels):
    """Weights changed in place through `.data` (`p.data.copy_(q)`, an EMA update, weight surgery) bump no version
    counter: the folded BatchNorm, cached per version, kept the old weights and an eval forward returned the old
    model's outputs unchanged (106 off on the 512-d model's clip embedding after copying another model in)."""
    torch.manual_seed(0)
    model = BYOLAModel(BYOLAConfig(feature_d=32, mean=-9.0, std=4.0)).eval()
    model.inference_kernels = kernels
    features = torch.randn(3, 64, 96) * 4 - 9
    with torch.no_grad():
        before = model(features).last_hidden_state
        for block in model.conv_blocks:
            block.conv.weight.data.mul_(2.0)
            block.batch_norm.running_var.data.mul_(4.0)
        fast = model(features).last_hidden_state
        model.inference_kernels = "reference"
        expected = model(features).last_hidden_state
    assert relative(expected, before) > 0.1  # the edit changes the function
    assert relative(fast, expected) < 1e-5


@pytest.mark.parametrize("kernels", ["cpu", "accelerator"])
def test_folded_parameters_follow_running_statistics_updated_in_training(kernels):
    """A training-mode forward updates BatchNorm's running statistics in place without bumping their version
    counters: eval after it must not reuse the folding of the statistics before it (it returned stale outputs)."""
    torch.manual_seed(0)
    model = BYOLAModel(BYOLAConfig(feature_d=32, mean=-9.0, std=4.0))
    features = torch.randn(3, 64, 96) * 4 - 9
    model.eval().inference_kernels = kernels
    with torch.no_grad():
        model(features)  # folds and caches
        model.train()(torch.randn(4, 64, 96) * 8 - 5)  # new running statistics, weights untouched
        fast = model.eval()(features).last_hidden_state
        model.inference_kernels = "reference"
        expected = model(features).last_hidden_state
    assert relative(fast, expected) < 1e-5


@pytest.mark.parametrize("output_hidden_states", [False, True])
def test_torch_compile_fullgraph_equals_eager(random3072_dir, output_hidden_states):
    """No graph breaks (no host reads of values) for equal-length clips; v2 covers the same code as v1."""
    model = AutoModel.from_pretrained(random3072_dir).eval()
    log_mel = torch.randn(2, 64, 203) * 3 - 8
    with torch.no_grad():
        eager = model(log_mel, output_hidden_states=output_hidden_states)
        compiled = torch.compile(model, fullgraph=True)(log_mel, output_hidden_states=output_hidden_states)
    pairs = [(compiled.last_hidden_state, eager.last_hidden_state), (compiled.pooler_output, eager.pooler_output)]
    if output_hidden_states:
        pairs += list(zip(compiled.hidden_states, eager.hidden_states))
    worst = max(relative(got, expected) for got, expected in pairs)
    print(f"\ntorch.compile(fullgraph=True) vs eager, output_hidden_states={output_hidden_states}: {worst:.2g}")
    assert worst < 1e-5


@pytest.mark.parametrize("fixture", ["random2048_dir", "random3072_dir"])
def test_accelerator_forward_reads_no_values_back(fixture, request):
    """What a GPU forward runs (the accelerator kernels, values unchecked as on a GPU) never reads a tensor's value on
    the host: no `.item()`/`int()`/`bool()`/`torch.equal`, each of which would stall a GPU's queue. Padded batch with
    its mask, all hidden states."""
    directory = request.getfixturevalue(fixture)
    model = AutoModel.from_pretrained(directory).eval()
    model.inference_kernels = "accelerator"
    fe = AutoFeatureExtractor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    inputs = fe(
        [rng.standard_normal(n).astype(np.float32) for n in (16000, 9000)], sampling_rate=16000, return_tensors="pt"
    )
    host_reads = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal"}
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        model(**inputs, output_hidden_states=True, check_values=False)
    names = {event.key for event in profile.key_averages()}
    assert "aten::convolution" in names  # the profile saw the forward
    assert not names & host_reads, sorted(names & host_reads)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        model(**inputs, output_hidden_states=True)  # on CPU the values are checked by default: the test can see it
    assert {event.key for event in profile.key_averages()} & host_reads

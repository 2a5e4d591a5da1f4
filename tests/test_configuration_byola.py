"""BYOLAConfig: validation of its fields, and former field names that still load with a warning."""

import os
import signal
import time

import numpy as np
import pytest
import torch

from byola_hf import BYOLAConfig, BYOLAFeatureExtractor, BYOLAModel


def test_config_validation():
    with pytest.raises(ValueError, match="both normalisation statistics or neither"):
        BYOLAConfig(mean=-9.0)
    with pytest.raises(ValueError, match="`std` must be positive"):
        BYOLAConfig(mean=-9.0, std=0.0)
    with pytest.raises(ValueError, match="must be a finite number"):
        BYOLAConfig(mean=float("nan"), std=1.0)
    # Finite in float64, useless in the float32 the model computes in (a trial found 1e-40 accepted).
    with pytest.raises(ValueError, match="below float32's smallest normal number"):
        BYOLAConfig(mean=-9.0, std=1e-40)
    with pytest.raises(ValueError, match="beyond float32's range"):
        BYOLAConfig(mean=-1e39, std=1.0)
    with pytest.raises(ValueError, match="f_max <= sampling_rate / 2"):
        BYOLAConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="feature_d must be a positive integer"):
        BYOLAConfig(feature_d=0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork only")
def test_forked_workers_compute_after_the_parent_used_torch_threads():
    """`ds.map(lambda batch: fe(batch["audio"], padding=False), batched=True, num_proc=2)` (docs/api.md's recipe with
    workers) hung forever: loading the feature extractor (or the model) runs a parallel torch op, and a child forked
    from a process whose OpenMP pool exists deadlocks at its own first parallel op (the log-mel's reflect padding).
    Forked children of a process that imported byola_hf compute with one torch thread, as DataLoader workers do."""
    torch.randn(1 << 20).sum()  # a parallel region in this process, as from_pretrained runs one
    model = BYOLAModel(BYOLAConfig(feature_d=64, mean=-9.0, std=4.5)).eval()
    pid = os.fork()
    if pid == 0:  # the child: the feature extractor and the model, then out without pytest's teardown
        try:
            with torch.no_grad():
                model(**BYOLAFeatureExtractor()(np.zeros(16000, np.float32), sampling_rate=16000, return_tensors="pt"))
            os._exit(0)
        except BaseException:
            os._exit(1)
    deadline = time.monotonic() + 30
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if status[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in its first torch computation")
    assert os.waitstatus_to_exitcode(status[1]) == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"classifier_head": "EVAR"}, "classifier_head must be one of"),
        ({"classifier_head": "evar"}, "set use_weighted_layer_sum=False"),
        ({"ctc_head": "lstm"}, "ctc_head must be 'linear' or 'bilstm'"),
        ({"classifier_slots": [0, 3]}, "classifier_slots must be positive class counts"),
        ({"feature_d": 0}, "feature_d must be a positive integer"),
    ],
)
def test_from_pretrained_overrides_are_validated_as_the_constructor_validates_them(tmp_path, override, message):
    """`AutoModelForAudioClassification.from_pretrained(dir, classifier_head="EVAR")` built the SUPERB head and
    `AutoModelForCTC.from_pretrained(dir, ctc_head="lstm")` a linear one, without a word: transformers sets
    `from_pretrained`'s overrides on a config already built, past the checks `BYOLAConfig(...)` makes."""
    from transformers import AutoConfig, AutoModelForAudioClassification

    torch.manual_seed(0)
    BYOLAModel(BYOLAConfig(feature_d=64, mean=-9.0, std=4.5)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        BYOLAConfig(**{"feature_d": 64, **override})
    with pytest.raises(ValueError, match=message):
        AutoConfig.from_pretrained(tmp_path, **override)
    with pytest.raises(ValueError, match=message):
        AutoModelForAudioClassification.from_pretrained(tmp_path, num_labels=3, **override)


def test_min_samples_and_pretraining_config_overrides():
    """v2's fewest samples are the STFT's reflect padding's, n_fft // 2 + 1 = 513 (512 passed the check and then
    failed inside torch), v1's one output frame's 7 hops; and `from_encoder_config`'s keyword arguments override
    the encoder's own fields, statistics included (the encoder's won, unnoticed by the command, which passes none)."""
    from byola_hf import BYOLAPreTrainingConfig

    v1, v2 = BYOLAConfig.from_variant("AudioNTT2020"), BYOLAConfig.from_variant("AudioNTT2022")
    assert (v1.min_samples, v2.min_samples) == (1120, 513)
    extractor = BYOLAFeatureExtractor.from_model_config(v2)
    assert extractor.min_samples == 513 and extractor(np.zeros(513, np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="at least 513"):
        extractor(np.zeros(512, np.float32), sampling_rate=16000)
    encoder = BYOLAConfig(mean=-9.0, std=4.0)
    pretraining = BYOLAPreTrainingConfig.from_encoder_config(encoder, mean=-5.0, std=3.0, ema_decay=0.9)
    assert (pretraining.mean, pretraining.std, pretraining.ema_decay) == (-5.0, 3.0, 0.9)
    assert BYOLAPreTrainingConfig.from_encoder_config(encoder).mean == -9.0


def test_frame_rate_labels_and_pretraining_config_fields():
    """The published frame rates (12.5 Hz is not 12), a `num_labels` that contradicts `id2label` refused when a
    saved config loads, and the pre-training config: each variant's defaults, 96-frame crops, the NTT licence's
    `converted_from` kept both ways, keyword arguments winning over its own fields, sizes checked."""
    from byola_hf import BYOLAPreTrainingConfig

    v1, v2 = (
        BYOLAConfig.from_variant(name, converted_from=f"{name}.pth") for name in ("AudioNTT2020", "AudioNTT2022")
    )
    assert (v1.frames_per_second, v2.frames_per_second) == (12.5, 25.0)
    with pytest.raises(ValueError, match="num_labels=3 but id2label names 2 labels"):
        BYOLAConfig.from_dict(v1.to_dict(), num_labels=3, id2label={0: "a", 1: "b"})
    for encoder, defaults in ((v1, (0.4, 0.0, True)), (v2, (0.2, 1.0, False))):
        pretraining = BYOLAPreTrainingConfig.from_encoder_config(encoder)
        assert (pretraining.mixup_ratio, pretraining.fader_gain, pretraining.pad_both_ends) == defaults
        assert (pretraining.crop_samples, pretraining.crop_frames) == (15200, 96)
        assert pretraining.converted_from == pretraining.encoder_config().converted_from == f"{encoder.variant}.pth"
        assert (pretraining.encoder_config(mean=-1.0, std=2.0).mean, pretraining.encoder_config().mean) == (-1.0, None)
    with pytest.raises(ValueError, match="projection_size must be a positive integer"):
        BYOLAPreTrainingConfig(projection_size=0)

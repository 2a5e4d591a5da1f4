"""BYOL-A pre-training: the augmentation blocks and the learner against the original code's outputs
(../shared/reference_pretrain), the samplers' distributions, and `byola-pretrain` end to end on real sound files."""

import json
import random

import numpy as np
import pytest
import torch

from byola_hf.pretraining.augmentations import (
    MixupMemoryBank,
    linear_fade,
    log_mixup_exp,
    normalize_batch,
    random_resize_crop,
    sample_crop_boxes,
    sample_fader_ends,
)
from byola_hf.pretraining.modeling_pretraining import BYOLAForPreTraining, BYOLAPreTrainingConfig

from conftest import require_shared


@pytest.fixture(scope="module")
def reference() -> dict:
    meta = json.loads(require_shared("reference_pretrain/golden_pretrain.json").read_text())
    arrays = dict(np.load(require_shared("reference_pretrain/golden_pretrain.npz")))
    return {"meta": meta, "arrays": arrays}


# --- augmentation blocks, given the original's draws -------------------------------------------------------------


def test_random_resize_crop_equals_original(reference):
    x = torch.from_numpy(reference["arrays"]["aug_input"])
    crops = random_resize_crop(x, torch.tensor(reference["meta"]["rrc_boxes"]))
    # The README's tolerance: the original's float32 result is 8.3e-5 from the exact formula here.
    np.testing.assert_allclose(crops.numpy(), reference["arrays"]["rrc_output"], rtol=0, atol=2e-4)
    # A box off by one row is far outside that tolerance, so the test can fail.
    shifted = torch.tensor(reference["meta"]["rrc_boxes"]) + torch.tensor([1, 0, 0, 0])
    assert np.abs(random_resize_crop(x, shifted).numpy() - reference["arrays"]["rrc_output"]).max() > 1e-2


def test_linear_fade_equals_original(reference):
    x = torch.from_numpy(reference["arrays"]["aug_input"])
    faded = linear_fade(x, torch.tensor(reference["meta"]["fader_ends"]))
    np.testing.assert_allclose(faded.numpy(), reference["arrays"]["fader_output"], rtol=1e-6, atol=2e-6)


def test_log_mixup_exp_equals_original(reference):
    x = torch.from_numpy(reference["arrays"]["aug_input"])
    for k, alpha in enumerate(reference["arrays"]["mixup_alpha"]):
        mixed = log_mixup_exp(x[k : k + 1], x[k + 3 : k + 4], float(alpha))
        np.testing.assert_allclose(mixed.numpy(), reference["arrays"]["mixup_output"][k : k + 1], atol=2e-6)
    batched = log_mixup_exp(x[:3], x[3:], torch.from_numpy(reference["arrays"]["mixup_alpha"]))
    np.testing.assert_allclose(batched.numpy(), reference["arrays"]["mixup_output"], atol=2e-6)


def test_memory_bank_sequence_equals_original(reference):
    x = torch.from_numpy(reference["arrays"]["aug_input"])
    draws = reference["meta"]["mixup_sequence_draws"]
    alpha = torch.tensor([a for a, _ in draws], dtype=torch.float64)
    pick = torch.tensor([-1 if p is None else p for _, p in draws])
    expected = reference["arrays"]["mixup_sequence_output"]
    bank = MixupMemoryBank(0.4, 2048, (1, 64, 96))
    np.testing.assert_allclose(bank(x, alpha, pick).numpy(), expected, atol=2e-6)  # the whole sequence at once
    one_by_one = MixupMemoryBank(0.4, 2048, (1, 64, 96))
    outputs = [one_by_one(x[k : k + 1], alpha[k : k + 1], pick[k : k + 1]) for k in range(len(x))]
    np.testing.assert_allclose(torch.cat(outputs).numpy(), expected, atol=2e-6)
    # The bank is state: saved and loaded with the model's.
    assert int(bank.state_dict()["pushed"]) == 6
    torch.testing.assert_close(bank.state_dict()["bank"][:6], x)


def test_memory_bank_is_a_fifo():
    """A small bank keeps the last `size` inputs across batches, whatever the batch sizes."""
    bank = MixupMemoryBank(0.4, 5, (1, 2, 3))
    inputs = torch.arange(13.0)[:, None, None, None].expand(13, 1, 2, 3).contiguous()
    for batch in (inputs[:3], inputs[3:10], inputs[10:]):
        bank(batch)
    held = {float(v) for v in bank.bank[:, 0, 0, 0]}
    assert held == {8.0, 9.0, 10.0, 11.0, 12.0}
    # After 13 pushes the oldest entry is input 8; the input after the next one sees the next one as its newest
    # entry (the original pushes each input right after mixing it).
    x = torch.full((2, 1, 2, 3), -50.0)
    one = torch.ones(2, dtype=torch.float64)
    mixed = bank(x, one, torch.tensor([0, 4]))[:, 0, 0, 0].numpy()
    np.testing.assert_allclose(mixed, np.log(np.exp([8.0, -50.0]) + np.finfo(np.float32).eps), rtol=1e-6)


def test_normalize_batch_equals_original(reference):
    x = torch.from_numpy(reference["arrays"]["aug_input"])
    np.testing.assert_allclose(normalize_batch(x).numpy(), reference["arrays"]["normalize_batch_output"], atol=1e-6)


# --- samplers: the original's ranges and distributions -----------------------------------------------------------


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (works for discrete values too)."""
    values = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def original_crop_box(rng: np.random.Generator, py: random.Random, frequency: int, time: int) -> list[int]:
    """The original `RandomResizeCrop.get_params` (canvas 1.0 x F, 1.5 x T; scales 0.6-1.5), restated."""
    canvas_h, canvas_w = int(frequency * 1.0), int(time * 1.5)
    h = int(np.clip(int(rng.uniform(0.6, 1.5) * frequency), 1, canvas_h))
    w = int(np.clip(int(rng.uniform(0.6, 1.5) * time), 1, canvas_w))
    i = py.randint(0, canvas_h - h) if canvas_h > h else 0
    j = py.randint(0, canvas_w - w) if canvas_w > w else 0
    return [i, j, h, w]


def test_crop_box_sampler_matches_original_distribution():
    count = 20000
    ours = sample_crop_boxes(count, 64, 96, generator=torch.Generator().manual_seed(0)).numpy()
    rng, py = np.random.default_rng(0), random.Random(0)
    theirs = np.array([original_crop_box(rng, py, 64, 96) for _ in range(count)])
    i, j, h, w = ours.T
    assert h.min() >= 38 and h.max() == 64 and w.min() >= 57 and w.max() <= 144
    assert (i >= 0).all() and (i + h <= 64).all() and (j >= 0).all() and (j + w <= 144).all()
    assert (i[h == 64] == 0).all()  # a full-height crop has no room to move
    # 1.63 / sqrt(n / 2): the 1% critical value of the two-sample KS test.
    critical = 1.63 * np.sqrt(2 / count)
    for column in range(4):
        assert ks_statistic(ours[:, column], theirs[:, column]) < critical, column
    assert ks_statistic(ours[:, 1], theirs[:, 1] + 3) > critical  # a shifted distribution is detected


def test_mixup_and_fader_draws_match_original_distribution():
    count = 20000
    torch.manual_seed(0)
    bank = MixupMemoryBank(0.4, 2048, (1, 2, 2))
    bank.pushed.fill_(10)
    alpha, pick = bank.sample(count)
    assert 0 <= alpha.min() and alpha.max() < 0.4
    held = torch.clamp(10 + torch.arange(count), max=2048)
    assert (pick >= 0).all() and (pick < held).all()
    critical = 1.63 * np.sqrt(2 / count)
    rng = np.random.default_rng(1)
    assert ks_statistic(alpha.numpy(), 0.4 * rng.random(count)) < critical
    # pick / held is uniform on [0, 1) as np.random.randint(len(bank)) / len(bank).
    theirs = np.array([rng.integers(n) / n for n in held.numpy()])
    assert ks_statistic((pick / held).numpy(), theirs) < critical
    assert MixupMemoryBank(0.4, 8, (1, 2, 2)).sample(3)[1][0] == -1  # empty bank: no background
    ends = sample_fader_ends(count, 1.0, generator=torch.Generator().manual_seed(2)).numpy()
    assert ends.shape == (count, 2) and -1 <= ends.min() and ends.max() < 1
    for column in range(2):
        assert ks_statistic(ends[:, column], 1.0 * (2.0 * rng.random(count) - 1.0)) < critical


# --- the learner --------------------------------------------------------------------------------------------------


def test_three_steps_reproduce_original_losses(reference):
    """Three BYOL steps of the original learner's state (`learner_initial.pt`) on the reference views."""
    meta, arrays = reference["meta"], reference["arrays"]
    config = BYOLAPreTrainingConfig(
        feature_d=meta["feature_d"],
        hidden_dropout=meta["dropout"],
        projection_size=meta["projection_size"],
        projection_hidden_size=meta["projection_hidden_size"],
        ema_decay=meta["ema_decay"],
        mixup_memory_size=2,
    )
    model = BYOLAForPreTraining(config)
    state = torch.load(require_shared("reference_pretrain/learner_initial.pt"), weights_only=True)
    model.load_original_learner_state(state)
    assert not any(p.requires_grad for p in (*model.target_encoder.parameters(), *model.target_projector.parameters()))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=meta["lr"])
    model.train()
    views = torch.from_numpy(arrays["views"])
    batch = views.shape[2]
    for step in range(meta["steps"]):
        x = normalize_batch(torch.cat([views[step, 0], views[step, 1]]))
        loss = model(x[:batch], x[batch:]).loss
        np.testing.assert_allclose(loss.item(), arrays["losses"][step], rtol=1e-5)
        loss.backward()
        optimizer.step()
        model.update_target()
        optimizer.zero_grad()
    model.eval()
    probe = torch.from_numpy(arrays["probe"])
    with torch.no_grad():
        online, target = model.embed(model.encoder, probe), model.embed(model.target_encoder, probe)
        outputs = {
            "online_eval": online,
            "target_eval": target,
            "online_projection": model.projector(online),
            "target_projection": model.target_projector(target),
            "online_prediction": model.predictor(model.projector(online)),
        }
    # Eval-mode outputs cannot match to 1e-5: the biases in front of BatchNorm get zero gradients up to float
    # rounding, which Adam scales to steps of +-lr; their values depend on summation order (1 vs 2 threads moves
    # them by 7e-4 here) and reach the outputs through the running means. Measured: online 5e-3, target 1e-4 of the
    # largest value; a wrong EMA, loss or mapping is off by orders of magnitude more.
    for name, tolerance in [("online_eval", 2e-2), ("online_projection", 2e-2), ("online_prediction", 2e-2)]:
        scale = np.abs(arrays[name]).max()
        np.testing.assert_allclose(outputs[name].numpy(), arrays[name], atol=tolerance * scale, rtol=0)
    for name in ("target_eval", "target_projection"):
        scale = np.abs(arrays[name]).max()
        np.testing.assert_allclose(outputs[name].numpy(), arrays[name], atol=1e-3 * scale, rtol=0)


def test_learner_state_mapping_refuses_foreign_keys(reference):
    model = BYOLAForPreTraining(BYOLAPreTrainingConfig(feature_d=512, projection_hidden_size=4096))
    state = torch.load(require_shared("reference_pretrain/learner_initial.pt"), weights_only=True)
    with pytest.raises(ValueError, match="Unexpected key"):
        model.load_original_learner_state({**state, "online_encoder.net.extra.weight": torch.zeros(1)})
    state.pop("online_predictor.net.3.bias")
    with pytest.raises(ValueError, match="missing"):
        model.load_original_learner_state(state)


def test_ema_update_and_encoder_export(tmp_path):
    config = BYOLAPreTrainingConfig(feature_d=64, projection_hidden_size=32, projection_size=16, mixup_memory_size=4)
    model = BYOLAForPreTraining(config)
    torch.testing.assert_close(model.target_encoder.fc1.weight, model.encoder.fc1.weight)
    before = model.target_encoder.fc1.weight.clone()
    with torch.no_grad():
        model.encoder.fc1.weight.add_(1.0)
    model.update_target()
    torch.testing.assert_close(model.target_encoder.fc1.weight, before + 0.01)
    # The views path: raw log-mel crops -> two normalised views -> a loss with gradients.
    model.config.mean, model.config.std = -5.0, 3.0
    loss = model(input_features=torch.randn(4, 64, config.crop_frames) * 3 - 5).loss
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.fc1.weight.grad is not None
    assert int(model.augmentation.mixup.pushed) == 8
    from transformers import AutoModel

    model.save_encoder(tmp_path / "encoder")
    loaded = AutoModel.from_pretrained(tmp_path / "encoder")
    assert type(loaded).__name__ == "BYOLAModel" and (loaded.config.mean, loaded.config.std) == (-5.0, 3.0)
    assert not hasattr(loaded.config, "projection_size")
    torch.testing.assert_close(loaded.fc2.weight, model.encoder.fc2.weight)

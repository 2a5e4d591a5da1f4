"""Task heads: shapes, learning, masking, frozen encoder, save/load, pipelines, processor, metrics."""

import evaluate
import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForAudioClassification, AutoProcessor, pipeline

from byola_hf import (
    BYOLAConfig,
    BYOLAFeatureExtractor,
    BYOLAForAudioFrameClassification,
    BYOLAForCTC,
    BYOLAForSequenceClassification,
    BYOLAModel,
    BYOLAProcessor,
)
from byola_hf.superb.metrics import metric_path
from byola_hf.superb.run import build_ctc_tokenizer


FE = BYOLAFeatureExtractor()


def config(**kwargs) -> BYOLAConfig:
    return BYOLAConfig(feature_d=64, mean=-9.0, std=4.5, **kwargs)


def waveforms(seed: int = 0, lengths=(8000, 16000, 12345)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (0.1 * rng.standard_normal(n) * np.sin(np.arange(n) / (50 + 10 * i))).astype(np.float32)
        for i, n in enumerate(lengths)
    ]


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


def test_frozen_encoder_can_be_unfrozen():
    model = BYOLAForSequenceClassification(config(num_labels=2, freeze_base_model=False)).train()
    assert model.byola.training and all(p.requires_grad for p in model.byola.parameters())
    model.freeze_base_model()
    model.train()
    assert not model.byola.training and not any(p.requires_grad for p in model.byola.parameters())


def test_ctc_refuses_targets_longer_than_output():
    model = BYOLAForCTC(config(vocab_size=12))
    batch = FE(waveforms(lengths=(8000,)), sampling_rate=16000, return_tensors="pt")  # 6 output frames
    with pytest.raises(ValueError, match="target of 7 tokens but only 6 output frames.*one frame per 80 ms"):
        model(**batch, labels=torch.tensor([[1, 2, 3, 4, 5, 6, 7]]))


def test_frame_loss_is_permutation_invariant():
    model = HEADS["frame"]().eval()
    batch = FE(waveforms(), sampling_rate=16000, return_tensors="pt")
    labels = labels_for("frame", batch)
    with torch.no_grad():
        assert torch.isclose(model(**batch, labels=labels).loss, model(**batch, labels=labels.flip(-1)).loss)
    with pytest.raises(ValueError, match="labels must have the logits' shape"):
        model(**batch, labels=labels[:, :-1])


def test_slot_labels_shape_error():
    model = HEADS["slots"]()
    batch = FE(waveforms(), sampling_rate=16000, return_tensors="pt")
    with pytest.raises(ValueError, match=r"labels must have shape \(batch, 3\)"):
        model(**batch, labels=torch.tensor([0, 1, 2]))


def test_pipelines(real512_dir, tmp_path):
    embedder = pipeline("byola-audio-embedding", model=str(real512_dir))
    base = BYOLAModel.from_pretrained(real512_dir).eval()
    wave = waveforms(lengths=(16000,))[0]
    with torch.no_grad():
        expected = base(**FE(wave, sampling_rate=16000, return_tensors="pt"))
    np.testing.assert_allclose(embedder(wave), expected.pooler_output[0].numpy(), rtol=1e-5, atol=1e-6)
    assert embedder(wave, frame_level=True).shape == tuple(expected.last_hidden_state.shape[1:])
    resampled = embedder({"array": wave[::2], "sampling_rate": 8000})
    assert resampled.shape == (512,)
    import soundfile as sf

    sf.write(tmp_path / "clip.wav", wave, 16000, subtype="FLOAT")
    np.testing.assert_allclose(embedder(str(tmp_path / "clip.wav")), embedder(wave), rtol=1e-4, atol=1e-4)

    head = AutoModelForAudioClassification.from_pretrained(real512_dir, num_labels=2, id2label={0: "a", 1: "b"})
    head.save_pretrained(tmp_path / "head")
    FE.save_pretrained(tmp_path / "head")
    classifier = pipeline("audio-classification", model=str(tmp_path / "head"))
    result = classifier(wave)
    assert {r["label"] for r in result} == {"a", "b"} and abs(sum(r["score"] for r in result) - 1) < 1e-5


def test_processor_and_ctc_decoding(tmp_path):
    tokenizer = build_ctc_tokenizer(["D @2 k a t", "s a t"], str(tmp_path / "tok"), phonemes=True)
    processor = BYOLAProcessor(FE, tokenizer)
    ids = tokenizer("D @2 k a t")["input_ids"]
    blank = tokenizer.pad_token_id
    # CTC greedy output: repeats collapse, blanks vanish
    assert processor.batch_decode([[ids[0], ids[0], blank, ids[1], ids[2], blank, ids[2], ids[3], ids[4]]]) == [
        "D @2 k k a t"
    ]
    inputs = processor(audio=waveforms(lengths=(16000,))[0], sampling_rate=16000, text="s a t")
    assert inputs["labels"] == tokenizer("s a t")["input_ids"]
    processor.save_pretrained(tmp_path / "proc")
    reloaded = AutoProcessor.from_pretrained(tmp_path / "proc")
    assert isinstance(reloaded, BYOLAProcessor) and reloaded.tokenizer.get_vocab() == tokenizer.get_vocab()
    characters = build_ctc_tokenizer(["hello world"], str(tmp_path / "chars"), phonemes=False)
    assert characters.batch_decode([characters("hello world")["input_ids"]], group_tokens=False) == ["hello world"]


def test_metric_modules_offline():
    accuracy = evaluate.load(metric_path("accuracy"))
    assert accuracy.compute(predictions=[1, 2, 3, 4], references=[1, 2, 0, 4]) == {"accuracy": 0.75}
    assert accuracy.compute(predictions=[[1, 2], [0, 1]], references=[[1, 2], [0, 0]]) == {"accuracy": 0.5}
    # "a b c" vs "a x c d": one substitution, one deletion over 4 reference phonemes
    assert evaluate.load(metric_path("error_rate"), "per").compute(predictions=["a b c"], references=["a x c d"]) == {
        "per": 0.5
    }
    assert evaluate.load(metric_path("error_rate"), "wer").compute(
        predictions=["the cat sat"], references=["the cat sat down"]
    ) == {"wer": 0.25}
    assert evaluate.load(metric_path("error_rate"), "cer").compute(predictions=["abc"], references=["abd"]) == {
        "cer": pytest.approx(1 / 3)
    }
    # swapped speakers are matched; one missed frame of speaker 1 out of 3 reference speaker-frames
    der = evaluate.load(metric_path("der")).compute(
        predictions=[[[0, 1], [0, 1], [0, 0]]], references=[[[1, 0], [1, 0], [1, 0]]]
    )
    assert der == {"der": pytest.approx(1 / 3)}


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

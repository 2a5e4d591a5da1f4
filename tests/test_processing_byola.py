"""BYOLAProcessor: feature extractor and CTC tokenizer together, greedy CTC decoding, save/load."""

from transformers import AutoProcessor

from byola_hf import (
    BYOLAProcessor,
)
from byola_hf.superb.recipes import build_ctc_tokenizer

from conftest import FE, waveforms


def test_processor_and_ctc_decoding(tmp_path):
    tokenizer = build_ctc_tokenizer(["D @2 k a t", "s a t"], phonemes=True)
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
    characters = build_ctc_tokenizer(["hello world"], phonemes=False)
    assert characters.batch_decode([characters("hello world")["input_ids"]], group_tokens=False) == ["hello world"]


def test_processor_labels_feed_the_model_with_return_tensors(tmp_path):
    """`processor(audio=clips, text=texts, sampling_rate=16000, return_tensors="pt")` returned the labels as lists
    of unequal lengths, so `model(**inputs)` ended in a TypeError inside the CTC loss. With `return_tensors` the
    labels come as one tensor padded with -100, the loss's padding."""
    import torch

    from byola_hf import BYOLAConfig, BYOLAForCTC

    tokenizer = build_ctc_tokenizer(["D @2 k a t", "s a t"], phonemes=True)
    processor = BYOLAProcessor(FE, tokenizer)
    texts = ["s a t", "D @2 k a t"]
    inputs = processor(audio=waveforms(lengths=(16000, 12000)), text=texts, sampling_rate=16000, return_tensors="pt")
    ids = [tokenizer(text)["input_ids"] for text in texts]
    expected = torch.tensor([row + [-100] * (5 - len(row)) for row in ids])
    assert torch.equal(inputs["labels"], expected)
    torch.manual_seed(0)
    model = BYOLAForCTC(BYOLAConfig(feature_d=64, mean=-9.0, std=4.5, vocab_size=len(tokenizer))).eval()
    with torch.no_grad():
        loss = model(**inputs).loss
        assert torch.equal(loss, model(inputs["input_features"], inputs["attention_mask"], labels=expected).loss)
    single = processor(audio=waveforms(lengths=(16000,))[0], text="s a t", sampling_rate=16000, return_tensors="pt")
    assert torch.equal(single["labels"], torch.tensor([ids[0]]))


def test_processor_hands_its_options_to_the_feature_extractor(tmp_path):
    """The audio's rate and the feature extractor's options reach it (8 kHz audio is refused, not featurised as
    16 kHz; `pad_to_min_length` pads a short clip), and a tuple of texts is a batch as a list is."""
    import numpy as np
    import pytest
    import torch

    tokenizer = build_ctc_tokenizer(["D @2 k a t", "s a t"], phonemes=True)
    processor = BYOLAProcessor(FE, tokenizer)
    clip = waveforms(lengths=(16000,))[0]
    with pytest.raises(ValueError, match="8000"):
        processor(audio=clip, sampling_rate=8000, text="s a t")
    short = np.zeros(400, np.float32)
    inputs = processor(audio=short, sampling_rate=16000, text="s a t", pad_to_min_length=True, return_tensors="pt")
    expected = FE(short, sampling_rate=16000, pad_to_min_length=True, return_tensors="pt")
    assert torch.equal(inputs["input_features"], expected["input_features"])
    texts = ("s a t", "D @2 k a t")
    batch = processor(audio=[clip, clip], sampling_rate=16000, text=texts, return_tensors="pt")
    assert torch.equal(
        batch["labels"],
        processor(audio=[clip, clip], sampling_rate=16000, text=list(texts), return_tensors="pt")["labels"],
    )

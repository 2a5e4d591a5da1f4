"""Model cards' text: a CTC (phoneme recognition) card's usage runs as written and decodes; a fine-tuned card names
the kind of task and the data it was trained on, not the benchmark's usual dataset."""

import json
import re

import numpy as np
import soundfile as sf
from transformers import Wav2Vec2CTCTokenizer

from byola_hf import BYOLAConfig, BYOLAFeatureExtractor, BYOLAForCTC
from byola_hf.hub import model_card


def test_ctc_card_usage_runs_as_written(random2048_dir, tmp_path, monkeypatch):
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), pad_token="<pad>", unk_token="<unk>")
    model = BYOLAForCTC.from_pretrained(random2048_dir, vocab_size=len(tokenizer), ctc_blank_id=0)
    repo = tmp_path / "pr-model"
    model.save_pretrained(repo)
    tokenizer.save_pretrained(repo)
    BYOLAFeatureExtractor.from_model_config(model.config).save_pretrained(repo)
    sf.write(
        tmp_path / "speech.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000
    )
    card = str(model_card(model.config))
    assert "AutoModelForCTC" in card and "batch_decode" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("THIS_REPO", str(repo))
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(snippet, {"print": printed.append})  # noqa: S102  (the card's own text)
    assert len(printed) == 1 and isinstance(printed[0], list) and isinstance(printed[0][0], str)


def test_fine_tuned_card_names_the_task_kind_and_the_training_data():
    config = BYOLAConfig(feature_d=512, mean=-8.0, std=4.0, architectures=["BYOLAForSequenceClassification"])
    info = {"task": "sid", "description": "speaker identification (VoxCeleb1)", "dataset": "my-speakers"}
    card = str(model_card(config, info))
    assert "task: sid (speaker identification)" in card and "trained on: my-speakers" in card
    assert "VoxCeleb1" not in card
    assert "trained on: not recorded" in str(model_card(config, {"task": "sid", "description": "x (VoxCeleb1)"}))

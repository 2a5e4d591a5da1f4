"""The local evaluate metric modules of byola_hf/superb/metrics (accuracy, error rates, DER), offline."""

import evaluate
import pytest

from byola_hf.superb.metrics import metric_path


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
    # false alarms count (a second speaker in frame 1, someone in the silent frame 2), and the denominator is the
    # reference's speaker-frames (frame 0 holds two), not its frames with speech: 2 errors over 3
    der = evaluate.load(metric_path("der")).compute(
        predictions=[[[1, 1], [1, 1], [0, 1]]], references=[[[1, 1], [1, 0], [0, 0]]]
    )
    assert der == {"der": pytest.approx(2 / 3)}


def test_error_rates_refuse_references_without_tokens_or_speech():
    """A rate over nothing is undefined, not the count of insertions or false alarms."""
    with pytest.raises(ValueError, match="references are empty"):
        evaluate.load(metric_path("error_rate"), "wer").compute(predictions=["a b"], references=[" "])
    with pytest.raises(ValueError, match="silent"):
        evaluate.load(metric_path("der")).compute(predictions=[[[1, 0], [1, 1]]], references=[[[0, 0], [0, 0]]])

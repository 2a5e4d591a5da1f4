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


def test_der_takes_the_best_speaker_order_of_every_one():
    """DER tried every speaker order per clip in Python (8 speakers: 40,320 orders a clip); it is the assignment of
    most overlapping frames now, which must give the best order's errors for every clip."""
    import itertools

    import numpy as np

    rng = np.random.default_rng(0)
    references = rng.integers(0, 2, (6, 40, 4))
    predictions = np.where(rng.random((6, 40, 4)) < 0.8, references[..., rng.permutation(4)], 1 - references)
    errors = 0
    for prediction, reference in zip(predictions, references):
        errors += min(
            (np.maximum(reference.sum(1), prediction.sum(1)) - (reference & prediction[:, order]).sum(1)).sum()
            for order in map(list, itertools.permutations(range(4)))
        )
    der = evaluate.load(metric_path("der")).compute(predictions=predictions.tolist(), references=references.tolist())
    assert der == {"der": pytest.approx(errors / references.sum(), rel=1e-12)} and 0.05 < der["der"] < 0.5
    with_empty = evaluate.load(metric_path("der")).compute(
        predictions=[[], *predictions.tolist()], references=[[], *references.tolist()]
    )  # a clip without a labelled frame scores nothing (it ended the evaluation, after training)
    assert with_empty == der
    with pytest.raises(ValueError, match=r"prediction of shape \(40, 3\) for a reference of shape \(40, 4\)"):
        evaluate.load(metric_path("der")).compute(
            predictions=predictions[:, :, :3].tolist(), references=references.tolist()
        )


def test_error_rates_refuse_references_without_tokens_or_speech():
    """A rate over nothing is undefined, not the count of insertions or false alarms."""
    with pytest.raises(ValueError, match="references are empty"):
        evaluate.load(metric_path("error_rate"), "wer").compute(predictions=["a b"], references=[" "])
    with pytest.raises(ValueError, match="silent"):
        evaluate.load(metric_path("der")).compute(predictions=[[[1, 0], [1, 1]]], references=[[[0, 0], [0, 0]]])

"""Frame-level diarization error rate (SUPERB SD's metric, without a collar): (misses + false alarms + speaker
confusions) over reference speaker-frames, counted on the model's output frames."""

import datasets
import evaluate


class DiarizationErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Frame-level DER from binary speaker-activity matrices (frames x speakers), best speaker "
            "order.",
            citation="",
            inputs_description="predictions, references: per example, a frames x speakers list of 0/1.",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int8"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int8"))),
                }
            ),
        )

    def _compute(self, predictions, references):
        import itertools

        import numpy as np

        errors, speech = 0, 0
        for prediction, reference in zip(predictions, references):
            prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
            best = None
            for order in itertools.permutations(range(reference.shape[1])):
                hypothesis = prediction[:, list(order)]
                n_ref, n_hyp = reference.sum(1), hypothesis.sum(1)
                correct = (reference & hypothesis).sum(1)
                error = (np.maximum(n_ref, n_hyp) - correct).sum()
                best = error if best is None else min(best, error)
            errors += int(best)
            speech += int(reference.sum())
        if speech == 0:
            raise ValueError(
                "Every reference frame is silent: the diarization error rate is undefined (false alarms over no "
                "speech); evaluate on clips where someone speaks."
            )
        return {"der": errors / speech}

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
        import numpy as np
        import torch

        from byola_hf.modeling_byola import assignment_minimum

        errors, speech = 0, 0
        for prediction, reference in zip(predictions, references):
            prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
            if prediction.size == reference.size == 0:  # a clip without a labelled frame: nothing to score
                continue
            if prediction.shape != reference.shape or reference.ndim != 2:
                raise ValueError(
                    f"A prediction of shape {prediction.shape} for a reference of shape {reference.shape}: DER needs "
                    "each clip's prediction and reference as frames x speakers 0/1, of one shape."
                )
            # Under any speaker order a frame's error is max(reference, hypothesis speakers) - correct, where only the
            # correct count depends on the order: the best order is the assignment of most overlapping frames.
            overlap = torch.from_numpy((reference[:, :, None] & prediction[:, None, :]).sum(0).astype(np.float64))
            correct = -assignment_minimum(-overlap[None])[0]
            errors += int(np.maximum(reference.sum(1), prediction.sum(1)).sum() - round(float(correct)))
            speech += int(reference.sum())
        if speech == 0:
            raise ValueError(
                "Every reference frame is silent: the diarization error rate is undefined (false alarms over no "
                "speech); evaluate on clips where someone speaks."
            )
        return {"der": errors / speech}

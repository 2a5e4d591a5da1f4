"""Accuracy: the fraction of examples whose prediction equals the reference (every slot, for multi-slot labels)."""

import datasets
import evaluate


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of examples predicted right; with several slots per example, all must be right.",
            citation="",
            inputs_description="predictions, references: class ids, or sequences of slot ids of equal length.",
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("int64")),
                        "references": datasets.Sequence(datasets.Value("int64")),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references):
        right = sum(prediction == reference for prediction, reference in zip(predictions, references))
        return {"accuracy": right / len(references)}

"""Token error rate by edit distance: WER over words, CER over characters, PER over space-separated phonemes."""

import datasets
import evaluate

from byola_hf.superb.metrics import edit_distance


class ErrorRate(evaluate.Metric):
    """`evaluate.load(path, config_name)` with `config_name` "wer" (default), "per" (both split on spaces) or "cer"."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Total edit distance over total reference length, pooled over the corpus.",
            citation="",
            inputs_description="predictions, references: strings.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        name = self.config_name if self.config_name in ("wer", "cer", "per") else "wer"
        split = list if name == "cer" else str.split
        errors = sum(edit_distance(split(r), split(p)) for p, r in zip(predictions, references))
        total = sum(len(split(r)) for r in references)
        if total == 0:
            raise ValueError("The references are empty: the error rate is undefined.")
        return {name: errors / total}

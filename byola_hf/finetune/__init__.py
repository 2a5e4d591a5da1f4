"""Fine-tuning BYOL-A as EVAR (the papers' evaluation suite) does: `byola-finetune` (needs the `[superb]` extra).

[`augmentations`] holds EVAR's fine-tuning augmentations as batched functions of explicit draws with their
samplers; [`data`] reads an EVAR task CSV (as `byola-extract --metadata_csv` and `byola-linear-eval` do) into folds
of waveforms; [`training`] the optimiser, the per-iteration schedule, the metric and the Trainer that augments;
[`run`] the command's steps (claim, resume, train every fold and seed); [`report`] the results and cards; [`cli`] the
command line. The head itself is `BYOLAForSequenceClassification` with `classifier_head="evar"`.
"""

from .cli import main


__all__ = ["main"]

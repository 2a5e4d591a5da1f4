"""BYOL-A pre-training (v1 and v2) with Trainer: `byola-pretrain` and the pieces it is made of.

Needs the `[pretrain]` extra (`pip install 'byola_hf[pretrain]'`): datasets and accelerate besides the model
library. [`augmentations`] holds the batched augmentation blocks, [`modeling_pretraining`] the BYOL learner,
[`data`] the crops, [`trainer`] the Trainer and its EMA callback, [`cli`] the command line.
"""

from .augmentations import BYOLAAugmentation, MixupMemoryBank
from .modeling_pretraining import BYOLAForPreTraining, BYOLAPreTrainingConfig, BYOLAPreTrainingOutput


__all__ = [
    "BYOLAAugmentation",
    "BYOLAForPreTraining",
    "BYOLAPreTrainingConfig",
    "BYOLAPreTrainingOutput",
    "MixupMemoryBank",
]

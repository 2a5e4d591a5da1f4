"""BYOL-A pre-training (v1 and v2) with Trainer: `byola-pretrain` and the pieces it is made of.

Needs the `[pretrain]` extra (`pip install 'byola_hf[pretrain]'`): datasets and accelerate besides the model
library. [`augmentations`] holds the batched augmentation blocks, [`modeling_pretraining`] the BYOL learner,
[`data`] the crops
(per epoch, or as a stream arrives) and the statistics pass, [`trainer`] the Trainer and its callbacks (the EMA,
each DDP rank's own state), [`model_card`] the output's card, [`linear_probe`] the evaluation during training,
[`run`] the run (its record, resumption and outputs), [`cli`] the command line.
"""

from transformers import AutoModelForPreTraining

from ..configuration_byola import BYOLAPreTrainingConfig
from .augmentations import BYOLAAugmentation, MixupMemoryBank
from .modeling_pretraining import BYOLAForPreTraining, BYOLAPreTrainingOutput


AutoModelForPreTraining.register(BYOLAPreTrainingConfig, BYOLAForPreTraining, exist_ok=True)


__all__ = [
    "BYOLAAugmentation",
    "BYOLAForPreTraining",
    "BYOLAPreTrainingConfig",
    "BYOLAPreTrainingOutput",
    "MixupMemoryBank",
]

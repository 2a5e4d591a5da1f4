"""BYOL-A (BYOL for Audio) as a Hugging Face transformers model.

The model library, what `from_pretrained` and a forward need (none of its modules but the converter imports a tool
folder: tests/test_layout.py): [`configuration_byola`] (network sizes, front-end, statistics: the one source of these
facts; with the pre-training settings of byola-pretrain's checkpoints), [`feature_extraction_byola`] (waveforms ->
log-mel), [`modeling_byola`] (the network and the task heads), [`inference_byola`] (the device kernels, in one
place), [`reference_network`] (the original networks, plainly, for parity), [`audio`] (every array and file input
form -> mono float32 at the model's rate, one set of checks for every entry point: a new input form goes there),
[`processing_byola`], [`pipelines`], [`hear`], [`hub`] (model cards, pushes) and [`convert_byola_checkpoint`]
(`byola-convert`).

The tools sit beside it, each behind its extra: [`tools`] (what the commands share; a new command is a module with
a `main` calling `tools.cli.run_command` and an entry in setup.cfg's `console_scripts`), [`stats`], [`extract`],
[`linear_eval`], [`superb`] (a new task is a preset in `superb/tasks.py`, a new head kind a recipe in
`superb/recipes.py`), [`finetune`] and [`pretraining`].
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForAudioFrameClassification,
    AutoModelForCTC,
    AutoProcessor,
)

from .configuration_byola import BYOLAConfig, BYOLAPreTrainingConfig
from .feature_extraction_byola import BYOLAFeatureExtractor
from .modeling_byola import (
    BYOLAForAudioFrameClassification,
    BYOLAForCTC,
    BYOLAForSequenceClassification,
    BYOLAModel,
    BYOLAModelOutput,
    BYOLAPreTrainedModel,
)
from .pipelines import BYOLAAudioClassificationPipeline, BYOLAAudioEmbeddingPipeline, register_pipelines
from .processing_byola import BYOLAProcessor


AutoConfig.register(BYOLAConfig.model_type, BYOLAConfig, exist_ok=True)
# byola-pretrain's checkpoint-N folders: AutoConfig reads them; AutoModel names their config class instead of
# calling the model type unknown (the learner itself loads with AutoModelForPreTraining from byola_hf.pretraining).
AutoConfig.register(BYOLAPreTrainingConfig.model_type, BYOLAPreTrainingConfig, exist_ok=True)
AutoFeatureExtractor.register(BYOLAConfig, BYOLAFeatureExtractor, exist_ok=True)
AutoProcessor.register(BYOLAConfig, BYOLAProcessor, exist_ok=True)
AUTO_CLASSES = {
    BYOLAModel: AutoModel,
    BYOLAForSequenceClassification: AutoModelForAudioClassification,
    BYOLAForCTC: AutoModelForCTC,
    BYOLAForAudioFrameClassification: AutoModelForAudioFrameClassification,
}
register_pipelines()
# save_pretrained / push_to_hub then write `auto_map` and copy the code files, so a saved directory loads with
# `trust_remote_code=True` where byola_hf is not installed.
BYOLAConfig.register_for_auto_class()
BYOLAFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
BYOLAProcessor.register_for_auto_class("AutoProcessor")
for _model_class, _auto_class in AUTO_CLASSES.items():
    _auto_class.register(BYOLAConfig, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_auto_class.__name__)

__version__ = "0.1.0"

__all__ = [
    "BYOLAAudioClassificationPipeline",
    "BYOLAAudioEmbeddingPipeline",
    "BYOLAConfig",
    "BYOLAFeatureExtractor",
    "BYOLAForAudioFrameClassification",
    "BYOLAForCTC",
    "BYOLAForSequenceClassification",
    "BYOLAModel",
    "BYOLAModelOutput",
    "BYOLAPreTrainedModel",
    "BYOLAPreTrainingConfig",
    "BYOLAProcessor",
]

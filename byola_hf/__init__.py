"""BYOL-A (BYOL for Audio) as a Hugging Face transformers model."""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForAudioFrameClassification,
    AutoModelForCTC,
    AutoProcessor,
)

from .configuration_byola import BYOLAConfig
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
AutoFeatureExtractor.register(BYOLAConfig, BYOLAFeatureExtractor, exist_ok=True)
AutoProcessor.register(BYOLAConfig, BYOLAProcessor, exist_ok=True)
AUTO_CLASSES = {
    BYOLAModel: AutoModel,
    BYOLAForSequenceClassification: AutoModelForAudioClassification,
    BYOLAForCTC: AutoModelForCTC,
    BYOLAForAudioFrameClassification: AutoModelForAudioFrameClassification,
}
for _model_class, _auto_class in AUTO_CLASSES.items():
    _auto_class.register(BYOLAConfig, _model_class, exist_ok=True)
register_pipelines()
# save_pretrained / push_to_hub then write `auto_map` and copy the code files, so a saved directory loads with
# `trust_remote_code=True` where byola_hf is not installed.
BYOLAConfig.register_for_auto_class()
BYOLAFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
BYOLAProcessor.register_for_auto_class("AutoProcessor")
for _model_class, _auto_class in AUTO_CLASSES.items():
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
    "BYOLAProcessor",
]

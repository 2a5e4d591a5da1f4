"""BYOL-A (BYOL for Audio) as a Hugging Face transformers model."""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from .configuration_byola import BYOLAConfig
from .feature_extraction_byola import BYOLAFeatureExtractor
from .modeling_byola import BYOLAModel, BYOLAModelOutput, BYOLAPreTrainedModel


AutoConfig.register(BYOLAConfig.model_type, BYOLAConfig, exist_ok=True)
AutoModel.register(BYOLAConfig, BYOLAModel, exist_ok=True)
AutoFeatureExtractor.register(BYOLAConfig, BYOLAFeatureExtractor, exist_ok=True)

__version__ = "0.1.0"

__all__ = ["BYOLAConfig", "BYOLAFeatureExtractor", "BYOLAModel", "BYOLAModelOutput", "BYOLAPreTrainedModel"]

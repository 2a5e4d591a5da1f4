"""An audio embedding pipeline: transformers' own "feature-extraction" pipeline is text-only."""

import numpy as np
import torch
from transformers import Pipeline


class BYOLAAudioEmbeddingPipeline(Pipeline):
    """
    Files or arrays -> BYOL-A embeddings, one line:
    `pipeline("byola-audio-embedding", model=DIR)("speech.wav")` returns the clip embedding (`pooler_output`,
    `(feature_d,)`); with `frame_level=True` the frame features `(frames, feature_d)`; with `layer=i` the frames of
    hidden state `i` instead.

    Inputs: a file path (decoded with librosa, resampled, mixed to mono), a 1-D array at the feature extractor's
    rate, a `{"array", "sampling_rate"}` dict (resampled when needed), or a list of those.
    """

    def _sanitize_parameters(self, frame_level=None, layer=None, **kwargs):
        postprocess = {}
        forward = {}
        if frame_level is not None:
            postprocess["frame_level"] = frame_level
        if layer is not None:
            forward["layer"] = layer
            postprocess["frame_level"] = True
        return {}, forward, postprocess

    def preprocess(self, inputs):
        import librosa

        rate = self.feature_extractor.sampling_rate
        if isinstance(inputs, str):
            waveform, _ = librosa.load(inputs, sr=rate, mono=True)
        elif isinstance(inputs, dict):
            waveform = np.asarray(inputs["array"], dtype=np.float32)
            if inputs["sampling_rate"] != rate:
                waveform = librosa.resample(waveform, orig_sr=inputs["sampling_rate"], target_sr=rate)
        else:
            waveform = np.asarray(inputs.cpu().numpy() if isinstance(inputs, torch.Tensor) else inputs, np.float32)
        return self.feature_extractor(waveform, sampling_rate=rate, return_tensors="pt")

    def _forward(self, model_inputs, layer=None):
        outputs = self.model(**model_inputs, output_hidden_states=layer is not None)
        frames = outputs.last_hidden_state if layer is None else outputs.hidden_states[layer]
        return {"pooled": outputs.pooler_output, "frames": frames}

    def postprocess(self, model_outputs, frame_level=False):
        return (model_outputs["frames"] if frame_level else model_outputs["pooled"])[0].float().numpy()


def register_pipeline() -> None:
    """Register "byola-audio-embedding" with transformers' pipeline registry."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(
        "byola-audio-embedding", pipeline_class=BYOLAAudioEmbeddingPipeline, pt_model=AutoModel, type="audio"
    )

"""Pipelines for BYOL-A: clip or frame embeddings, and audio classification with any audio in.

Both take what transformers' audio pipelines take, decoded and resampled with soundfile and librosa (no ffmpeg or
torchaudio): a file path, the file's bytes, a numpy array or torch tensor (at the feature extractor's rate unless
`sampling_rate=` says otherwise), or a `{"raw" | "array": ..., "sampling_rate": ...}` dict as `datasets` gives it.
Multi-channel audio, `(channels, samples)` or `(samples, channels)` (the shorter axis is taken as channels), is
mixed down to mono by averaging the channels; integer PCM is scaled by its dtype to [-1, 1). With `batch_size`,
clips of different lengths are padded together and each gets what it gets alone. Decoding runs in `preprocess`
(on the CPU, in the DataLoader's workers with `num_workers=`); the log-mel of each padded batch is computed in
`_forward`, on the pipeline's device, with the model.
"""

import io
from typing import Any

import numpy as np
import torch
from transformers import AudioClassificationPipeline, Pipeline
from transformers.utils import logging

from .extras import require_extra
from .feature_extraction_byola import _to_numpy, to_tensor


logger = logging.get_logger(__name__)
# More channels than this on the shorter axis is not multi-channel audio but a batch or a mistake.
_MAX_CHANNELS = 32


def load_audio(inputs: Any, sampling_rate: int, input_rate: int | None = None) -> np.ndarray:
    """
    Any accepted audio input as a mono float32 waveform at `sampling_rate`.

    Args:
        inputs: a path, bytes, an array/tensor, or a `{"raw"|"array", "sampling_rate"}` dict (see the module doc).
        sampling_rate: the rate to return (the feature extractor's).
        input_rate: the rate of a bare array; when `None` it is assumed to be `sampling_rate`, with a warning.

    Raises:
        ValueError: unreadable file or bytes (naming the file), an empty or non-finite waveform, more than 2 axes.
        TypeError: an input of no accepted kind.
    """
    if isinstance(inputs, str):
        waveform, rate = _read_file(inputs, inputs)
    elif isinstance(inputs, (bytes, bytearray)):
        waveform, rate = _read_file(io.BytesIO(inputs), f"the given bytes ({len(inputs)} bytes)")
    elif isinstance(inputs, dict):
        key = "raw" if "raw" in inputs else "array" if "array" in inputs else None
        if key is None or "sampling_rate" not in inputs:
            raise ValueError(
                "An audio dict needs the samples under 'raw' or 'array' and their 'sampling_rate', e.g. "
                f"{{'array': waveform, 'sampling_rate': 16000}}; got the keys {sorted(inputs)}."
            )
        waveform, rate = _to_numpy(inputs[key]), int(inputs["sampling_rate"])
    elif isinstance(inputs, (np.ndarray, torch.Tensor, list, tuple)):
        waveform = _to_numpy(inputs)
        if input_rate is None:
            logger.warning_once(
                f"An audio array was given without its rate: it is taken as {sampling_rate} Hz. Pass "
                "`sampling_rate=` to the pipeline call (or a {'array', 'sampling_rate'} dict) if it is not."
            )
        rate = input_rate or sampling_rate
    else:
        raise TypeError(
            f"Unsupported audio input of type {type(inputs).__name__}: pass a file path, bytes, a numpy array or "
            "torch tensor, or a {'array': ..., 'sampling_rate': ...} dict."
        )
    waveform = _to_mono(waveform)
    if waveform.size == 0:
        raise ValueError("The audio is empty (0 samples).")
    if not np.isfinite(waveform).all():
        raise ValueError("The audio contains NaN or infinite samples.")
    if rate != sampling_rate:
        librosa = require_extra("librosa", "audio")
        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=sampling_rate).astype(np.float32)
    return waveform


def _read_file(source: Any, name: str) -> tuple[np.ndarray, int]:
    """Decode with soundfile (libsndfile: WAV, FLAC, OGG/Vorbis and Opus, MP3, ...): `(channels, samples)`."""
    soundfile = require_extra("soundfile", "audio")
    try:
        data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise ValueError(
            f"Could not read audio from {name}: {str(error).splitlines()[0][:200]}. Use a format libsndfile reads "
            "(WAV, FLAC, OGG, MP3), or decode it yourself and pass the samples with their sampling_rate."
        ) from None
    return data.T, int(rate)


def _to_mono(waveform: np.ndarray) -> np.ndarray:
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise ValueError(f"Audio must be 1-D (samples) or 2-D (channels and samples), got shape {waveform.shape}.")
    channels_axis = int(np.argmin(waveform.shape))
    if waveform.shape[channels_axis] > _MAX_CHANNELS:
        raise ValueError(
            f"Audio of shape {waveform.shape} has no channel axis of at most {_MAX_CHANNELS}: pass one clip at a time "
            "(a list of clips for a batch)."
        )
    return waveform.mean(axis=channels_axis, dtype=np.float32)


def _decode(pipeline: Pipeline, inputs: Any, input_rate: int | None, pad_to_min_length: bool) -> dict:
    """
    Decoding, on the CPU (in the DataLoader's workers when `num_workers` is set): one clip as its waveform
    `input_values` `(1, samples)` float32 at the feature extractor's rate and its length `lengths` `(1,)`. The
    pipelines' batch collation pads the waveforms; the log-mel is computed in `_forward`, batched, on the pipeline's
    device.
    """
    feature_extractor = pipeline.feature_extractor
    waveform = load_audio(inputs, feature_extractor.sampling_rate, input_rate)
    if pad_to_min_length and len(waveform) < feature_extractor.min_samples:
        # zeros that count as audio, as the feature extractor's option of the same name
        waveform = np.pad(waveform, (0, feature_extractor.min_samples - len(waveform)))
    feature_extractor.check_length(len(waveform))
    return {"input_values": to_tensor(waveform)[None], "lengths": torch.tensor([len(waveform)])}


def _model_inputs(pipeline: Pipeline, model_inputs: dict) -> dict:
    """The padded waveforms of a batch -> the model's `input_features` and `attention_mask`, computed on the
    device the pipeline put them on. `_decode` has checked every clip and the batch collation padded them with the
    feature extractor's padding value, so the batch goes straight to its log-mel (the public call would check the
    values again, reading them back from the device, and copy the batch to re-pad it)."""
    waveforms, lengths = model_inputs["input_values"], model_inputs["lengths"].tolist()
    input_features, attention_mask = pipeline.feature_extractor._log_mel_batch(waveforms, lengths)
    if pipeline.dtype is not None:
        input_features = input_features.to(pipeline.dtype)
    return {"input_features": input_features, "attention_mask": attention_mask}


class BYOLAAudioEmbeddingPipeline(Pipeline):
    """
    Audio -> BYOL-A embeddings: `pipeline("byola-audio-embedding", model=DIR)("speech.wav")` returns the clip
    embedding (`pooler_output`, `(feature_d,)` float32 numpy); `frame_level=True` the frame features
    `(frames, feature_d)`; `layer=i` the frames of hidden state `i` (`0 <= i < config.num_hidden_layers`).

    Call options: `sampling_rate` (the rate of bare arrays), `pad_to_min_length` (zero-pad clips shorter than one
    output frame instead of refusing them), plus `batch_size` as in every pipeline. Inputs: see the module doc.
    """

    # Audio only: transformers must not look for a tokenizer (or ask about remote code for one).
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def _sanitize_parameters(self, frame_level=None, layer=None, sampling_rate=None, pad_to_min_length=None, **kwargs):
        preprocess, forward, postprocess = {}, {}, {}
        if sampling_rate is not None:
            preprocess["sampling_rate"] = sampling_rate
        if pad_to_min_length is not None:
            preprocess["pad_to_min_length"] = pad_to_min_length
        if frame_level is not None:
            postprocess["frame_level"] = frame_level
        if layer is not None:
            layers = self.model.config.num_hidden_layers
            if not isinstance(layer, int) or not -layers <= layer < layers:
                raise ValueError(f"layer must be an int in [0, {layers}) (the model's hidden states), got {layer!r}.")
            forward["layer"] = layer
            postprocess["frame_level"] = True
        return preprocess, forward, postprocess

    def preprocess(self, inputs, sampling_rate=None, pad_to_min_length=False):
        return _decode(self, inputs, sampling_rate, pad_to_min_length)

    def _forward(self, model_inputs, layer=None):
        outputs = self.model(**_model_inputs(self, model_inputs), output_hidden_states=layer is not None)
        frames = outputs.last_hidden_state if layer is None else outputs.hidden_states[layer]
        lengths = outputs.attention_mask.sum(-1)
        # One row per clip, each cut to its own valid frames (batches are split again after _forward).
        return {"pooled": outputs.pooler_output, "frames": frames, "lengths": lengths}

    def postprocess(self, model_outputs, frame_level=False):
        if frame_level:
            return model_outputs["frames"][0, : int(model_outputs["lengths"][0])].float().numpy()
        return model_outputs["pooled"][0].float().numpy()


class BYOLAAudioClassificationPipeline(AudioClassificationPipeline):
    """
    transformers' `"audio-classification"` pipeline, extended for BYOL-A classifiers: any audio input (see the module
    doc), `sampling_rate` and `pad_to_min_length` call options, and `batch_size` with clips of different lengths.
    Models other than BYOL-A's run exactly as in transformers.
    """

    def _is_byola(self) -> bool:
        return getattr(self.model.config, "model_type", None) == "byola"

    def _sanitize_parameters(self, sampling_rate=None, pad_to_min_length=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if self._is_byola():
            if sampling_rate is not None:
                preprocess["sampling_rate"] = sampling_rate
            if pad_to_min_length is not None:
                preprocess["pad_to_min_length"] = pad_to_min_length
        elif sampling_rate is not None or pad_to_min_length is not None:
            raise ValueError("sampling_rate= and pad_to_min_length= are options of BYOL-A models only.")
        return preprocess, forward, postprocess

    def preprocess(self, inputs, sampling_rate=None, pad_to_min_length=False):
        if not self._is_byola():
            return super().preprocess(inputs)
        return _decode(self, inputs, sampling_rate, pad_to_min_length)

    def _forward(self, model_inputs):
        if not self._is_byola():
            return super()._forward(model_inputs)
        return self.model(**_model_inputs(self, model_inputs))


def register_pipelines() -> None:
    """Register "byola-audio-embedding", and BYOL-A's extension of "audio-classification", with transformers."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(
        "byola-audio-embedding", pipeline_class=BYOLAAudioEmbeddingPipeline, pt_model=AutoModel, type="audio"
    )
    # Only the implementation of the built-in task changes (a subclass that runs other models as before); its
    # models, defaults and type stay transformers'.
    PIPELINE_REGISTRY.supported_tasks["audio-classification"]["impl"] = BYOLAAudioClassificationPipeline

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

import os
from typing import Any

import numpy as np
import torch
from transformers import AudioClassificationPipeline, Pipeline
from transformers.modeling_outputs import SequenceClassifierOutput

from .audio import load_audio, to_tensor
from .configuration_byola import check_trained_head


def decode_clip(pipeline: Pipeline, inputs: Any, input_rate: int | None, pad_to_min_length: bool) -> dict:
    """`preprocess` (see the module doc): one clip as `waveforms` `(1, samples)` float32 at the feature extractor's
    rate and `lengths` `(1,)`, for the pipelines' batch collation to pad."""
    feature_extractor = pipeline.feature_extractor
    waveform = load_audio(inputs, feature_extractor.sampling_rate, input_rate)
    if pad_to_min_length and len(waveform) < feature_extractor.min_samples:
        # zeros that count as audio, as the feature extractor's option of the same name
        waveform = np.pad(waveform, (0, feature_extractor.min_samples - len(waveform)))
    # One output frame, checked here where the length is known: on an accelerator the model reads no values back.
    feature_extractor.check_length(len(waveform), minimum=feature_extractor.min_samples)
    name = str(inputs) if isinstance(inputs, (str, os.PathLike)) else None
    feature_extractor.check_loud_clip(waveform, name)  # named here; in `_forward` only its place in the batch
    return {"waveforms": to_tensor(waveform)[None], "lengths": torch.tensor([len(waveform)])}


def check_flag(name: str, value: Any) -> None:
    """A `ValueError` unless `value` is `None` (not given) or a bool: a string such as `"no"` would be true."""
    if value is not None and not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")


def decode_options(sampling_rate: Any, pad_to_min_length: Any) -> dict:
    """Both pipelines' `preprocess` options ([`decode_clip`]) that were given, the flag checked."""
    check_flag("pad_to_min_length", pad_to_min_length)
    options = {"sampling_rate": sampling_rate, "pad_to_min_length": pad_to_min_length}
    return {name: value for name, value in options.items() if value is not None}


def refuse_no_inputs(inputs: Any) -> None:
    """An empty list of clips: transformers' batching indexes its first item (an `IndexError`)."""
    if isinstance(inputs, (list, tuple)) and len(inputs) == 0:
        raise ValueError("The pipeline was given no audio (an empty list): pass a file, array, or a list of them.")


def model_inputs_of_batch(pipeline: Pipeline, batch: dict) -> dict:
    """The padded `waveforms` of a batch -> the model's `input_features` and `attention_mask`, computed on the device
    the pipeline put them on. `decode_clip` has checked every clip, so the batch goes straight to `log_mel_batch` (the
    feature extractor's `__call__` would check the values again, reading them back from the device)."""
    waveforms, lengths = batch["waveforms"], batch["lengths"].tolist()
    input_features, attention_mask = pipeline.feature_extractor.log_mel_batch(waveforms, lengths)
    if pipeline.dtype is not None:
        input_features = input_features.to(pipeline.dtype)
    return {"input_features": input_features, "attention_mask": attention_mask}


class BYOLAAudioEmbeddingPipeline(Pipeline):
    """Audio -> BYOL-A embeddings: `pipeline("byola-audio-embedding", model=DIR)("speech.wav")` returns the clip
    embedding (`pooler_output`, `(feature_d,)` float32 numpy); `frame_level=True` the frame features
    `(frames, feature_d)`; `layer=i` the frames of hidden state `i` (`-n <= i < n`, `n = config.num_hidden_layers`;
    negative counts from the last).

    Call options: `sampling_rate` (the rate of bare arrays), `pad_to_min_length` (zero-pad clips shorter than one
    output frame instead of refusing them), plus `batch_size` as in every pipeline. Inputs: see the module doc."""

    # Audio only: transformers must not look for a tokenizer (or ask about remote code for one).
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Inference: a model handed over in training mode (after `Trainer.train()`) would normalise each batch by its
        # own BatchNorm statistics, move the running ones and drop out features.
        self.model.eval()

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        refuse_no_inputs(inputs)
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, frame_level=None, layer=None, sampling_rate=None, pad_to_min_length=None, **kwargs):
        check_flag("frame_level", frame_level)
        preprocess, forward, postprocess = decode_options(sampling_rate, pad_to_min_length), {}, {}
        if frame_level is not None:
            postprocess["frame_level"] = frame_level
        if layer is not None:
            layers = self.model.config.num_hidden_layers
            # A bool is an int to Python: layer=True would silently give hidden state 1.
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -layers <= layer < layers:
                raise ValueError(
                    f"layer must be an int in [{-layers}, {layers}) (the model's hidden states; negative from the "
                    f"last), got {layer!r}."
                )
            forward["layer"] = int(layer)
            postprocess["frame_level"] = True
        return preprocess, forward, postprocess

    def preprocess(self, inputs, sampling_rate=None, pad_to_min_length=False):
        return decode_clip(self, inputs, sampling_rate, pad_to_min_length)

    def _forward(self, model_inputs, layer=None):
        outputs = self.model(**model_inputs_of_batch(self, model_inputs), output_hidden_states=layer is not None)
        frames = outputs.last_hidden_state if layer is None else outputs.hidden_states[layer]
        # One row per clip, each cut to its own valid frames (batches are split again after _forward).
        return {"pooled": outputs.pooler_output, "frames": frames, "lengths": outputs.attention_mask.sum(-1)}

    def postprocess(self, model_outputs, frame_level=False):
        if frame_level:
            return model_outputs["frames"][0, : int(model_outputs["lengths"][0])].float().numpy()
        return model_outputs["pooled"][0].float().numpy()


class BYOLAAudioClassificationPipeline(AudioClassificationPipeline):
    """transformers' `"audio-classification"` pipeline, extended for BYOL-A classifiers: any audio input (see the
    module doc), `sampling_rate` and `pad_to_min_length` call options, and `batch_size` with clips of different
    lengths. Models other than BYOL-A's run exactly as in transformers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._is_byola():
            self.model.eval()  # inference, as the embedding pipeline
            fix = "pass a classifier fine-tuned with byola-run-superb (or save your trained head first)."
            check_trained_head(
                self.model.config, type(self.model).__name__, self.model.name_or_path, "The pipeline would score", fix
            )

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        if self._is_byola():
            refuse_no_inputs(inputs)
        return super().__call__(inputs, **kwargs)

    def _is_byola(self) -> bool:
        return getattr(self.model.config, "model_type", None) == "byola"

    def _sanitize_parameters(self, sampling_rate=None, pad_to_min_length=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if self._is_byola():
            preprocess.update(decode_options(sampling_rate, pad_to_min_length))
        elif sampling_rate is not None or pad_to_min_length is not None:
            raise ValueError("sampling_rate= and pad_to_min_length= are options of BYOL-A models only.")
        return preprocess, forward, postprocess

    def preprocess(self, inputs, sampling_rate=None, pad_to_min_length=False):
        if not self._is_byola():
            return super().preprocess(inputs)
        return decode_clip(self, inputs, sampling_rate, pad_to_min_length)

    def _forward(self, model_inputs):
        if not self._is_byola():
            return super()._forward(model_inputs)
        return self.model(**model_inputs_of_batch(self, model_inputs))

    def postprocess(self, model_outputs, top_k=5, function_to_apply=None):
        """transformers' scores, except for an intent classifier (`config.classifier_slots`): one softmax per slot,
        as its loss, so each score is its label's probability within its slot (one softmax over every slot's logits
        would mix the slots)."""
        slots = self._is_byola() and self.model.config.classifier_slots
        if slots and function_to_apply in (None, "softmax"):
            logits = model_outputs.logits  # (1, sum(slots))
            probabilities = torch.cat([part.softmax(-1) for part in logits.split(slots, dim=-1)], dim=-1)
            model_outputs, function_to_apply = SequenceClassifierOutput(logits=probabilities), "none"
        return super().postprocess(model_outputs, top_k, function_to_apply)


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

"""PyTorch BYOL-A model."""

import itertools
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutput, SequenceClassifierOutput, TokenClassifierOutput
from transformers.utils import ModelOutput, can_return_tuple
from transformers.utils import logging as transformers_logging

from .configuration_byola import PRETRAINING_MODEL_TYPE, BYOLAConfig, PrivatePushMixin, check_statistics
from .inference_byola import InferenceKernels, masked_conv_block, select_kernels, select_training_kernels
from .reference_network import tail_weights


@dataclass
class BYOLAModelOutput(ModelOutput):
    """
    Output of [`BYOLAModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, frames, feature_d)`):
            The encoder's frame features, one frame per `2**num_conv_layers` log-mel frames
            (`config.frames_per_second`: 12.5 for v1, 25 for v2). v1: the second fully connected layer's output; v2:
            the last conv block's features (mel-major) followed by it. Frames past an example's end are zero.
        pooler_output (`torch.FloatTensor` of shape `(batch, feature_d)`):
            The original BYOL-A clip embedding: max over time plus mean over time of `last_hidden_state`, over each
            example's valid frames only.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            `config.num_hidden_layers` tensors of shape `(batch, frames, config.layer_hidden_size)`: each conv
            block's output flattened channel-major over (channel, mel bin) and averaged down in time to `frames`, then
            the two fully connected layers, and for v2 the concatenated output; all zero-padded on the feature axis
            to `config.layer_hidden_size`. The last one equals `last_hidden_state` (padded). For v1 with
            `feature_d=2048` this is exactly the original layered upstream's output.
        attention_mask (`torch.LongTensor` of shape `(batch, frames)`):
            1 on each example's valid output frames, 0 on padding.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attention_mask: torch.LongTensor | None = None


class BYOLAConvBlock(nn.Module):
    """Conv2d(3x3) -> BatchNorm2d -> ReLU -> MaxPool2d(2) on `(batch, channels, mel, time)`."""

    def __init__(self, in_channels: int, out_channels: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.batch_norm = nn.BatchNorm2d(out_channels, eps=eps)
        self.activation = nn.ReLU()
        self.pool = nn.MaxPool2d(2, stride=2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(self.batch_norm(self.conv(hidden_states))))


class PretrainingCheckpointError(ValueError):
    """A `byola-pretrain` checkpoint (the whole BYOL learner) given where a BYOL-A encoder is needed."""

    def __init__(self, source: object):
        super().__init__(
            f"{source} is a byola-pretrain checkpoint, not an encoder: use the encoder byola-pretrain saved in its "
            "output folder, or `BYOLAForPreTraining.from_pretrained(checkpoint).save_encoder(folder)`."
        )


class MismatchedWeightsError(ValueError, RuntimeError):
    """Weights of other shapes than the config describes (`mismatched`: transformers' `(key, saved, expected)`), in
    one line: a `ValueError`, as the commands report user mistakes, and the `RuntimeError` transformers raises."""

    def __init__(self, source: object, mismatched: set):
        key, saved, expected = sorted(mismatched, key=str)[0]
        super().__init__(
            f"The weights in {source} do not fit the model its config describes ({key}: {tuple(saved)} saved, "
            f"{tuple(expected)} expected; {len(mismatched)} such weights): the weights file is another model's "
            "(convert or save the model again), or pass ignore_mismatched_sizes=True to start those weights anew "
            "(a head for other labels)."
        )


def refuse_pretraining_checkpoint(source: object, kwargs: dict) -> None:
    """Raise [`PretrainingCheckpointError`] when the local folder `source` holds a byola-pretrain learner (its
    `config.json`), before transformers loads (and reports on) weights that are not an encoder's. Trainer writes
    checkpoints locally; a Hub repository is left to the check after loading, as reading its config twice would
    cost a second retry cycle when the Hub is unreachable. A config passed in `kwargs` is the caller's choice."""
    if source is None or kwargs.get("config") is not None:
        return
    config_file = Path(source) / kwargs.get("subfolder", "") / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    except (OSError, ValueError, AttributeError):  # unreadable or not a JSON object: from_pretrained says so
        return
    if model_type == PRETRAINING_MODEL_TYPE:
        raise PretrainingCheckpointError(source)


def check_encoder_loaded(model: "BYOLAPreTrainedModel", loading_info: dict[str, list], source: object) -> None:
    """Raise a `ValueError` when loading (`loading_info`) left encoder weights at their random initialisation."""
    prefix = "" if isinstance(model, BYOLAModel) else f"{model.base_model_prefix}."
    missing = [key for key in loading_info["missing_keys"] if key.startswith(prefix)]
    missing = sorted(key for key in missing if not key.endswith("num_batches_tracked"))
    if not missing:
        return
    if any(key.startswith("target_encoder.") for key in loading_info["unexpected_keys"]):
        raise PretrainingCheckpointError(source)
    raise ValueError(
        f"{source} has no weights for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: they would be "
        "random. Pass a BYOL-A model folder (byola-convert or byola-pretrain output)."
    )


def check_finite_weights(model: nn.Module, source: object) -> None:
    """A `ValueError` naming the first parameters or buffers of `model` that hold NaN or infinity."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    damaged = [name for name, value in tensors if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if damaged:
        raise ValueError(
            f"The weights loaded from {source} hold NaN or infinite values ({', '.join(damaged[:3])}"
            f"{' ...' if len(damaged) > 3 else ''}): they are damaged; convert or download them again."
        )


def damaged_weights_error(source: Any, error: Exception) -> ValueError:
    """The one-line error for a weights file safetensors cannot read (cut short by a failed copy or download)."""
    folder = Path(str(source))
    where = folder / "model.safetensors" if folder.is_dir() else f"the weights of {source}"
    return ValueError(
        f"{where} is truncated or damaged ({' '.join(str(error).split())[:200]}): convert or download the model again."
    )


logger = logging.getLogger(__name__)


@contextmanager
def quiet_weights_io(keep_mismatch_report: bool = False) -> Iterator[None]:
    """Loading or saving a BYOL-A model (a few MB) without transformers' per-file progress bars or its "LOAD REPORT"
    table ([`report_loading`] says what in it matters); with `keep_mismatch_report` (`ignore_mismatched_sizes=True`)
    a table that reinitialises weights of another shape is kept. The bars' setting is restored after."""

    def drop_load_report(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "LOAD REPORT" not in message or (keep_mismatch_report and "mismatch" in message.lower())

    bars = transformers_logging.is_progress_bar_enabled()
    report_logger = transformers_logging.get_logger("transformers.modeling_utils")
    transformers_logging.disable_progress_bar()
    report_logger.addFilter(drop_load_report)
    try:
        yield
    finally:
        report_logger.removeFilter(drop_load_report)
        if bars:
            transformers_logging.enable_progress_bar()


def report_loading(model: "BYOLAPreTrainedModel", loading_info: dict, source: object) -> None:
    """What of transformers' loading report matters once the encoder is loaded: a task head missing as a whole is new,
    as expected on an encoder (one info line); a head missing in part, and weights the model does not use (but a
    head's beside an encoder taken out of it), are warnings. `from_pretrained` refuses weights of other shapes."""
    missing = set(loading_info["missing_keys"])
    unexpected = sorted(loading_info["unexpected_keys"])
    head = {key for key in model.state_dict() if not key.startswith(f"{model.base_model_prefix}.")}
    name = type(model).__name__
    if isinstance(model, BYOLAHeadModel) and missing and missing >= head:
        logger.info(f"{name}: the task head is new (not in {source}); train it on your task.")
    elif missing:
        logger.warning(f"{name}: {source} lacks {', '.join(sorted(missing))}: they are newly initialised.")
    if unexpected and not isinstance(model, BYOLAModel):
        logger.warning(f"{name}: weights of {source} not used: {', '.join(unexpected)}.")


class BYOLAPreTrainedModel(PrivatePushMixin, PreTrainedModel):
    config_class = BYOLAConfig
    config: BYOLAConfig
    base_model_prefix = "byola"
    main_input_name = "input_features"
    input_modalities = "audio"
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """transformers' initialisation for the linear layers and LSTMs (normal weights of std `initializer_range`,
        zero biases, Xavier LSTMs) and the BatchNorms (identity); the conv layers keep PyTorch's default, as the
        original, since a std of 0.02 over a 3x3 single-channel kernel would shrink the first block's output tenfold.
        Equal layer weights for the featurizer. Loaded weights are never re-initialised."""
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
        elif isinstance(module, BYOLALayerWeightedSum):
            if module.enabled:
                init.zeros_(module.layer_weights)
        else:
            super()._init_weights(module)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing weights that hold NaN or infinity (the fast kernels would turn
        them into plausible numbers: a fused ReLU maps NaN to 0) and a folder without the encoder's weights (a
        `byola-pretrain` checkpoint, say), which transformers would fill with random ones, unless the caller asks
        for the `output_loading_info` that lists them. A task head missing is expected: it is new for fine-tuning."""
        refuse_pretraining_checkpoint(pretrained_model_name_or_path, kwargs)
        want_info = kwargs.pop("output_loading_info", False)
        # Weights of other shapes are ours to refuse, in one line (transformers' RuntimeError follows its table).
        ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            with quiet_weights_io(keep_mismatch_report=ignore_mismatched):
                model, info = super().from_pretrained(
                    pretrained_model_name_or_path,
                    *args,
                    output_loading_info=True,
                    ignore_mismatched_sizes=True,
                    **kwargs,
                )
        except SafetensorError as error:
            raise damaged_weights_error(pretrained_model_name_or_path, error) from None
        if info["mismatched_keys"] and not ignore_mismatched:
            raise MismatchedWeightsError(pretrained_model_name_or_path, info["mismatched_keys"])
        check_finite_weights(model, pretrained_model_name_or_path)
        if isinstance(model, BYOLAHeadModel) and model.config.freeze_base_model:
            # Loading puts new parameters in place, with gradients on: freeze those (Trainer counts them trainable).
            model.freeze_base_model()
        # The caller's own `state_dict` (no folder), or asking for the loading info, means choosing what is missing.
        if pretrained_model_name_or_path is not None and not want_info:
            check_encoder_loaded(model, info, pretrained_model_name_or_path)
            report_loading(model, info, pretrained_model_name_or_path)
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, with an `auto_map` for every BYOL-A class and the embedding pipeline's
        code, so the directory loads with `trust_remote_code=True` through any Auto class and `pipeline`."""
        from transformers.dynamic_module_utils import custom_object_save

        from .pipelines import BYOLAAudioEmbeddingPipeline

        self.config.auto_map = dict(AUTO_MAP)
        with quiet_weights_io():
            super().save_pretrained(save_directory, *args, **kwargs)
        custom_object_save(BYOLAAudioEmbeddingPipeline, save_directory)

    def _get_feat_extract_output_lengths(self, mel_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for inputs of `mel_lengths` log-mel frames: `mel_lengths // 2**num_conv_layers`."""
        return mel_lengths // self.config.time_downsampling


class BYOLAModel(BYOLAPreTrainedModel):
    """The BYOL-A audio encoder: `num_conv_layers` conv blocks over the normalised log-mel spectrogram, then two fully
    connected layers applied to every time step; [`BYOLAModelOutput`] says what v1 and v2 output.

    Input is the raw log-mel from [`BYOLAFeatureExtractor`]; the model normalises it with `config.mean` and
    `config.std`, the task's statistics. Padding never changes the result on valid frames: a padded batch gives, on
    each example's valid frames, what the example gives alone.

    In eval mode the blocks run through device-specific kernels ([`~inference_byola.select_kernels`]) that compute the
    same function faster; set `model.inference_kernels` to `"reference"`, `"cpu"` or `"accelerator"` to force one
    (`None`: chosen by device). A training-mode forward whose parameters train (fine-tuning) runs the conv blocks
    through the training kernels ([`~inference_byola.select_training_kernels`]; `model.training_kernels`:
    `"reference"`, `"channels_last"` or `"cpu"` forces one)."""

    def __init__(self, config: BYOLAConfig):
        super().__init__(config)
        channels = [1] + [config.conv_channels] * config.num_conv_layers
        self.conv_blocks = nn.ModuleList(
            BYOLAConvBlock(channels[i], channels[i + 1], config.batch_norm_eps) for i in range(config.num_conv_layers)
        )
        mlp_hidden_size, fc_output_size = config.mlp_sizes
        self.fc1 = nn.Linear(config.conv_hidden_sizes[-1], mlp_hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.fc2 = nn.Linear(mlp_hidden_size, fc_output_size)
        self.inference_kernels: str | None = None
        self.training_kernels: str | None = None
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        inference_chunk_frames: int | None = None,
        check_values: bool | None = None,
    ) -> BYOLAModelOutput:
        r"""
        Args:
            input_features (`torch.FloatTensor` of shape `(batch, n_mels, mel_frames)`):
                Log-mel spectrograms from [`BYOLAFeatureExtractor`], not normalised.
            attention_mask (`torch.LongTensor` of shape `(batch, mel_frames)`, *optional*):
                1 on valid log-mel frames, 0 on right padding. All frames are valid when not given.
            output_hidden_states (`bool`, *optional*):
                Also return the per-layer outputs (computed only when asked).
            inference_chunk_frames (`int`, *optional*):
                Overrides `config.inference_chunk_frames`: in eval mode, longer inputs run in chunks of this many
                log-mel frames (rounded down to a multiple of `2**num_conv_layers`) with enough context on both sides
                that the seams are exact, so memory stays bounded for long audio; `0` disables chunking.
            check_values (`bool`, *optional*):
                Check the values of the inputs (finite features, a prefix-shaped mask, every example long enough).
                Reading values back from an accelerator stalls its queue, so by default (`None`) they are checked on
                CPU only and never inside `torch.compile`; shapes are always checked. The feature extractor already
                refuses non-finite and too short audio.

        Returns:
            [`BYOLAModelOutput`]; a tuple with `return_dict=False`.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        mel_lengths, padded = self._check_inputs(input_features, attention_mask, check_values)
        output_lengths = self._get_feat_extract_output_lengths(mel_lengths)
        step = self.config.inference_chunk_frames if inference_chunk_frames is None else inference_chunk_frames
        step = step - step % self.config.time_downsampling if step else 0  # a multiple of 2**num_conv_layers
        if not self.training and step and input_features.shape[-1] > step:
            layer_states, last_hidden_state = self._encode_chunked(
                input_features, mel_lengths, padded, output_hidden_states, step
            )
        else:
            layer_states, last_hidden_state = self._encode(input_features, mel_lengths, padded, output_hidden_states)

        frame_mask = _length_mask(output_lengths, last_hidden_state.shape[1], torch.long)
        pooler_output = _max_plus_mean(last_hidden_state, output_lengths, frame_mask if padded else None)
        hidden_states = None
        if output_hidden_states:
            width = self.config.layer_hidden_size
            hidden_states = tuple(
                state if state.shape[-1] == width else nn.functional.pad(state, (0, width - state.shape[-1]))
                for state in (*layer_states, last_hidden_state)
            )
        return BYOLAModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooler_output,
            hidden_states=hidden_states,
            attention_mask=frame_mask,
        )

    def _encode(
        self, input_features: torch.Tensor, mel_lengths: torch.Tensor, padded: bool, output_hidden_states: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The network on a (padded) batch: `(layer states, output)`, every state zero past each example's end. The
        layer states (only with `output_hidden_states`) are each conv block's, averaged down to the output frame rate,
        then the fully connected layers' (for v2 both, as the output is their concatenation with the conv features; for
        v1 the first, as the output is the second)."""
        kernels = self._kernels(input_features)
        output_lengths = self._get_feat_extract_output_lengths(mel_lengths)
        hidden = (input_features - self.config.mean) / self.config.std
        parameter_dtype = self.fc1.weight.dtype
        if hidden.dtype != parameter_dtype and not torch.is_autocast_enabled(hidden.device.type):
            hidden = hidden.to(parameter_dtype)  # float32 features into a bf16/fp16 model
        if padded:
            hidden = hidden * _length_mask(mel_lengths, hidden.shape[-1], hidden.dtype)[:, None, :]
        hidden = hidden.unsqueeze(1)  # (batch, 1, n_mels, mel_frames)

        layer_states = []
        for index, block in enumerate(self.conv_blocks):
            if padded and block.batch_norm.training:
                # Batch statistics of the valid frames only: otherwise the padding moves every example's output
                # and the running statistics (fine-tuning the encoder on padded batches).
                hidden = masked_conv_block(block, hidden, mel_lengths // 2**index)
            else:
                hidden = kernels.conv_block(block, hidden)  # (batch, channels, mel, time)
            lengths = mel_lengths // 2 ** (index + 1)
            if padded and index < len(self.conv_blocks) - 1:
                # The next conv must see zeros past each example's end, as it would alone.
                hidden = hidden * _length_mask(lengths, hidden.shape[-1], hidden.dtype)[:, None, None, :]
            if output_hidden_states:
                halvings = self.config.num_conv_layers - 1 - index
                layer_states.append(self._reduce_conv_state(hidden, lengths, output_lengths, halvings))

        batch, channels, mels, frames = hidden.shape
        conv_features = hidden.permute(0, 3, 2, 1).reshape(batch, frames, mels * channels)  # mel-major
        fc1_state = kernels.linear_relu(self.fc1, conv_features)
        fc2_state = kernels.linear_relu(self.fc2, self.dropout(fc1_state))
        if self.config.concat_conv_features:
            last_hidden_state = torch.cat([conv_features, fc2_state], dim=-1)
            mlp_states = [fc1_state, fc2_state]
        else:
            last_hidden_state, mlp_states = fc2_state, [fc1_state]
        if output_hidden_states:
            layer_states += mlp_states
        if padded:
            valid = _length_mask(output_lengths, frames, last_hidden_state.dtype)[:, :, None]
            last_hidden_state = last_hidden_state * valid
            layer_states = [state * valid.to(state.dtype) for state in layer_states]
        return layer_states, last_hidden_state

    def _kernels(self, input_features: torch.Tensor) -> InferenceKernels:
        parameters_need_grad = any(parameter.requires_grad for parameter in self.parameters())
        if self.training and parameters_need_grad and torch.is_grad_enabled():  # fine-tuning the encoder
            return select_training_kernels(input_features, self.training_kernels)
        return select_kernels(input_features, self.training, parameters_need_grad, self.inference_kernels)

    def _encode_chunked(
        self,
        input_features: torch.Tensor,
        mel_lengths: torch.Tensor,
        padded: bool,
        output_hidden_states: bool,
        step: int,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """[`_encode`] over chunks of `step` log-mel frames (a multiple of `2**num_conv_layers`, so pooling stays
        aligned), each with `2 * 2**num_conv_layers` frames of real context on both sides: an output frame depends on
        fewer than that many neighbouring frames, so the kept frames equal the unchunked ones. Padded batches run
        example by example."""
        if padded:
            frames = int(self._get_feat_extract_output_lengths(mel_lengths).max())
            pieces = [
                self._encode_chunked(
                    input_features[i : i + 1, :, :length], mel_lengths[i : i + 1], False, output_hidden_states, step
                )
                for i, length in enumerate(mel_lengths.tolist())
            ]
            return _stack_pieces(pieces, frames)

        downsampling = self.config.time_downsampling
        context = 2 * downsampling
        total = input_features.shape[-1]
        output_frames = total // downsampling
        parts = []
        for start in range(0, output_frames * downsampling, step):
            low, high = max(0, start - context), min(total, start + step + context)
            lengths = torch.full_like(mel_lengths, high - low)
            layer_states, last_state = self._encode(
                input_features[..., low:high], lengths, False, output_hidden_states
            )
            first = (start - low) // downsampling
            kept = slice(first, first + (min(start + step, output_frames * downsampling) - start) // downsampling)
            parts.append(([state[:, kept] for state in layer_states], last_state[:, kept]))
        layer_states = [torch.cat([part[0][k] for part in parts], dim=1) for k in range(len(parts[0][0]))]
        return layer_states, torch.cat([part[1] for part in parts], dim=1)

    def _check_inputs(
        self, input_features: torch.Tensor, attention_mask: torch.Tensor | None, check_values: bool | None
    ) -> tuple[torch.Tensor, bool]:
        """Validate the inputs and the statistics; return each example's valid log-mel frames `(batch,)` and whether
        the batch may be padded (decided from the values where they are checked, else from the mask's presence)."""
        self.config.require_statistics()
        check_statistics(self.config.mean, self.config.std)
        if not isinstance(input_features, torch.Tensor):
            raise TypeError(
                f"input_features must be a torch.Tensor, got {type(input_features).__name__}; call the feature "
                "extractor with return_tensors='pt'."
            )
        if input_features.ndim != 3 or input_features.shape[1] != self.config.n_mels:
            raise ValueError(
                f"BYOLAModel expects log-mel input_features of shape (batch, {self.config.n_mels}, frames) from "
                f"BYOLAFeatureExtractor, got shape {tuple(input_features.shape)}. Waveforms go through the feature "
                "extractor first; add a batch dimension to a single spectrogram with `.unsqueeze(0)`."
            )
        batch, _, frames = input_features.shape
        if frames < self.config.time_downsampling:
            raise self._too_short_error(0, frames)
        if check_values is None:
            check_values = input_features.device.type == "cpu" and not torch.compiler.is_compiling()
        if check_values and not torch.isfinite(input_features).all():
            raise ValueError(
                "input_features contain NaN or infinite values; check the audio and the feature extractor."
            )
        if attention_mask is None:
            return torch.full((batch,), frames, dtype=torch.long, device=input_features.device), False
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(
                f"attention_mask must be a torch.Tensor like input_features, got {type(attention_mask).__name__}; "
                "call the feature extractor with return_tensors='pt'."
            )
        if attention_mask.shape != (batch, frames):
            raise ValueError(
                f"attention_mask must have shape (batch, frames) = {(batch, frames)} like input_features, got "
                f"{tuple(attention_mask.shape)}. Pass the frame-level mask returned by BYOLAFeatureExtractor."
            )
        mel_lengths = attention_mask.long().sum(-1).to(input_features.device)
        if not check_values:
            return mel_lengths, True
        # Compared in the mask's own dtype: a float mask of 0.5 must not pass as 0 frames (nor 1.5 as 1).
        if not torch.equal(
            attention_mask.to(mel_lengths.device), _length_mask(mel_lengths, frames, attention_mask.dtype)
        ):
            raise ValueError("attention_mask must be 1 on a prefix of frames and 0 after (right padding).")
        too_short = mel_lengths < self.config.time_downsampling
        if too_short.any():
            index = int(too_short.nonzero()[0])
            raise self._too_short_error(index, int(mel_lengths[index]))
        return mel_lengths, bool((mel_lengths < frames).any())

    def _too_short_error(self, index: int, frames: int) -> ValueError:
        return ValueError(
            f"Example {index} has {frames} log-mel frames, too short for one BYOL-A output frame "
            f"(needs {self.config.time_downsampling}, i.e. at least {self.config.min_samples} samples at "
            f"{self.config.sampling_rate} Hz). Pad short clips with zeros to at least that length, e.g. "
            f"`feature_extractor(..., pad_to_min_length=True)`."
        )

    def _reduce_conv_state(
        self, conv_output: torch.Tensor, lengths: torch.Tensor, output_lengths: torch.Tensor, halvings: int
    ) -> torch.Tensor:
        """Turn a conv block output `(batch, channels, mel, time)` into a hidden state
        `(batch, frames, channels * mel)` (channel-major, as the original layered upstream flattens it), averaged down
        in time to the output frame rate the way the original does for each example alone: `halvings` times, halve the
        length by averaging neighbour pairs, first merging the last two frames when the length is odd. Every output
        frame but the last is thus the plain mean of an aligned block of `2**halvings` frames; the last one weights the
        remaining tail unevenly.

        `lengths` are the valid time steps of `conv_output` per example, `output_lengths` the valid output frames; an
        example with `t` output frames has between `t * 2**halvings` and `(t + 1) * 2**halvings - 1` time steps."""
        batch, channels, mels, time = conv_output.shape
        frames = time >> halvings
        block = 2**halvings
        # Average blocks of `block` time steps first (on the 4-D activation, cheap in any memory layout), then
        # flatten the few remaining frames.
        pooled = nn.functional.avg_pool2d(conv_output, (1, block)) if halvings else conv_output
        reduced = pooled[..., :frames].permute(0, 3, 1, 2).reshape(batch, frames, channels * mels)
        if halvings:
            # Each example's last frame: the exact weighted average of its tail.
            window = 2 * block - 1
            rows = torch.arange(batch, device=conv_output.device)
            tail_start = (output_lengths - 1).clamp(min=0) * block
            index = tail_start[:, None] + torch.arange(window, device=conv_output.device)[None, :]
            # Positions past the tensor's end get weight 0 below: read the last step there instead of padding.
            tail = conv_output[rows[:, None], :, :, index.clamp(max=time - 1)]  # (batch, window, channels, mels)
            tail_size = (lengths - tail_start - block).clamp(0, block - 1)
            weights = torch.tensor(_TAIL_WEIGHTS[halvings], dtype=conv_output.dtype, device=conv_output.device)
            weights = weights[tail_size]
            last = torch.einsum("bw,bwcm->bcm", weights, tail).reshape(batch, 1, -1)
            last_frame = (output_lengths - 1).clamp(min=0)[:, None, None].expand(batch, 1, reduced.shape[-1])
            reduced = reduced.scatter(1, last_frame, last)
        return reduced


class BYOLALayerWeightedSum(nn.Module):
    """SUPERB's featurizer: a softmax-weighted sum of the encoder's hidden states, with one learned weight per layer
    (initialised to zero, i.e. equal weights), or the last hidden state when `config.use_weighted_layer_sum` is off."""

    def __init__(self, config: BYOLAConfig):
        super().__init__()
        self.enabled = config.use_weighted_layer_sum
        self.output_size = config.layer_hidden_size if self.enabled else config.feature_d
        if self.enabled:
            self.layer_weights = nn.Parameter(torch.zeros(config.num_hidden_layers))

    def forward(self, outputs: BYOLAModelOutput) -> torch.Tensor:
        """`(batch, frames, output_size)` from the encoder's outputs (`hidden_states` needed when enabled)."""
        if not self.enabled:
            return outputs.last_hidden_state
        weights = nn.functional.softmax(self.layer_weights, dim=-1)
        return torch.einsum("l,lbtd->btd", weights, torch.stack(outputs.hidden_states))


class BYOLAHeadModel(BYOLAPreTrainedModel):
    """Shared plumbing of the task heads: the encoder (frozen by default), the featurizer, the frame mask."""

    def __init__(self, config: BYOLAConfig):
        super().__init__(config)
        self.byola = BYOLAModel(config)
        self.featurizer = BYOLALayerWeightedSum(config)
        if config.freeze_base_model:
            self.freeze_base_model()

    def freeze_base_model(self) -> None:
        """Freeze the BYOL-A encoder: no gradients, and eval mode (dropout off, BatchNorm statistics fixed) even
        while the head trains."""
        self.config.freeze_base_model = True
        for parameter in self.byola.parameters():
            parameter.requires_grad = False
        self.byola.eval()

    def train(self, mode: bool = True) -> "BYOLAHeadModel":
        super().train(mode)
        if self.config.freeze_base_model:
            self.byola.eval()
        return self

    def encode(
        self, input_features: torch.Tensor, attention_mask: torch.Tensor | None, output_hidden_states: bool | None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """`(features (batch, frames, width), frame_mask (batch, frames), hidden states)` (see
        [`encoder_outputs`]); the featurizer sums the very hidden states returned, so they are on the head's graph."""
        outputs, hidden_states = self.encoder_outputs(input_features, attention_mask, output_hidden_states)
        return self.featurizer(outputs), outputs.attention_mask, hidden_states

    def encoder_outputs(
        self, input_features: torch.Tensor, attention_mask: torch.Tensor | None, output_hidden_states: bool | None
    ) -> tuple[BYOLAModelOutput, tuple[torch.Tensor, ...] | None]:
        """The encoder's outputs (no autograd graph through a frozen encoder), and its hidden states when asked for by
        `output_hidden_states`, else by `config.output_hidden_states` (computed also for the featurizer)."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_base_model):
            outputs = self.byola(
                input_features,
                attention_mask=attention_mask,
                output_hidden_states=self.featurizer.enabled or bool(output_hidden_states),
                return_dict=True,
            )
        return outputs, outputs.hidden_states if output_hidden_states else None


class BYOLAForSequenceClassification(BYOLAHeadModel):
    """Utterance-level classification. `config.classifier_head` picks the head:

    - `"superb"` (SUPERB KS, IC, SID, ER): featurizer -> Linear(width, classifier_proj_size) -> mean over valid
      frames -> Linear(classifier_proj_size, num_labels or sum(classifier_slots));
    - `"evar"` (EVAR's fine-tuning head, `byola-finetune`): the clip embedding `pooler_output` (max + mean over
      valid frames) -> BatchNorm1d without affine parameters -> Linear(feature_d, num_labels), trained with EVAR's
      loss ([`evar_loss`]: class ids, soft rows as mixup makes them, or multi-label targets)."""

    def __init__(self, config: BYOLAConfig):
        super().__init__(config)
        if config.classifier_head == "evar":
            self.norm = nn.BatchNorm1d(config.feature_d, affine=False, eps=config.batch_norm_eps)
            self.classifier = nn.Linear(config.feature_d, config.num_labels)
        else:
            outputs = sum(config.classifier_slots) if config.classifier_slots else config.num_labels
            self.projector = nn.Linear(self.featurizer.output_size, config.classifier_proj_size)
            self.classifier = nn.Linear(config.classifier_proj_size, outputs)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The shared initialisation, and EVAR's for its head's linear layer (normal, std 0.01; bias 0)."""
        if self.config.classifier_head == "evar" and module is getattr(self, "classifier", None):
            init.normal_(module.weight, mean=0.0, std=0.01)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    @can_return_tuple
    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> SequenceClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch,)`, `(batch, len(classifier_slots))` with slots, or
        `(batch, num_labels)` floats for multi-label):
            Targets; the loss follows `config.problem_type` (inferred as in transformers when unset).

        Returns `logits` of shape `(batch, num_labels)` (`(batch, sum(classifier_slots))` with slots).
        """
        if self.config.classifier_head == "evar":  # EVAR's head on the clip embedding (see the class doc)
            if self.training and input_features.shape[0] < 2:
                raise ValueError(
                    "EVAR's head normalises over the batch (BatchNorm1d), so a training batch needs two clips or "
                    "more: drop the last incomplete batch (Trainer: dataloader_drop_last=True) or call model.eval()."
                )
            outputs, hidden_states = self.encoder_outputs(input_features, attention_mask, output_hidden_states)
            logits = self.classifier(self.norm(outputs.pooler_output))
            loss = None if labels is None else evar_loss(logits, labels, self.config.problem_type)
            return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)
        features, frame_mask, hidden_states = self.encode(input_features, attention_mask, output_hidden_states)
        projected = self.projector(features)
        mask = frame_mask[:, :, None].to(projected.dtype)
        pooled = (projected * mask).sum(1) / mask.sum(1)
        logits = self.classifier(pooled)
        loss = None if labels is None else self._loss(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.classifier_slots:
            if labels.ndim != 2 or labels.shape[1] != len(self.config.classifier_slots):
                raise ValueError(
                    f"With classifier_slots={self.config.classifier_slots} labels must have shape (batch, "
                    f"{len(self.config.classifier_slots)}), got {tuple(labels.shape)}."
                )
            # Intent classification: one softmax per slot, the slots' cross-entropies summed.
            slot_logits = logits.split(self.config.classifier_slots, dim=-1)
            return sum(nn.functional.cross_entropy(part, labels[:, i]) for i, part in enumerate(slot_logits))
        # transformers' ForSequenceClassificationLoss: problem_type inferred as in every transformers classifier.
        return self.loss_function(labels=labels, pooled_logits=logits, config=self.config)


def evar_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """EVAR's fine-tuning loss on `logits (batch, classes)`: binary cross-entropy with logits (mean over batch and
    classes) for `problem_type="multi_label_classification"` and `labels (batch, classes)` of 0/1 or soft values; else
    `-mean(y * log_softmax(logits))` averaged over the batch and the classes, `y` the one-hot rows of class ids
    `labels (batch,)` or soft rows `(batch, classes)` (mixup's)."""
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    if not labels.is_floating_point():
        labels = nn.functional.one_hot(labels.long(), logits.shape[-1])
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels must be class ids (batch,) or rows (batch, num_labels) = {tuple(logits.shape)}, got "
            f"{tuple(labels.shape)}."
        )
    return -(labels.to(logits.dtype) * nn.functional.log_softmax(logits, dim=-1)).mean()


class BYOLAForCTC(BYOLAHeadModel):
    """Frame-level CTC head (SUPERB PR, ASR): featurizer -> Linear(width, ctc_proj_size) -> either a frame-level Linear
    (`ctc_head="linear"`) or a bidirectional LSTM and a Linear (`"bilstm"`) -> CTC over `config.vocab_size` tokens with
    blank `config.ctc_blank_id`. BYOL-A gives `config.frames_per_second` frames (12.5 for v1, 25 for v2), so a target
    can have at most one token per frame (fewer with repeated tokens, which need a blank between them)."""

    def __init__(self, config: BYOLAConfig):
        super().__init__(config)
        if config.vocab_size is None:
            raise ValueError(
                "BYOLAForCTC needs config.vocab_size (the tokenizer's size, blank included): e.g. "
                "BYOLAForCTC.from_pretrained(base_dir, vocab_size=len(tokenizer), "
                "ctc_blank_id=tokenizer.pad_token_id)."
            )
        width = config.ctc_proj_size
        self.projector = nn.Linear(self.featurizer.output_size, width)
        if config.ctc_head == "bilstm":
            self.lstm = nn.LSTM(width, width, num_layers=config.ctc_lstm_layers, bidirectional=True, batch_first=True)
        self.lm_head = nn.Linear(2 * width if config.ctc_head == "bilstm" else width, config.vocab_size)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> CausalLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch, target_length)`, *optional*):
            Token ids, padded with `-100`.

        Returns `logits` of shape `(batch, frames, vocab_size)`.
        """
        features, frame_mask, hidden_states = self.encode(input_features, attention_mask, output_hidden_states)
        hidden = self.projector(features)
        output_lengths = frame_mask.sum(-1)
        if self.config.ctc_head == "bilstm":
            hidden = _run_lstm(self.lstm, hidden, output_lengths)
        logits = self.lm_head(hidden)
        loss = None if labels is None else self._ctc_loss(logits, labels, output_lengths)
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    def _ctc_loss(self, logits: torch.Tensor, labels: torch.Tensor, output_lengths: torch.Tensor) -> torch.Tensor:
        """transformers' ForCTCLoss, after checks that say what is wrong instead of a silently wrong or infinite loss.
        In eval mode a target longer than its output frames is scored, as s3prl scores such clips (its loss is zeroed
        with `ctc_zero_infinity`); in training it is an error, as it would train nothing."""
        # Any other value (a -1 padding) would be taken as a target by torch's CTC loss, unchecked: a wrong loss.
        bad = labels[((labels < 0) | (labels >= self.config.vocab_size)) & (labels != -100)]
        if bad.numel():
            raise ValueError(
                f"Labels must be token ids in [0, {self.config.vocab_size}) or -100 (padding), got {int(bad[0])}."
            )
        target_lengths = ((labels != -100) & (labels != self.config.ctc_blank_id)).sum(-1)
        too_long = target_lengths > output_lengths
        if self.training and too_long.any():
            index = int(too_long.nonzero()[0])
            raise ValueError(
                f"Example {index} has a target of {int(target_lengths[index])} tokens but only "
                f"{int(output_lengths[index])} output frames: BYOL-A outputs one frame per "
                f"{1000 / self.config.frames_per_second:g} ms, and CTC needs at least one frame per token. Use "
                "coarser targets (e.g. phonemes or characters without padding tokens), or drop clips whose "
                "transcription is too long for their duration."
            )
        return self.loss_function(
            logits,
            labels,
            output_lengths,
            blank_token_id=self.config.ctc_blank_id,
            reduction=self.config.ctc_loss_reduction,
            zero_infinity=self.config.ctc_zero_infinity,
        )


class BYOLAForAudioFrameClassification(BYOLAHeadModel):
    """
    Frame-level classification: featurizer -> one-layer LSTM(frame_lstm_hidden_size) -> Linear(num_labels). The loss
    follows `config.problem_type`, over the batch's valid frames whose label row is not -100:

    - `"multi_label_classification"` (SUPERB SD, speaker activity): BCE, permutation invariant: the label columns
      (speakers, in no particular order) are matched to the outputs in the order that gives each example its lowest
      loss, and the loss is the mean over the frames (s3prl's SD loss);
    - otherwise (`None`, `"single_label_classification"`), as transformers' audio frame classifiers
      (`Wav2Vec2ForAudioFrameClassification`): cross-entropy against each frame's class, the argmax of its one-hot
      row.
    """

    def __init__(self, config: BYOLAConfig):
        super().__init__(config)
        self.lstm = nn.LSTM(self.featurizer.output_size, config.frame_lstm_hidden_size, batch_first=True)
        self.classifier = nn.Linear(config.frame_lstm_hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> TokenClassifierOutput:
        r"""
        labels (`torch.FloatTensor` of shape `(batch, frames, num_labels)`, *optional*):
            Per-frame targets (speaker activity, or one-hot classes), on the model's output frames; frames past an
            example's end are ignored (their value, e.g. -100, does not matter), and so is a frame whose row is -100.

        Returns `logits` of shape `(batch, frames, num_labels)`.
        """
        features, frame_mask, hidden_states = self.encode(input_features, attention_mask, output_hidden_states)
        logits = self.classifier(_run_lstm(self.lstm, features, frame_mask.sum(-1)))
        loss = None if labels is None else self._loss(logits, labels, frame_mask)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """The loss of the class doc on `logits` and `labels` `(batch, frames, num_labels)` and the `(batch, frames)`
        mask of valid frames."""
        if self.config.problem_type == "regression":
            raise ValueError(
                "BYOLAForAudioFrameClassification classifies frames: set problem_type to "
                "'single_label_classification' or 'multi_label_classification' (speaker activity), not 'regression'."
            )
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels must have the logits' shape (batch, frames, num_labels) = {tuple(logits.shape)}, got "
                f"{tuple(labels.shape)}: give one label row per output frame "
                f"(`model._get_feat_extract_output_lengths(mel_frames)` of them)."
            )
        # A frame without a label row (-100, e.g. labels one row short of the clip) is left out as s3prl's loss
        # covers the labelled frames only; clamped, it would train as silence.
        mask = (frame_mask & (labels[..., 0] != -100)).to(logits.dtype)
        if self.config.problem_type != "multi_label_classification":
            targets = labels.argmax(-1).masked_fill(mask == 0, -100).flatten()
            # The mean over the labelled frames; a batch without one adds nothing (0, not 0 / 0 = NaN).
            total = nn.functional.cross_entropy(logits.flatten(0, 1), targets, ignore_index=-100, reduction="sum")
            return total / mask.sum().clamp(min=1)
        targets = labels.to(logits.dtype).clamp(0, 1)  # padded frames are masked out below
        pairs = (*logits.shape, logits.shape[-1])  # (batch, frames, output, label column)
        bce = nn.functional.binary_cross_entropy_with_logits(
            logits[..., :, None].expand(pairs), targets[..., None, :].expand(pairs), reduction="none"
        )
        # cost[b, k, j]: output k matched to column j, over the clip's valid frames; an order's loss is the sum of its
        # pairs' costs (the BCE's mean over speakers, a sum over frames), so the best order is an assignment.
        cost = (bce * mask[..., None, None]).sum(1) / logits.shape[-1]
        # Over the batch's valid frames, as s3prl's SD loss: a clip weighs by its length, not as one example. A batch
        # without a labelled frame adds nothing (0 / 0 was a NaN loss, and NaN weights after the step).
        return assignment_minimum(cost).sum() / mask.sum().clamp(min=1)


# Every class a saved directory's code provides, for `trust_remote_code=True` loading through each Auto class.
AUTO_MAP = {
    "AutoConfig": "configuration_byola.BYOLAConfig",
    "AutoFeatureExtractor": "feature_extraction_byola.BYOLAFeatureExtractor",
    "AutoModel": "modeling_byola.BYOLAModel",
    "AutoModelForAudioClassification": "modeling_byola.BYOLAForSequenceClassification",
    "AutoModelForCTC": "modeling_byola.BYOLAForCTC",
    "AutoModelForAudioFrameClassification": "modeling_byola.BYOLAForAudioFrameClassification",
}


# The original time reduction's weights for each number of halvings a conv state can need, as plain Python floats
# computed once at import, so `torch.compile` folds them into constants.
_TAIL_WEIGHTS = {halvings: tail_weights(halvings) for halvings in range(1, 6)}


# [`_subset_steps`]' tables by (speakers, device): built once, not copied to the device at every training step.
_SUBSET_STEPS: dict[tuple[int, torch.device], tuple[tuple[torch.Tensor, torch.Tensor], ...]] = {}


def _subset_steps(size: int, device: torch.device) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """For [`assignment_minimum`], one step per row `r` of a `size x size` matrix: every set of `r + 1` columns (as
    `itertools.combinations` orders them) as `(smaller, column)`, both `(sets, r + 1)` on `device`: for each way to
    give row `r` one of the set's columns, that column and the position among the sets of `r` columns of the rest."""
    if (size, device) in _SUBSET_STEPS:
        return _SUBSET_STEPS[size, device]
    steps, positions = [], {(): 0}
    for count in range(1, size + 1):
        sets = list(itertools.combinations(range(size), count))
        smaller = [[positions[chosen[:i] + chosen[i + 1 :]] for i in range(count)] for chosen in sets]
        steps.append((torch.tensor(smaller, device=device), torch.tensor(sets, device=device)))
        positions = {chosen: index for index, chosen in enumerate(sets)}
    if not torch.compiler.is_compiling():  # a trace's (torch.export's) tensors are fake: no table for later calls
        _SUBSET_STEPS[size, device] = tuple(steps)
    return tuple(steps)


def assignment_minimum(cost: torch.Tensor) -> torch.Tensor:
    """
    The lowest `sum(cost[b, k, order[k]] for k)` over every order (permutation) of the columns, for `cost` of shape
    `(batch, n, n)`; shape `(batch,)`. Exact, by dynamic programming over the sets of columns the first rows take
    (`n * 2**(n - 1)` sums instead of `n!` orders: 1,024 for 8 speakers, not 40,320), on `cost`'s device; the
    gradient flows to the best order's entries, as a minimum over every order's sum would.
    """
    if cost.ndim != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"assignment_minimum takes square costs (batch, n, n), got shape {tuple(cost.shape)}.")
    best = cost.new_zeros(cost.shape[0], 1)  # (batch, sets of the columns taken so far)
    for row, (smaller, columns) in enumerate(_subset_steps(cost.shape[-1], cost.device)):
        best = (best[:, smaller] + cost[:, row, columns]).min(-1).values
    return best[:, 0]


def _stack_pieces(
    pieces: list[tuple[list[torch.Tensor], torch.Tensor]], frames: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Batch examples encoded one by one, zero-padding each to `frames` output frames."""

    def stack(states: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([nn.functional.pad(state, (0, 0, 0, frames - state.shape[1])) for state in states])

    layer_states = [stack([piece[0][k] for piece in pieces]) for k in range(len(pieces[0][0]))]
    return layer_states, stack([piece[1] for piece in pieces])


def _run_lstm(lstm: nn.LSTM, sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run the batch-first `lstm` on `(batch, frames, features)` over each example's first `lengths[i]` frames, as on a
    packed sequence, with zeros past each end. Masks instead of packing, so no shape depends on values and the heads
    export with `torch.export`: padding follows the valid frames, so a forward direction reaches it only after them,
    and a reverse direction runs on each example reversed within its own length."""
    steps = torch.arange(sequences.shape[1], device=sequences.device)[None, :]
    lengths = lengths.to(sequences.device)[:, None]
    valid = steps < lengths
    # Each example's valid frames in reverse order, its padding left in place: the permutation is its own inverse.
    reverse = torch.where(valid, lengths - 1 - steps, steps)
    hidden = sequences
    for layer in range(lstm.num_layers):
        if layer:
            hidden = nn.functional.dropout(hidden, lstm.dropout, lstm.training)
        outputs = [_lstm_direction(lstm, hidden, f"_l{layer}")]
        if lstm.bidirectional:
            backward = _lstm_direction(lstm, _gather_frames(hidden, reverse), f"_l{layer}_reverse")
            outputs.append(_gather_frames(backward, reverse))
        hidden = torch.cat(outputs, dim=-1)
    return hidden * valid[:, :, None].to(hidden.dtype)


def _lstm_direction(lstm: nn.LSTM, sequences: torch.Tensor, suffix: str) -> torch.Tensor:
    """One layer and direction of `lstm` (its parameters named with `suffix`) on `(batch, frames, features)`."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if lstm.bias else ("weight_ih", "weight_hh")
    weights = [getattr(lstm, name + suffix) for name in names]
    state = sequences.new_zeros(1, sequences.shape[0], lstm.hidden_size)
    return torch.lstm(sequences, (state, state), weights, lstm.bias, 1, 0.0, lstm.training, False, True)[0]


def _gather_frames(sequences: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """`sequences[b, order[b, t]]` of `(batch, frames, features)` for `(batch, frames)` frame indices."""
    return sequences.gather(1, order[:, :, None].expand(-1, -1, sequences.shape[-1]))


def _length_mask(lengths: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """`(batch, size)` mask, 1 where the position is below the example's length."""
    return (torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]).to(dtype)


def _max_plus_mean(states: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Max over valid time steps plus mean over valid time steps of `(batch, frames, width)` -> `(batch, width)`;
    `mask` `(batch, frames)` marks the valid steps, `None` when every step is valid."""
    if mask is None:
        return states.amax(1) + states.mean(1)
    invalid = ~mask.bool()[:, :, None]
    maximum = states.masked_fill(invalid, float("-inf")).amax(1)
    mean = states.masked_fill(invalid, 0.0).sum(1) / lengths[:, None].to(states.dtype)
    return maximum + mean


__all__ = [
    "BYOLAForAudioFrameClassification",
    "BYOLAForCTC",
    "BYOLAForSequenceClassification",
    "BYOLAModel",
    "BYOLAModelOutput",
    "BYOLAPreTrainedModel",
    "PretrainingCheckpointError",
]

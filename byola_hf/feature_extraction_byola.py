"""Feature extractor for BYOL-A: mono 16 kHz waveforms to log-mel spectrograms."""

import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.audio_utils import mel_filter_bank
from transformers.utils import PaddingStrategy, TensorType, logging, to_numpy

from .audio import (
    batch_waveforms,
    check_finite_batch,
    check_sampling_rate,
    check_waveform,
    lengths_list,
    scale_pcm,
    to_tensor,
)
from .configuration_byola import BYOLAConfig, PrivatePushMixin, minimum_samples


logger = logging.get_logger(__name__)

FLOAT32_EPS = float(np.finfo(np.float32).eps)
# Samples under this magnitude cannot overflow the float32 power of a 1024-sample window (1024 * x**2 < 3.4e38).
LOUD_SAMPLES = 1e17
# STFT frames per call over the whole batch, which bounds memory on long audio. On CPU 4096 (16 MB of windowed
# float32 frames: a call's working set stays in cache); on accelerators 65536 (about 0.7 GB at a call's peak), so
# that a batch of 64 x 10 s is one round of kernels rather than sixteen.
_STFT_FRAMES_PER_CALL = {"cpu": 1 << 12, "accelerator": 1 << 16}
FRONT_END_PARAMETERS = (
    "feature_size",
    "sampling_rate",
    "n_fft",
    "win_length",
    "hop_length",
    "f_min",
    "f_max",
    "time_downsampling",
)


class BYOLAFeatureExtractor(PrivatePushMixin, SequenceFeatureExtractor):
    r"""
    Turns raw mono waveforms into the log-mel spectrograms BYOL-A was trained on:
    `log(mel_power + log_offset)` with a centred, reflect-padded STFT (periodic Hann window), power 2, and a
    Slaney-scale, Slaney-normalised mel filterbank, the same computation as nnAudio's `MelSpectrogram` used by
    the original implementation. The output is *not* normalised: [`BYOLAModel`] normalises with the statistics
    held in its config, so that they have a single home.

    A batch is computed as if each example were alone: every waveform is reflect-padded at its own ends before the
    STFT, and frames past an example's end are set to `log(log_offset)` (digital silence) and marked `0` in the
    frame-level `attention_mask`. An example of `n` samples has `1 + n // hop_length` frames.

    Args:
        feature_size (`int`, *optional*, defaults to 64):
            Number of mel bands (`BYOLAConfig.n_mels`).
        sampling_rate (`int`, *optional*, defaults to 16000):
            Sampling rate the waveforms must have (`BYOLAConfig.sampling_rate`).
        n_fft (`int`, *optional*, defaults to 1024):
            FFT size.
        win_length (`int`, *optional*, defaults to 1024):
            Hann window length (centred in the FFT frame when shorter than `n_fft`).
        hop_length (`int`, *optional*, defaults to 160):
            Hop between frames in samples.
        f_min (`float`, *optional*, defaults to 60.0):
            Lowest mel band edge in Hz.
        f_max (`float`, *optional*, defaults to 7800.0):
            Highest mel band edge in Hz.
        log_offset (`float`, *optional*, defaults to float32 machine epsilon):
            Added to the mel power before the logarithm.
        time_downsampling (`int`, *optional*, defaults to 8):
            Log-mel frames per output frame of the model (`BYOLAConfig.time_downsampling`: 8 for v1, 4 for v2), for
            `pad_to_min_length`.
        padding_value (`float`, *optional*, defaults to 0.0):
            Value used to pad waveforms (the padded frames are reset to digital silence either way).
        return_attention_mask (`bool`, *optional*, defaults to `True`):
            Whether to return the frame-level `attention_mask`.
    """

    model_input_names = ["input_features", "attention_mask"]

    # One keyword per front-end setting, as transformers' SequenceFeatureExtractor subclasses take them.
    def __init__(  # noqa: PLR0913
        self,
        feature_size: int = 64,
        sampling_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int = 1024,
        hop_length: int = 160,
        f_min: float = 60.0,
        f_max: float = 7800.0,
        log_offset: float = FLOAT32_EPS,
        time_downsampling: int = 8,
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        **kwargs,
    ):
        if kwargs.get("padding_side", "right") != "right":
            raise ValueError("BYOLAFeatureExtractor only pads on the right (padding_side='right').")
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.f_min = f_min
        self.f_max = f_max
        self.log_offset = log_offset
        self.time_downsampling = time_downsampling
        check_positive(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            time_downsampling=time_downsampling,
        )
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft}).")
        if not 0 <= f_min < f_max <= sampling_rate / 2:
            raise ValueError(
                f"The mel bands need 0 <= f_min < f_max <= sampling_rate / 2, got f_min={f_min}, f_max={f_max}, "
                f"sampling_rate={sampling_rate}."
            )
        # (n_fft // 2 + 1, feature_size), float64, identical to librosa.filters.mel(htk=False, norm="slaney").
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=feature_size,
            min_frequency=f_min,
            max_frequency=f_max,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self._mel_filters_t = torch.from_numpy(self.mel_filters.T.astype(np.float32))
        self._window = torch.hann_window(win_length, periodic=True, dtype=torch.float32)

    @classmethod
    def from_model_config(cls, config: BYOLAConfig, **kwargs) -> "BYOLAFeatureExtractor":
        """Build the feature extractor whose front-end matches `config` (the single source of these parameters)."""
        front_end = {name: getattr(config, name) for name in FRONT_END_PARAMETERS if name != "feature_size"}
        return cls(feature_size=config.n_mels, **front_end, **kwargs)

    @classmethod
    def from_dict(cls, feature_extractor_dict: dict[str, Any], **kwargs):
        """`FeatureExtractionMixin.from_dict`, and, loading a folder or Hub repository (every loading path ends here,
        `AutoFeatureExtractor`'s included), a check that the front-end matches the `config.json` beside it: a
        `preprocessor_config.json` edited or copied from another model (hop 320 for 160) gives other features."""
        loaded = super().from_dict(feature_extractor_dict, **kwargs)
        source = _loading_source(sys._getframe(1))
        if source is not None:
            feature_extractor = loaded[0] if isinstance(loaded, tuple) else loaded
            check_front_end_beside(feature_extractor, *source)
        return loaded

    def front_end(self) -> dict[str, Any]:
        """The parameters that decide the features (those a model config fixes)."""
        return {name: getattr(self, name) for name in FRONT_END_PARAMETERS}

    def matches_model_config(self, config: BYOLAConfig) -> bool:
        """Whether this front-end produces what a model with `config` expects."""
        return self.front_end() == self.from_model_config(config).front_end()

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for derived in ("_mel_filters_t", "_window"):
            output.pop(derived, None)
        return output

    def num_frames(self, num_samples: int | np.ndarray) -> int | np.ndarray:
        """Log-mel frames of a waveform of `num_samples` samples: `1 + num_samples // hop_length`."""
        return 1 + num_samples // self.hop_length

    # The keywords of transformers' audio feature extractors' __call__ (padding, truncation, return_tensors, ...).
    def __call__(  # noqa: PLR0913
        self,
        raw_speech: Any,
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = "longest",
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        pad_to_min_length: bool = False,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        device: str | torch.device | None = None,
        lengths: Sequence[int] | torch.Tensor | None = None,
    ) -> BatchFeature:
        """
        Featurise one or several waveforms.

        Args:
            raw_speech:
                One mono waveform (1-D `np.ndarray`, `torch.Tensor` or list of floats), a batch of them (a list, or a
                2-D `(batch, samples)` array/tensor, right-padded when `lengths` is given), or decoded `datasets`
                audio (`{"array": ..., "sampling_rate": ...}` dicts or torchcodec `AudioDecoder`s), alone or in a
                list. Floats are taken as they are, integer PCM arrays scaled by their dtype's full scale to [-1, 1).
            sampling_rate (`int`, *optional*):
                Rate of `raw_speech`, checked against `self.sampling_rate`: pass it (only `datasets` audio has one).
            padding, max_length, truncation, pad_to_multiple_of:
                As `SequenceFeatureExtractor` (`"longest"`/`True`, `"max_length"`, `"do_not_pad"`/`False`: one
                unpadded array per example), lengths in **samples**.
            pad_to_min_length (`bool`, *optional*, defaults to `False`):
                Zero-pad waveforms shorter than `min_samples` (one output frame) to that length *as samples* (their
                frames count as valid) instead of refusing them.
            return_attention_mask, return_tensors:
                Return the frame-level mask (default `self.return_attention_mask`); `"pt"`, `"np"` or lists of arrays
                (unpadded rows of different lengths: a list of tensors for `"pt"`, a 1-D object array for `"np"`).
            device (`str` or `torch.device`, *optional*):
                Compute the log-mel on this device and return tensors there (implies `return_tensors="pt"`); by
                default on the CPU, or on the device of a torch input batch.
            lengths (*optional*):
                With a 2-D `(batch, samples)` array or tensor: the valid samples of each row (the rest is padding).

        Returns:
            [`BatchFeature`] with `input_features` of shape `(batch, feature_size, frames)` (float32 log-mel, not
            normalised) and `attention_mask` of shape `(batch, frames)` (1 on valid frames), where
            `frames = 1 + samples // hop_length` of the padded length.
        """
        device, return_tensors = _device_and_tensor_type(device, return_tensors)
        strategy = self._get_padding_strategies(padding=padding, max_length=max_length)
        check_positive(pad_to_multiple_of=pad_to_multiple_of, max_length=max_length)
        waveforms, lengths = self._checked_waveforms(raw_speech, sampling_rate, lengths)
        minimum = self.min_samples if pad_to_min_length else 0
        lengths = self._kept_lengths(lengths, truncation, max_length, minimum, strategy != PaddingStrategy.DO_NOT_PAD)
        if strategy == PaddingStrategy.DO_NOT_PAD:
            features, frame_masks = self._log_mels_one_by_one(waveforms, lengths, minimum, device)
        else:
            target = _padded_samples(lengths, strategy, max_length, pad_to_multiple_of, minimum)
            batch = self._pad_rows(waveforms, lengths, target, minimum, device)
            features, frame_masks = self.log_mel_batch(batch, [max(length, minimum) for length in lengths])
        outputs = {"input_features": features, "attention_mask": frame_masks}
        self._drop_mask_unless_asked(outputs, return_attention_mask)
        return _batch_feature(outputs, return_tensors)

    def _drop_mask_unless_asked(self, outputs: dict[str, Any], return_attention_mask: bool | None) -> None:
        """Remove `outputs["attention_mask"]` unless asked for (default `self.return_attention_mask`), warning when
        it marked padding."""
        if not (self.return_attention_mask if return_attention_mask is None else return_attention_mask):
            warn_if_padding_unmasked(outputs.pop("attention_mask"))

    def _kept_lengths(
        self, lengths: list[int], truncation: bool, max_length: int | None, minimum: int, batched: bool
    ) -> list[int]:
        """The samples kept of each waveform (cut to `max_length` with `truncation`), each long enough once padded to
        `minimum` for a log-mel frame, and when `batched` (the model's padded input) for one output frame, since a
        forward on an accelerator reads no lengths back (byola-compute-stats' unpadded rows need a log-mel frame)."""
        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length (in samples).")
            lengths = [min(length, max_length) for length in lengths]
        for index, length in enumerate(lengths):
            self.check_length(max(length, minimum), index, self.min_samples if batched else None)
        return lengths

    def _checked_waveforms(
        self, raw_speech: Any, sampling_rate: int | None, lengths: Sequence[int] | torch.Tensor | None
    ) -> tuple[list[np.ndarray] | torch.Tensor, list[int]]:
        """The waveforms of any accepted input (`byola_hf.audio`), rate and values checked, and their lengths."""
        if lengths is not None and isinstance(raw_speech, np.ndarray):
            raw_speech = to_tensor(raw_speech)
        if isinstance(raw_speech, torch.Tensor) and raw_speech.ndim == 2:
            self._check_sampling_rate(sampling_rate, None)
            return self._tensor_batch(raw_speech, lengths)
        if lengths is not None:
            raise ValueError("lengths goes with a 2-D (batch, samples) array or tensor of right-padded waveforms.")
        waveforms, found_rate = batch_waveforms(raw_speech)
        self._check_sampling_rate(sampling_rate, found_rate)
        for index, waveform in enumerate(waveforms):
            check_waveform(waveform, f"Example {index}")
        return waveforms, [len(waveform) for waveform in waveforms]

    def _log_mels_one_by_one(
        self, waveforms, lengths: list[int], minimum: int, device: torch.device | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """`padding=False`: each example's log-mel and mask, unpadded."""
        features, frame_masks = [], []
        for index, length in enumerate(lengths):
            batch = self._pad_rows(waveforms[index : index + 1], [length], length, minimum, device)
            try:
                feature, mask = self.log_mel_batch(batch, [max(length, minimum)])
            except NonFiniteFeaturesError as error:
                raise NonFiniteFeaturesError(index, error.peak) from None
            features.append(feature[0])
            frame_masks.append(mask[0])
        return features, frame_masks

    @property
    def min_samples(self) -> int:
        """Fewest samples the model takes, as `BYOLAConfig.min_samples` (one rule: [`minimum_samples`])."""
        return minimum_samples(self.time_downsampling, self.hop_length, self.n_fft)

    def pad(
        self,
        processed_features: Any,
        padding: bool | str | PaddingStrategy = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
    ) -> BatchFeature:
        """
        Pad log-mel rows into a batch under `SequenceFeatureExtractor.pad`'s contract (its padding strategies,
        truncation, `pad_to_multiple_of`, frame-level `attention_mask`, unpadded rows returned apart, tensor types;
        lengths count frames), in either layout:

        - this extractor's own `(feature_size, frames)` rows, as `__call__(..., padding=False)` returns them (stored by
          `datasets.map`, padded by `DataCollatorWithPadding(feature_extractor)`): padded in that layout,
          `(batch, feature_size, frames)`, with digital silence `log(log_offset)`, so a padded batch equals
          `__call__` on the waveforms (the base class's arithmetic, then one copy per row rather than its per-row
          `np.pad` and stacking, which a training loop's collator would feel);
        - the base class's time-first `(frames, feature_size)` rows (as Whisper's): exactly
          `SequenceFeatureExtractor.pad`, padded with `padding_value`, `(batch, frames, feature_size)`.

        Rows that fit both, `(feature_size, feature_size)`, are read in this extractor's own layout unless another
        row of the batch is time-first. Other keys (e.g. `labels`) pass through as the base class passes them.
        """
        processed_features = _feature_columns(processed_features)
        rows = processed_features["input_features"]
        if not self._own_layout(rows):
            return super().pad(
                processed_features,
                padding,
                max_length,
                truncation,
                pad_to_multiple_of,
                return_attention_mask,
                return_tensors,
            )
        arrays = [to_numpy(row) for row in rows]
        lengths, targets = self._padded_lengths(
            [array.shape[-1] for array in arrays], padding, max_length, truncation, pad_to_multiple_of
        )
        silence = np.log(np.float32(self.log_offset))
        masks = (np.arange(max(targets))[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
        if len(set(targets)) == 1:  # one padded batch, the model's input
            self._check_output_frames(lengths)
            features = np.full((len(arrays), self.feature_size, targets[0]), silence, np.float32)
        else:  # unpadded or over max_length: rows apart, as the base class returns them
            features = _object_rows([np.full((self.feature_size, target), silence, np.float32) for target in targets])
            masks = _object_rows([mask[:target] for mask, target in zip(masks, targets)])
        for row, array, length in zip(features, arrays, lengths):
            row[:, :length] = array[:, :length]
        outputs = {**processed_features, "input_features": features, "attention_mask": masks}
        self._drop_mask_unless_asked(outputs, return_attention_mask)
        if return_tensors is None:  # the base class's default: the rows' own type
            return_tensors = "pt" if isinstance(rows[0], torch.Tensor) else "np"
        return BatchFeature(outputs, tensor_type=return_tensors)

    def _check_output_frames(self, lengths: Sequence[int]) -> None:
        """A `ValueError` naming the first row of `lengths` (log-mel frames) without one output frame: as in
        `__call__`, checked on the host, since a forward on an accelerator reads no lengths back."""
        short = next((index for index, length in enumerate(lengths) if length < self.time_downsampling), None)
        if short is not None:
            raise ValueError(
                f"Row {short} has {lengths[short]} log-mel frames, too short for one BYOL-A output frame (at least "
                f"{self.time_downsampling}: {self.min_samples} samples); featurise its clip with "
                "pad_to_min_length=True."
            )

    def _own_layout(self, rows: Sequence[Any]) -> bool:
        """Whether `rows` are `(feature_size, frames)` (True) or time-first `(frames, feature_size)` (False); a batch
        in neither layout is refused."""
        shapes = [tuple(row.shape) if hasattr(row, "shape") else np.shape(row) for row in rows]
        if shapes and all(len(shape) == 2 and shape[0] == self.feature_size for shape in shapes):
            return True
        if shapes and all(len(shape) == 2 and shape[1] == self.feature_size for shape in shapes):
            return False
        axis = 1 if shapes and len(shapes[0]) == 2 and shapes[0][0] != self.feature_size else 0
        index = next((i for i, shape in enumerate(shapes) if len(shape) != 2 or shape[axis] != self.feature_size), 0)
        raise ValueError(
            f"Row {index} has input_features of shape {shapes[index] if shapes else None}; expected "
            f"({self.feature_size}, frames) as the feature extractor returns them with padding=False, or time-first "
            f"(frames, {self.feature_size}), the same layout in every row."
        )

    def _padded_lengths(
        self, frames: list[int], padding, max_length: int | None, truncation: bool, pad_to_multiple_of: int | None
    ) -> tuple[list[int], list[int]]:
        """`SequenceFeatureExtractor.pad`'s arithmetic for rows of `frames`: each row's frames kept (truncated to
        `max_length`, rounded up to `pad_to_multiple_of`, with `truncation`) and its length once padded ("longest":
        the longest kept row; "max_length": `max_length`, both rounded up; rows already longer stay as they are)."""
        strategy = self._get_padding_strategies(padding=padding, max_length=max_length)
        if truncation and max_length is None:
            raise ValueError("When setting ``truncation=True``, make sure that ``max_length`` is defined.")
        multiple = pad_to_multiple_of or 1
        if truncation:
            frames = [min(count, -(-max_length // multiple) * multiple) for count in frames]
        if strategy == PaddingStrategy.DO_NOT_PAD:
            return frames, frames
        target = max(frames) if strategy == PaddingStrategy.LONGEST else max_length
        target = -(-target // multiple) * multiple
        return frames, [max(count, target) for count in frames]

    def _tensor_batch(
        self, waveforms: torch.Tensor, lengths: Sequence[int] | torch.Tensor | None
    ) -> tuple[torch.Tensor, list[int]]:
        """A right-padded `(batch, samples)` tensor and its valid lengths, checked, in float32 on its device."""
        if waveforms.device.type == "meta":
            raise ValueError("The waveforms are a tensor on the 'meta' device, which holds no samples.")
        if 0 in waveforms.shape:
            raise ValueError(f"Got an empty batch of shape {tuple(waveforms.shape)}: pass at least one waveform.")
        waveforms = scale_pcm(waveforms.detach())
        lengths = [waveforms.shape[1]] * waveforms.shape[0] if lengths is None else lengths_list(lengths)
        if len(lengths) != waveforms.shape[0] or any(not 0 < n <= waveforms.shape[1] for n in lengths):
            raise ValueError(
                f"lengths must give each of the {waveforms.shape[0]} rows a valid length in 1..{waveforms.shape[1]}, "
                f"got {lengths}."
            )
        check_finite_batch(waveforms)
        return waveforms, lengths

    def _pad_rows(
        self, waveforms, lengths: Sequence[int], target: int, minimum: int, device: torch.device | None
    ) -> torch.Tensor:
        """`(batch, max(target, minimum))` float32 tensor on `device` (or the input tensor's), each row's first
        `lengths[i]` samples kept and the rest `padding_value`, or zero up to `minimum` (the `pad_to_min_length`
        samples, which count as audio)."""
        target = max(target, minimum)
        if isinstance(waveforms, torch.Tensor):  # a (batch, samples) tensor: stays on its device
            batch = waveforms.to(device) if device is not None else waveforms
            if batch.shape[1] == target and all(length == target for length in lengths):
                return batch  # nothing to pad or clear: no copy
            if batch.shape[1] < target:
                batch = nn.functional.pad(batch, (0, target - batch.shape[1]), value=self.padding_value)
            batch = batch[:, :target].clone()
            columns = torch.arange(target, device=batch.device)[None, :]
            valid = torch.as_tensor(lengths, device=batch.device)[:, None]
            batch.masked_fill_(columns >= torch.maximum(valid, torch.full_like(valid, minimum)), self.padding_value)
            return batch.masked_fill_((columns >= valid) & (columns < minimum), 0.0)
        # One copy of each waveform into the padded batch: `SequenceFeatureExtractor.pad` pads every row with np.pad
        # and stacks them, several times slower on long clips (docs/performance.md). For a GPU the batch is built in
        # pinned memory (cached by torch), so its copy to the device runs asynchronously; on CPU in numpy's buffer,
        # since a fresh torch.empty of that size pays for page faults.
        pinned = device is not None and device.type == "cuda"
        if pinned:
            batch = torch.empty((len(lengths), target), dtype=torch.float32, pin_memory=True)
            rows = batch.numpy()
        else:
            rows = np.empty((len(lengths), target), dtype=np.float32)
            batch = torch.from_numpy(rows)
        for row, waveform, length in zip(rows, waveforms, lengths):
            audio = max(length, minimum)
            row[:length] = waveform[:length]
            row[length:audio] = 0.0  # pad_to_min_length's zeros count as audio
            row[audio:] = self.padding_value
        return batch.to(device, non_blocking=pinned) if device is not None else batch

    def log_mel_batch(self, waveforms: torch.Tensor, lengths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The model inputs of checked, right-padded waveforms, computed on their device with no further input checks
        (the pipelines and the commands call it on batches that `byola_hf.audio` has checked); a log-mel that is not
        finite raises [`NonFiniteFeaturesError`] naming its example.

        Args:
            waveforms (`torch.Tensor` of shape `(batch, samples)`): float32 waveforms.
            lengths: the valid samples of each row.

        Returns:
            `(input_features, attention_mask)`: `(batch, feature_size, frames)` float32 log-mel and `(batch, frames)`
            int32 mask, `frames = 1 + samples // hop_length`.
        """
        log_mel = self.log_mel(waveforms, lengths)
        finite = torch.isfinite(log_mel).flatten(1).all(-1)  # per example: one reduction, read back once
        if not bool(finite.all()):
            index = int((~finite).nonzero()[0, 0])
            raise NonFiniteFeaturesError(index, float(waveforms[index].abs().max()))
        return log_mel, self._frame_mask(lengths, log_mel.shape[-1], log_mel.device).to(torch.int32)

    def check_loud_clip(self, waveform: np.ndarray, name: str | None = None) -> None:
        """Raise [`NonFiniteFeaturesError`] naming `name` when the finite `waveform` (1-D) is loud enough for its
        log-mel to overflow float32 and does: for callers that batch clips later, where the error could only say
        where a clip sat in its batch. Clips under `LOUD_SAMPLES` cost one max."""
        if np.abs(waveform).max(initial=0.0) < LOUD_SAMPLES:
            return
        try:
            self.log_mel_batch(
                torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))[None], [len(waveform)]
            )
        except NonFiniteFeaturesError as error:
            raise NonFiniteFeaturesError(0, error.peak, name or "The clip") from None

    def _frame_mask(self, lengths: Sequence[int], frames: int, device: torch.device) -> torch.Tensor:
        """`(batch, frames)` bool, True on the frames of each example's first `lengths[i]` samples."""
        valid = torch.as_tensor(self.num_frames(np.asarray(lengths)), device=device)
        return torch.arange(frames, device=device)[None, :] < valid[:, None]

    @torch.no_grad()
    def log_mel(self, waveforms: torch.Tensor, lengths: Sequence[int] | None = None) -> torch.Tensor:
        """
        Log-mel spectrogram of a batch of waveforms in torch, on their device, as the original nnAudio front-end
        computes it per example.

        Args:
            waveforms (`torch.Tensor` of shape `(batch, samples)`): float32 waveforms, right-padded.
            lengths (*optional*): valid samples of each example (all of them when not given). Each example is
                reflect-padded at its own end, and frames past `1 + lengths[i] // hop_length` are set to
                `log(log_offset)`.

        Returns:
            `torch.Tensor` of shape `(batch, feature_size, 1 + samples // hop_length)`.
        """
        with torch.autocast(device_type=waveforms.device.type, enabled=False):  # always float32, even under bf16
            return self._log_mel(waveforms, lengths)

    def _log_mel(self, waveforms: torch.Tensor, lengths: Sequence[int] | None = None) -> torch.Tensor:
        batch, samples = waveforms.shape
        half = self.n_fft // 2
        # Centred frames: each example reflect-padded by n_fft // 2 at its own ends.
        if lengths is None or all(length == samples for length in lengths):
            framed = nn.functional.pad(waveforms[:, None], (half, half), mode="reflect")[:, 0]
        else:
            # The left edge is the same for every example; the right edge mirrors the samples before each example's
            # own end, written for the whole batch at once.
            framed = nn.functional.pad(waveforms, (half, half))
            framed[:, :half] = waveforms[:, 1 : half + 1].flip(-1)
            ends = torch.as_tensor(lengths, device=waveforms.device)[:, None]
            offsets = torch.arange(half, device=waveforms.device)[None, :]
            framed.scatter_(1, ends + half + offsets, waveforms.gather(1, ends - 2 - offsets))
        # Long inputs go through the STFT a run of frames at a time (each frame depends only on its own samples), so
        # the windowed frames and the complex spectrum never exist for a whole hour of audio at once.
        window, filters = self._window.to(waveforms.device), self._mel_filters_t.to(waveforms.device)
        frames = self.num_frames(samples)
        step = max(1, _STFT_FRAMES_PER_CALL["cpu" if waveforms.device.type == "cpu" else "accelerator"] // batch)
        pieces = []
        for start in range(0, frames, step):
            stop = min(frames, start + step)
            spectrum = torch.stft(
                framed[:, start * self.hop_length : (stop - 1) * self.hop_length + self.n_fft],
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=window,
                center=False,
                return_complex=True,
            )
            parts = torch.view_as_real(spectrum)
            power = parts[..., 0].square().add_(parts[..., 1].square())  # |X|^2, without a slow size-2 reduction
            pieces.append(torch.matmul(filters, power).add_(self.log_offset).log_())
        log_mel = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
        if lengths is not None:
            padded = ~self._frame_mask(lengths, log_mel.shape[-1], waveforms.device)
            log_mel.masked_fill_(padded[:, None, :], float(np.log(np.float32(self.log_offset))))
        return log_mel

    def _check_sampling_rate(self, sampling_rate: int | None, found_rate: int | None) -> None:
        if sampling_rate is not None:
            sampling_rate = check_sampling_rate(sampling_rate)
        if sampling_rate is not None and found_rate is not None and sampling_rate != found_rate:
            raise ValueError(f"sampling_rate={sampling_rate} was passed but the decoded audio says {found_rate} Hz.")
        rate = sampling_rate if sampling_rate is not None else found_rate
        if rate is None:
            logger.warning(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{self.__class__.__name__}()`: "
                f"the input is assumed to be sampled at {self.sampling_rate} Hz, and other rates give silently "
                "wrong features."
            )
        elif rate != self.sampling_rate:
            raise ValueError(
                f"BYOL-A expects audio sampled at {self.sampling_rate} Hz but got {rate} Hz. Resample it first, e.g. "
                f"`dataset.cast_column('audio', datasets.Audio(sampling_rate={self.sampling_rate}))` or "
                f"`librosa.resample(waveform, orig_sr={rate}, target_sr={self.sampling_rate})`."
            )

    def check_length(self, length: int, index: int | None = None, minimum: int | None = None) -> None:
        """Raise a `ValueError` naming the fix when a waveform of `length` samples (example `index` of a batch) is
        shorter than `minimum`: by default the log-mel's (the centred STFT's `n_fft // 2 + 1`); `self.min_samples`
        where the model runs next (it checks no values on an accelerator, where a clip without an output frame
        would give a NaN embedding)."""
        minimum = self.n_fft // 2 + 1 if minimum is None else minimum
        if length < minimum:
            mono = " If this is multi-channel audio of shape (samples, channels), mix it down to mono first."
            subject = "The clip" if index is None else f"Example {index}"
            raise ValueError(
                f"{subject} has {length} samples, too short for one BYOL-A output frame (at least {self.min_samples}; "
                f"the centred STFT alone needs {self.n_fft // 2 + 1}). Pass pad_to_min_length=True to zero-pad short "
                f"clips to {self.min_samples}.{mono if length <= 8 else ''}"
            )


class NonFiniteFeaturesError(ValueError):
    """Finite samples whose log-mel is not finite (their power overflows float32): example `index` of the batch."""

    def __init__(self, index: int, peak: float, name: str | None = None):
        self.index, self.peak = index, peak
        super().__init__(
            f"{name or f'Example {index}'}'s log-mel holds NaN or infinity: its samples reach {peak:.3g}, too large "
            "for float32 power; scale the audio to [-1, 1] (float) or pass integer PCM."
        )


PADDING_WITHOUT_MASK = (
    "return_attention_mask=False on a padded batch: a BYOL-A model given no attention_mask takes the padding "
    "(digital silence) as part of each shorter clip, so their outputs differ from what the clips give alone. Keep "
    "the mask and pass it to the model, or pad nothing (padding=False, or clips of equal length)."
)


def warn_if_padding_unmasked(masks: Any) -> None:
    """Warn (once) when the frame masks being dropped, `(batch, frames)` or one row per example, mark padding: the
    model cannot tell padded frames from audio without them."""
    rows = masks if isinstance(masks, list) or (isinstance(masks, np.ndarray) and masks.dtype.kind == "O") else [masks]
    if any(not bool((row != 0).all()) for row in rows):
        logger.warning_once(PADDING_WITHOUT_MASK)


def check_positive(**values: int | None) -> None:
    """A `ValueError` naming each given value that is not a positive whole number (`None` means not given)."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive whole number, got {value!r}.")


def _device_and_tensor_type(
    device: str | torch.device | None, return_tensors: str | TensorType | None
) -> tuple[torch.device | None, str | TensorType | None]:
    """`device` as a `torch.device` (or a `ValueError` saying why it cannot be used here) and the tensor type: torch
    tensors (`"pt"`) whenever a device is named."""
    if device is None:
        return None, return_tensors
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1'): {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but no CUDA GPU is available to this torch ({torch.__version__}): use device='cpu' "
            "(or leave it out), or install a CUDA build of torch on a machine with a GPU."
        )
    if return_tensors not in (None, "pt", TensorType.PYTORCH):
        raise ValueError(
            f"device={resolved!r} returns torch tensors: use return_tensors='pt', not {return_tensors!r}."
        )
    return resolved, "pt"


def _padded_samples(
    lengths: list[int], strategy: PaddingStrategy, max_length: int | None, pad_to_multiple_of: int | None, minimum: int
) -> int:
    """Samples of the padded batch: the longest waveform (at least `minimum`) or `max_length`, rounded up to
    `pad_to_multiple_of`; waveforms longer than `max_length` are refused."""
    target = max(max(lengths), minimum) if strategy == PaddingStrategy.LONGEST else max_length
    if max(lengths) > target:
        raise ValueError(
            f"A waveform has {max(lengths)} samples, more than max_length={max_length}: pass "
            "truncation=True to cut it, or a larger max_length."
        )
    if pad_to_multiple_of is not None:
        target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
    return target


def _batch_feature(outputs: dict[str, Any], return_tensors: str | TensorType | None) -> BatchFeature:
    """`outputs` as torch tensors (stacked where the rows are equal) or numpy rows in the asked tensor type; unequal
    rows (`padding=False`) for `"np"` as a 1-D object array, as `pad()` returns them (BatchFeature would stack)."""
    if return_tensors in ("pt", TensorType.PYTORCH):
        return BatchFeature({key: _stack_if_equal(value) for key, value in outputs.items()})
    outputs = {key: [item.cpu().numpy() for item in value] for key, value in outputs.items()}
    if return_tensors in ("np", TensorType.NUMPY):
        outputs = {
            key: rows if len({row.shape for row in rows}) == 1 else _object_rows(rows) for key, rows in outputs.items()
        }
    return BatchFeature(outputs, tensor_type=return_tensors)


def _feature_columns(processed_features: Any) -> dict[str, Any] | BatchFeature:
    """`pad()`'s input as one list per key (a list of rows is turned around), refused without `input_features`."""
    if isinstance(processed_features, (list, tuple)) and processed_features:
        if isinstance(processed_features[0], (dict, BatchFeature)):
            processed_features = {key: [row[key] for row in processed_features] for key in processed_features[0]}
    if not isinstance(processed_features, (dict, BatchFeature)) or "input_features" not in processed_features:
        raise ValueError(
            "pad() takes rows with 'input_features' of shape (feature_size, frames), as __call__ returns them."
        )
    return processed_features


def _object_rows(rows: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array of `rows` of unequal shapes (numpy would fail to stack arrays whose first axes agree)."""
    array = np.empty(len(rows), dtype=object)
    array[:] = rows
    return array


def _stack_if_equal(items: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if isinstance(items, torch.Tensor) or len({item.shape for item in items}) > 1:
        return items
    return torch.stack(items)


__all__ = ["BYOLAFeatureExtractor"]


def _loading_source(caller) -> tuple[str, dict[str, Any]] | None:
    """(path or repository, Hub options) when `caller`, the frame that called `from_dict`, is a `from_pretrained`
    (this class's, inherited, or `AutoFeatureExtractor`'s); `None` for a dictionary built by hand."""
    if caller.f_code.co_name != "from_pretrained" or "pretrained_model_name_or_path" not in caller.f_locals:
        return None
    local = caller.f_locals
    names = ("cache_dir", "revision", "token", "subfolder")
    options = {k: v for k, v in (local.get("hub_kwargs") or {}).items() if k in names}
    for name in names:
        if local.get(name) is not None:
            options.setdefault(name, local[name])
    return str(local["pretrained_model_name_or_path"]), options


def check_front_end_beside(feature_extractor: BYOLAFeatureExtractor, source: str, hub_options: dict) -> None:
    """Raise a `ValueError` when the BYOL-A `config.json` beside `source`'s `preprocessor_config.json` fixes
    another front-end than `feature_extractor` has (a feature extractor saved alone, or beside another model's
    config, has nothing to compare with)."""
    from transformers.utils import cached_file

    config_file = cached_file(source, "config.json", _raise_exceptions_for_missing_entries=False, **hub_options)
    if config_file is None:
        return
    with open(config_file, encoding="utf-8") as handle:
        config_dict = json.load(handle)
    if config_dict.get("model_type") != BYOLAConfig.model_type:
        return
    expected = BYOLAFeatureExtractor.from_model_config(BYOLAConfig.from_dict(config_dict)).front_end()
    differences = {k: v for k, v in feature_extractor.front_end().items() if v != expected[k]}
    if differences:
        found = ", ".join(f"{k}={v} (config.json: {expected[k]})" for k, v in differences.items())
        raise ValueError(
            f"The preprocessor_config.json in {source} does not match its config.json: {found}. Re-create it with "
            "`BYOLAFeatureExtractor.from_model_config(config).save_pretrained(...)`."
        )

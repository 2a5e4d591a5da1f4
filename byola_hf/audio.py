"""One way in for audio: every input form byola_hf accepts -> mono float32 samples, with one set of checks.

The feature extractor, the pipelines, the HEAR API and every command (statistics, extraction, the SUPERB recipe,
fine-tuning, pre-training) turn their inputs into waveforms here, so a clip reads the same wherever it enters:
- a file path or the file's bytes: decoded with soundfile (libsndfile), see `AUDIO_EXTENSIONS`;
- a numpy array, torch tensor or list of floats; integer PCM (`int8`, `int16`, `int32`, `uint8`) is scaled by its
  dtype to [-1, 1) as soundfile reads it; either byte order; a list of integers beyond [-1, 1] is refused (it has
  no dtype to scale by);
- a `{"array" | "raw": ..., "sampling_rate": ...}` dict (`datasets` < 4) or a torchcodec `AudioDecoder` (`datasets`
  >= 4);
- multi-channel audio, `(channels, samples)` or `(samples, channels)` (the shorter axis is the channels), averaged
  down to mono.
Empty, non-finite, header-only and truncated inputs, and rates that are not positive integers, are errors naming the
input.
"""

import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .extras import require_extra


logger = logging.get_logger(__name__)

# The file endings every command reads as audio (what libsndfile decodes). `.oga` is Ogg audio as Debian's sound
# themes ship it.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
# Audio formats libsndfile cannot decode: a folder holding them is refused rather than read without them.
UNDECODED_AUDIO_EXTENSIONS = (".m4a", ".aac", ".wma", ".amr", ".ape", ".caf", ".webm", ".mka")
# More channels than this on the shorter axis is not multi-channel audio but a batch or a mistake.
MAX_CHANNELS = 32
PCM_DTYPES = (torch.int8, torch.int16, torch.int32, torch.uint8)


def check_sampling_rate(rate: Any, name: str = "sampling_rate") -> int:
    """`rate` as a positive `int`, or a `ValueError`: a rate of 0 or None must never stand for a default."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive whole number of Hz (e.g. 16000), got {rate!r}.")
    return int(rate)


def scale_pcm(samples: torch.Tensor) -> torch.Tensor:
    """float32 samples. Integer PCM (`int8`, `int16`, `int32`, `uint8`) is scaled by its dtype's full scale, as
    soundfile and librosa read it: signed `intN` by `2**(N-1)` (int16 32767 -> 0.99997), `uint8` centred first
    (128 -> 0). Floats are kept as they are. Other integer dtypes (`int64` from arithmetic, ...) are no PCM format and
    are refused rather than guessed."""
    if samples.is_floating_point():
        return samples.to(torch.float32)
    if samples.dtype not in PCM_DTYPES:
        raise TypeError(
            f"Audio samples of dtype {samples.dtype} are neither float nor integer PCM (int8, int16, int32, uint8): "
            "convert them to float32 in [-1, 1]."
        )
    info = torch.iinfo(samples.dtype)
    scale = float(2 ** (info.bits - 1))
    offset = 0.0 if info.min < 0 else scale
    return (samples.to(torch.float64) - offset).div_(scale).to(torch.float32)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """A torch view of `array`, or of a copy when it is read-only or not in the machine's byte order (`datasets` and
    `np.frombuffer` give read-only arrays, WAV headers parsed by hand big-endian ones; torch takes neither)."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def to_float32(samples: Any) -> np.ndarray:
    """float32 numpy samples of an array, tensor or list of amplitudes (integer PCM scaled, see [`scale_pcm`])."""
    if isinstance(samples, torch.Tensor):
        if samples.device.type == "meta":
            raise ValueError("The audio is a tensor on the 'meta' device, which holds no samples.")
        return scale_pcm(samples.detach()).cpu().numpy()
    array = np.asarray(samples)
    if isinstance(samples, (list, tuple)):
        # A list carries no sample format: its numbers are amplitudes, so integers beyond +-1 (PCM values such as
        # `int16_array.tolist()`) would be read 32768 times too loud. Only a numpy/torch integer dtype says PCM.
        if np.issubdtype(array.dtype, np.integer) and array.size and np.abs(array).max() > 1:
            raise ValueError(
                "The audio is a list of integers beyond [-1, 1]: pass integer PCM as a numpy array of its dtype "
                "(e.g. np.int16, scaled by its full scale), or floats in [-1, 1]."
            )
        array = array.astype(np.float32)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"Audio must be numeric samples, got dtype {array.dtype}.")
    return scale_pcm(to_tensor(np.ascontiguousarray(array))).numpy()


def to_mono(waveform: np.ndarray) -> np.ndarray:
    """A 1-D waveform, or the mean over the channel axis (the shorter one) of a 2-D one."""
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim == 2 and 0 in waveform.shape:
        return waveform.reshape(-1)  # no samples (a header-only file): empty, refused by check_waveform
    if waveform.ndim != 2:
        raise ValueError(f"Audio must be 1-D (samples) or 2-D (channels and samples), got shape {waveform.shape}.")
    channels_axis = int(np.argmin(waveform.shape))
    if waveform.shape[channels_axis] > MAX_CHANNELS:
        raise ValueError(
            f"Audio of shape {waveform.shape} has no channel axis of at most {MAX_CHANNELS}: pass one clip at a time "
            "(a list of clips for a batch)."
        )
    return waveform.mean(axis=channels_axis, dtype=np.float32)


def check_waveform(waveform: np.ndarray, name: str = "The audio") -> np.ndarray:
    """Raise a `ValueError` starting with `name` unless `waveform` is 1-D, not empty and finite; return it."""
    if waveform.ndim != 1:
        raise ValueError(
            f"{name} has shape {waveform.shape}: BYOL-A takes mono audio, one 1-D waveform per example. Mix "
            "multi-channel audio down first, e.g. `waveform.mean(axis=0)` for (channels, samples), or load it with "
            "`datasets.Audio(mono=True)`."
        )
    if waveform.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples).")
    if not np.isfinite(waveform).all():
        raise ValueError(f"{name} contains NaN or infinite samples; clean the audio first.")
    return waveform


def check_clip_lengths(waveforms: list[np.ndarray], items: list, minimum: int) -> None:
    """A `ValueError` naming the file (`items[i]["path"]`, `datasets` audio) of the first clip shorter than `minimum`
    samples, one frame of the log-mel or of the model's output (empty ones included)."""
    for waveform, item in zip(waveforms, items):
        path = item.get("path") if isinstance(item, dict) else None
        if waveform.ndim != 1:  # a (channels, samples) clip of datasets.Audio(mono=False): its len is its channels
            check_waveform(waveform, display_path(path) if path else "A clip")
        if len(waveform) < minimum:
            raise ValueError(
                f"{display_path(path) if path else 'A clip'} has {len(waveform)} samples, fewer than the {minimum} "
                "one frame needs: remove it from the data (or pad it) and run again."
            )


def unit_samples(unit_seconds: float | None, sampling_rate: int, minimum: int) -> int | None:
    """`--unit_seconds` (EVAR's `unit_sec`) in samples, rounded (EVAR truncates: docs/evar_tasks.md), or `None` when
    not given; a `ValueError` unless it is a positive number of seconds of at least `minimum` samples (one output
    frame of the model: every clip cut to less would be refused, one by one)."""
    if unit_seconds is None:
        return None
    if not (math.isfinite(unit_seconds) and unit_seconds > 0):
        raise ValueError(f"--unit_seconds must be a positive number of seconds, got {unit_seconds!r}.")
    unit = round(unit_seconds * sampling_rate)
    if unit < minimum:
        raise ValueError(
            f"--unit_seconds {unit_seconds:g} is shorter than one output frame of the model: give at least "
            f"{minimum / sampling_rate:g} s ({minimum} samples)."
        )
    return unit


def cut_or_pad(waveform: np.ndarray, samples: int) -> np.ndarray:
    """The first `samples` samples of `waveform`, zero-padded at the end where it is shorter (EVAR's `unit_sec`)."""
    return np.pad(waveform[:samples], (0, max(0, samples - len(waveform))))


def pad_waveforms(waveforms: Sequence[np.ndarray], value: float = 0.0) -> torch.Tensor:
    """1-D `waveforms` as one `(batch, longest)` float32 tensor, each right-padded with `value`."""
    batch = np.full((len(waveforms), max(len(waveform) for waveform in waveforms)), value, dtype=np.float32)
    for row, waveform in zip(batch, waveforms):
        row[: len(waveform)] = waveform
    return torch.from_numpy(batch)


def check_finite_batch(waveforms: torch.Tensor) -> None:
    """A `ValueError` when a `(batch, samples)` tensor holds NaN or infinity: one float64 sum, which is non-finite
    exactly when a sample is, read back once."""
    if not math.isfinite(float(waveforms.sum(dtype=torch.float64))):
        raise ValueError("The waveforms contain NaN or infinite samples; clean the audio first.")


def display_path(path: Any) -> str:
    """A path as a user can read it in a message, whatever its bytes (non-UTF-8 names are shown escaped)."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def read_audio_file(source: Any, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a file (a path, or a file object with `name` for messages) with soundfile: `(samples, rate)`, the samples
    mono float32 (channels averaged). Unreadable, empty (header-only) and non-finite files are errors naming it."""
    soundfile = require_extra("soundfile", "audio")
    name = display_path(source) if name is None else name
    if isinstance(source, (str, bytes, os.PathLike)) and not Path(os.fsdecode(source)).is_file():
        raise ValueError(f"No audio file at {name}: check the path.")
    try:
        with soundfile.SoundFile(source) as file:
            check_complete(file.extra_info, name)
            data, rate = file.read(dtype="float32", always_2d=True), file.samplerate
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        if isinstance(error, TruncatedAudioError):
            raise
        message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        # soundfile names a file object by its repr ("Error opening <_io.BytesIO object at 0x...>: "): `name` says it
        message = _OPENING_OBJECT.sub("", message)
        raise ValueError(
            f"Could not read audio from {name}: {display_path(message).rstrip('.')}. Use a format libsndfile reads "
            f"({', '.join(AUDIO_EXTENSIONS)}), or decode it yourself and pass the samples with their sampling_rate."
        ) from None
    return check_waveform(to_mono(data.T), name), int(rate)


_OPENING_OBJECT = re.compile(r"^Error opening <[^>]*>: ")


class TruncatedAudioError(ValueError):
    """A file whose header promises more audio than it holds."""


# libsndfile's log of a file whose data chunk is larger than the file ("data : 32000 (should be 15978)"). A size of
# 0, or one of 2 GiB and more, is how streamed WAVs (written to a pipe) leave the size open: espeak-ng --stdout and
# sox write 0x7FFFF000, others 0xFFFFFFFF. Not truncation (only a file of 2 GiB or more cut short goes unnoticed).
_DATA_SIZE_LOG = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_OPEN_SIZE = 0x7FFF0000


def check_complete(log: str, name: str) -> None:
    """Raise [`TruncatedAudioError`] when libsndfile's header log (`SoundFile.extra_info`) says the data chunk is
    larger than what the file holds: libsndfile reads the surviving prefix without an error."""
    declared, present = map(int, match.groups()) if (match := _DATA_SIZE_LOG.search(log)) else (0, 0)
    if 0 < declared < _OPEN_SIZE and declared > present:
        raise TruncatedAudioError(
            f"{name} is truncated: its header declares {declared} bytes of audio and the file holds {present} "
            "(an interrupted copy or download?); restore the file or remove it from the data."
        )


def is_decoded_audio(item: Any) -> bool:
    """Whether `item` is audio as `datasets` decodes it (a dict with `array`, or a torchcodec decoder)."""
    return (isinstance(item, dict) and "array" in item) or hasattr(item, "get_all_samples")


def decode_datasets_audio(item: Any) -> tuple[np.ndarray, int | None]:
    """Samples and rate of `datasets` audio: a `{"array", "sampling_rate"}` dict (datasets<4) or a torchcodec
    `AudioDecoder` (datasets>=4, samples of shape (channels, samples))."""
    if isinstance(item, dict):
        rate = item.get("sampling_rate")
        return to_float32(item["array"]), None if rate is None else check_sampling_rate(rate)
    samples = item.get_all_samples()
    data = to_float32(samples.data)
    if data.ndim == 2 and data.shape[0] == 1:
        data = data[0]
    return data, check_sampling_rate(int(samples.sample_rate))


def decode_undecoded_audio(item: dict, sampling_rate: int) -> np.ndarray:
    """An undecoded `datasets` audio item (`{"path", "bytes"}`, as `Audio(decode=False)` gives it) as a checked mono
    float32 waveform at `sampling_rate`; unreadable, empty and non-finite audio are `ValueError`s naming the file.
    Commands decode this way (in DataLoader workers) so that a bad file is reported by its path."""
    path = item.get("path")
    if item.get("bytes"):
        name = display_path(path) if path else "audio bytes"
        waveform, rate = read_audio_file(io.BytesIO(item["bytes"]), name)
    elif path:
        waveform, rate = read_audio_file(path)
    else:
        raise ValueError("An example has neither a file path nor audio bytes.")
    return resample(waveform, rate, check_sampling_rate(sampling_rate))


def batch_waveforms(raw_speech: Any) -> tuple[list[np.ndarray], int | None]:
    """Every input form the feature extractor takes as a list of float32 numpy waveforms (not yet checked), and the
    sampling rate the inputs carry (`datasets` audio) or `None`."""
    if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
        array = to_float32(raw_speech)
        if array.ndim > 2:
            raise ValueError(
                f"Got an array of shape {tuple(array.shape)}: pass one mono waveform (samples,) or a batch "
                "(batch, samples); mix multi-channel audio down to mono first."
            )
        if array.ndim == 2 and array.shape[0] == 0:
            raise ValueError(f"Got an empty batch of shape {array.shape}: pass at least one waveform.")
        return (list(array) if array.ndim == 2 else [array]), None
    if is_decoded_audio(raw_speech):
        array, rate = decode_datasets_audio(raw_speech)
        return [array], rate
    if not isinstance(raw_speech, (list, tuple)):
        raise TypeError(
            f"Unsupported audio input of type {type(raw_speech).__name__}: pass a 1-D numpy array, torch tensor or "
            "list of floats, a list of those, or audio decoded by `datasets`."
        )
    if len(raw_speech) == 0:
        raise ValueError("Got an empty batch: pass at least one waveform.")
    if isinstance(raw_speech[0], (int, float, np.floating, np.integer)):
        return [to_float32(raw_speech)], None
    waveforms, rates = [], set()
    for item in raw_speech:
        if is_decoded_audio(item):
            array, rate = decode_datasets_audio(item)
            rates.add(rate)
        elif isinstance(item, (np.ndarray, torch.Tensor, list, tuple)):
            array = to_float32(item)
        else:
            raise TypeError(
                f"Unsupported audio element of type {type(item).__name__}: each example must be a 1-D numpy array, "
                "torch tensor or list of floats, or audio decoded by `datasets`."
            )
        waveforms.append(array)
    if len(rates) > 1:
        raise ValueError(f"The batch mixes sampling rates {sorted(rates)}; resample every example to one rate.")
    return waveforms, rates.pop() if rates else None


def load_audio(inputs: Any, sampling_rate: int, input_rate: int | None = None) -> np.ndarray:
    """
    Any accepted audio input (see the module doc) as a checked mono float32 waveform at `sampling_rate`.

    Args:
        inputs: a path, bytes, an array/tensor/list, or a `{"raw"|"array", "sampling_rate"}` dict.
        sampling_rate: the rate to return (the feature extractor's).
        input_rate: the rate of a bare array; when `None` it is taken as `sampling_rate`.

    Raises:
        ValueError: unreadable file or bytes (naming the file), an empty or non-finite waveform, a rate that is not
            a positive integer, more than 2 axes.
        TypeError: an input of no accepted kind.
    """
    sampling_rate = check_sampling_rate(sampling_rate)
    name = "The audio"
    if isinstance(inputs, (str, os.PathLike)):
        name = display_path(inputs)
        waveform, rate = read_audio_file(inputs)
    elif isinstance(inputs, (bytes, bytearray)):
        name = f"the given bytes ({len(inputs)} bytes)"
        waveform, rate = read_audio_file(io.BytesIO(inputs), name)
    elif isinstance(inputs, dict):
        key = "raw" if "raw" in inputs else "array" if "array" in inputs else None
        if key is None or "sampling_rate" not in inputs:
            raise ValueError(
                "An audio dict needs the samples under 'raw' or 'array' and their 'sampling_rate', e.g. "
                f"{{'array': waveform, 'sampling_rate': 16000}}; got the keys {sorted(inputs)}."
            )
        waveform, rate = to_float32(inputs[key]), check_sampling_rate(inputs["sampling_rate"])
    elif isinstance(inputs, (np.ndarray, torch.Tensor, list, tuple)):
        waveform = to_float32(inputs)
        if input_rate is None:
            logger.warning_once(
                f"An audio array was given without its rate: it is taken as {sampling_rate} Hz. Pass "
                "`sampling_rate=` (or a {'array', 'sampling_rate'} dict) if it is not."
            )
        rate = sampling_rate if input_rate is None else check_sampling_rate(input_rate)
    else:
        raise TypeError(
            f"Unsupported audio input of type {type(inputs).__name__}: pass a file path, bytes, a numpy array or "
            "torch tensor, or a {'array': ..., 'sampling_rate': ...} dict."
        )
    waveform = check_waveform(to_mono(waveform), name)
    return resample(waveform, rate, sampling_rate)


def resample(waveform: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """`waveform` at `target_rate` (librosa's default resampler, as `datasets.Audio` uses), float32."""
    if rate == target_rate:
        return waveform
    librosa = require_extra("librosa", "audio")
    return librosa.resample(waveform, orig_sr=rate, target_sr=target_rate).astype(np.float32)


def lengths_list(lengths: Sequence[int] | torch.Tensor) -> list[int]:
    """Valid lengths as a list of `int` (a tensor is read back once)."""
    return [int(length) for length in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]

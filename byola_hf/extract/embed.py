"""Decoding in DataLoader workers, the log-mel and the model batched on the device.

Each worker decodes and resamples clips (soundfile + librosa through `byola_hf.audio`) and pads a batch of them into
one `(batch, samples)` tensor; the main process moves the batch to the device, computes its log-mel and runs the
model there. The DataLoader keeps `2 * num_workers` batches decoded ahead, so decoding overlaps the model.
"""

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..audio import cut_or_pad, decode_undecoded_audio, display_path, pad_waveforms
from ..configuration_byola import BYOLAConfig
from ..feature_extraction_byola import BYOLAFeatureExtractor, NonFiniteFeaturesError
from ..modeling_byola import BYOLAModel
from ..tools.cli import die_with_parent


@dataclass
class Clip:
    """One decoded example: its row `index`, `path`, `duration` (seconds, as decoded) and the waveform (padded as
    the run asks), or the `error` that made it unusable."""

    index: int
    path: str
    duration: float
    waveform: np.ndarray | None
    error: str | None


@dataclass
class ClipBatch:
    """Decoded clips padded together: `waveforms` `(good, samples)` float32 and `lengths` of the good clips only."""

    clips: list[Clip]
    waveforms: torch.Tensor | None
    lengths: list[int]

    def pin_memory(self) -> "ClipBatch":
        """Called by the DataLoader with `pin_memory=True`, so the copy to a GPU is asynchronous."""
        if self.waveforms is not None:
            self.waveforms = self.waveforms.pin_memory()
        return self


class AudioClips(torch.utils.data.Dataset):
    """
    The clips of a dataset's undecoded audio column, decoded on access.

    Args:
        dataset: a `datasets.Dataset` whose `audio_column_name` is `Audio(decode=False)`.
        sampling_rate: the model's rate.
        min_samples: shorter clips are zero-padded to this length (the zeros count as audio, so they get an
            embedding).
        unit_samples: when given, every clip is cut or zero-padded to exactly this length (EVAR's `unit_sec`).
    """

    def __init__(self, dataset, audio_column_name: str, sampling_rate: int, min_samples: int, unit_samples=None):
        self.audio = dataset.select_columns([audio_column_name])
        self.audio_column_name = audio_column_name
        self.sampling_rate = sampling_rate
        self.min_samples = min_samples
        self.unit_samples = unit_samples

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, index: int) -> Clip:
        item = self.audio[int(index)][self.audio_column_name]
        path = display_path(item.get("path") or f"example {index}")
        try:
            waveform = decode_undecoded_audio(item, self.sampling_rate)
        except ValueError as error:
            return Clip(int(index), path, 0.0, None, str(error).splitlines()[0][:300])
        duration = len(waveform) / self.sampling_rate
        if self.unit_samples is not None:
            waveform = cut_or_pad(waveform, self.unit_samples)
        elif len(waveform) < self.min_samples:
            waveform = np.pad(waveform, (0, self.min_samples - len(waveform)))
        return Clip(int(index), path, duration, waveform, None)


def collate_clips(clips: list[Clip], padding_value: float = 0.0) -> ClipBatch:
    """Pad the good clips of a batch into one tensor (in the worker, so the main process only runs the model)."""
    good = [clip.waveform for clip in clips if clip.waveform is not None]
    if not good:
        return ClipBatch(clips, None, [])
    return ClipBatch(clips, pad_waveforms(good, padding_value), [len(waveform) for waveform in good])


def init_worker(worker_id: int) -> None:
    """DataLoader worker setup: die with the command (no orphans after `kill -9`), one torch thread each (the
    workers are the parallelism)."""
    die_with_parent()
    torch.set_num_threads(1)


def clip_loader(
    clips: AudioClips, batches: Iterable[Sequence[int]], num_workers: int, padding_value: float, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """A DataLoader decoding `batches` (lists of row indices) of `clips` in order, in `num_workers` processes."""
    return torch.utils.data.DataLoader(
        clips,
        batch_sampler=list(batches),
        num_workers=num_workers,
        collate_fn=functools.partial(collate_clips, padding_value=padding_value),
        worker_init_fn=init_worker if num_workers > 0 else None,
        pin_memory=pin_memory,
    )


def layer_widths(config: BYOLAConfig) -> list[int]:
    """Each hidden state's own width: the conv blocks (flattened), the two fully connected layers, and for v2 the
    concatenated output (`feature_d`). The last is `last_hidden_state`'s, `feature_d`."""
    widths = [*config.conv_hidden_sizes, *config.mlp_sizes]
    if config.concat_conv_features:
        widths.append(config.feature_d)
    return widths


@torch.no_grad()
def embed_clip_batch(
    model: BYOLAModel,
    feature_extractor: BYOLAFeatureExtractor,
    batch: ClipBatch,
    layers: list[int] | None,
    device: torch.device,
) -> list[dict]:
    """One output row per clip of `batch`: `path`, `error`, `duration` (seconds), `embedding` (`(feature_d,)`) and,
    with `layers`, `timestamps` (ms) and `frames_<layer>` (`(frames, width)`, each layer at its own width). Bad clips
    get `None` features and their error. The model must be in eval mode: in training mode BatchNorm normalises with
    each batch's own statistics, so a clip's embedding would depend on the clips beside it."""
    if model.training:
        raise ValueError("embed_clip_batch needs the model in eval mode: call model.eval() first.")
    rows = [_empty_row(clip, layers) for clip in batch.clips]
    if batch.waveforms is None:
        return rows
    waveforms = batch.waveforms.to(device, non_blocking=True)
    try:
        input_features, attention_mask = feature_extractor.log_mel_batch(waveforms, batch.lengths)
    except NonFiniteFeaturesError as error:  # finite samples too loud for float32 power: a bad clip like the others
        return embed_clip_batch(model, feature_extractor, without_clip(batch, error), layers, device)
    last = model.config.num_hidden_layers - 1
    hidden = layers is not None and any(layer != last for layer in layers)
    outputs = model(input_features=input_features, attention_mask=attention_mask, output_hidden_states=hidden)
    pooled = outputs.pooler_output.float().cpu().numpy()
    states = {}
    if layers is not None:
        widths = layer_widths(model.config)
        for layer in layers:
            state = outputs.last_hidden_state if layer == last else outputs.hidden_states[layer][..., : widths[layer]]
            states[layer] = state.float().cpu().numpy()
    frames = outputs.attention_mask.sum(-1).tolist()
    good = [row for row in rows if row["error"] is None]
    for position, row in enumerate(good):
        row["embedding"] = pooled[position]
        if layers is not None:
            row["timestamps"] = np.asarray(model.config.frame_centers_ms(frames[position]), np.float32)
            for layer in layers:
                row[f"frames_{layer}"] = states[layer][position, : frames[position]]
    return rows


def without_clip(batch: ClipBatch, error: NonFiniteFeaturesError) -> ClipBatch:
    """`batch` with its good clip number `error.index` (a row of `waveforms`) made a bad clip whose error names its
    file, so that `--skip_bad` leaves it out and a run without it stops naming it."""
    good = [clip for clip in batch.clips if clip.waveform is not None]
    bad = good[error.index]
    message = str(NonFiniteFeaturesError(error.index, error.peak, bad.path))
    clips = [replace(clip, waveform=None, error=message) if clip is bad else clip for clip in batch.clips]
    keep = [row for row in range(len(good)) if row != error.index]
    lengths = [batch.lengths[row] for row in keep]
    # Padded to the longest clip kept, as collate_clips pads a batch: the same tensor as without the bad clip.
    return ClipBatch(clips, batch.waveforms[keep, : max(lengths)] if keep else None, lengths)


def _empty_row(clip: Clip, layers: list[int] | None) -> dict:
    row = {"path": clip.path, "error": clip.error, "duration": clip.duration, "embedding": None}
    if layers is not None:
        row["timestamps"] = None
        row.update({f"frames_{layer}": None for layer in layers})
    return row

"""EVAR's fine-tuning augmentations, batched on the training device.

Each block is a pure function of a batch and of explicit draws, with a sampler that makes the draws from a
`torch.Generator` (the caller's: `byola-finetune` seeds one per training step, so a resumed run draws what the
uninterrupted run drew):

| block | function | draws | sampler |
|---|---|---|---|
| random crop / zero padding of clips to the unit length | [`crop_or_pad`] | starts | [`sample_clip_starts`] |
| mixup of inputs and labels | [`mixup`] | lambdas, permutation | [`sample_mixup`] |
| frequency and time masks (SpecAugment) | [`mask_along_axis`] | starts, widths | [`sample_masks`] |
| random resize crop | `random_resize_crop` (pre-training's) | boxes | `sample_crop_boxes` |

EVAR (`finetune.py`) mixes the waveforms of a batch and their one-hot labels, then, after the log-mel is normalised,
applies torchaudio's `FrequencyMasking(30)` and `TimeMasking(100)` and BYOL-A's random resize crop. The masks follow
torchaudio's rule (`mask_along_axis`, `iid_masks=False`): one mask per call, its width `floor(v)` with
`v ~ U(0, param)` and its start `floor(v0)` with `v0 ~ U(0, size - v)`, in float32. Here every example gets a call of
its own (its own mask and crop box); EVAR calls the transforms on the whole `(batch, F, T)` tensor, which gives the
whole batch one mask and one crop box (see docs/finetuning.md).
"""

from dataclasses import dataclass

import torch

from ..pretraining.augmentations import random_resize_crop, sample_crop_boxes


def crop_or_pad(waveforms: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor, unit: int) -> torch.Tensor:
    """
    Each clip's `unit` samples from its start: `out[b, t] = waveforms[b, starts[b] + t]` where that is inside the clip
    (`starts[b] + t < lengths[b]`), else 0 (EVAR zero-pads short clips at the end).

    Args:
        waveforms (`torch.Tensor` of shape `(batch, samples)`): right-padded clips.
        lengths (`torch.LongTensor` of shape `(batch,)`): each clip's samples.
        starts (`torch.LongTensor` of shape `(batch,)`): where each kept part starts.
        unit: the samples kept.

    Returns:
        `torch.Tensor` of shape `(batch, unit)`.
    """
    lengths, starts = lengths.to(waveforms.device), starts.to(waveforms.device)
    index = starts[:, None] + torch.arange(unit, device=waveforms.device)[None, :]
    inside = index < lengths[:, None]
    gathered = waveforms.gather(1, index.clamp(max=waveforms.shape[1] - 1))
    return torch.where(inside, gathered, torch.zeros_like(gathered))


def sample_clip_starts(lengths: torch.Tensor, unit: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """EVAR's random crop of a training clip: a start uniform in `0 .. length - unit - 1` (numpy's `randint(length -
    unit)`) for clips longer than `unit`, else 0. `(batch,)` lengths -> `(batch,)` starts."""
    u = torch.rand(lengths.shape, generator=generator, dtype=torch.float64, device=lengths.device)
    spare = (lengths - unit).clamp(min=0)
    return (u * spare).long()


def mixup(
    inputs: torch.Tensor, labels: torch.Tensor, lambdas: torch.Tensor, permutation: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    EVAR's mixup: each example `lambda_b x_b + (1 - lambda_b) x_perm[b]`, for the inputs and the (one-hot or
    multi-hot) labels alike.

    Args:
        inputs (`torch.Tensor` of shape `(batch, ...)`): waveforms or features.
        labels (`torch.Tensor` of shape `(batch, classes)`): one-hot or multi-hot rows (floats).
        lambdas (`torch.Tensor` of shape `(batch,)`): each example's own share.
        permutation (`torch.LongTensor` of shape `(batch,)`): the partner of each example.
    """
    permutation = permutation.to(inputs.device)

    def mix(values: torch.Tensor) -> torch.Tensor:
        share = lambdas.to(device=values.device, dtype=values.dtype).reshape(-1, *([1] * (values.ndim - 1)))
        return values * share + values[permutation] * (1.0 - share)

    return mix(inputs), mix(labels)


def sample_mixup(
    batch: int, alpha: float, generator: torch.Generator | None = None, device=None
) -> tuple[torch.Tensor, torch.LongTensor]:
    """`(lambdas, permutation)`: `batch` lambdas ~ Beta(alpha, alpha) (as `G1 / (G1 + G2)` of two Gamma(alpha, 1)
    draws, torch having no Beta sampler that takes a generator) in float64, and a uniform permutation."""
    shape = torch.full((2, batch), float(alpha), dtype=torch.float64, device=device)
    gammas = torch._standard_gamma(shape, generator=generator)
    lambdas = gammas[0] / (gammas[0] + gammas[1])
    return lambdas, torch.randperm(batch, generator=generator, device=device)


def mask_along_axis(
    x: torch.Tensor, starts: torch.Tensor, widths: torch.Tensor, axis: int, value: float = 0.0
) -> torch.Tensor:
    """Per example, `value` on the positions `starts[b] <= p < starts[b] + widths[b]` of `axis` (-2: frequency, -1:
    time) of `x (batch, ..., F, T)`; the rest unchanged."""
    if axis not in (-2, -1):
        raise ValueError(f"axis must be -2 (frequency) or -1 (time), got {axis}.")
    positions = torch.arange(x.shape[axis], device=x.device)
    starts, widths = starts.to(x.device), widths.to(x.device)
    masked = (positions[None, :] >= starts[:, None]) & (positions[None, :] < (starts + widths)[:, None])
    masked = masked.reshape(x.shape[0], *([1] * (x.ndim - 3)), *((-1, 1) if axis == -2 else (1, -1)))
    return x.masked_fill(masked, value)


def mask_bounds(u_width: torch.Tensor, u_start: torch.Tensor, size: int, param: int) -> tuple[torch.Tensor, ...]:
    """torchaudio's mask from two uniforms in float32: `v = u_width * param`, `v0 = u_start * (size - v)`,
    start `v0.long()`, width `v.long()` (the end is `v0.long() + v.long()`); no mask when `param < 1`."""
    value = u_width.float() * param
    start = u_start.float() * (size - value)
    if param < 1:
        return torch.zeros_like(start, dtype=torch.long), torch.zeros_like(value, dtype=torch.long)
    return start.long(), value.long()


def sample_masks(
    batch: int, size: int, param: int, generator: torch.Generator | None = None, device=None
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """`(starts, widths)` of one mask per example along an axis of `size` positions, drawn as torchaudio draws them
    (see [`mask_bounds`])."""
    u = torch.rand(2, batch, generator=generator, dtype=torch.float32, device=device)
    return mask_bounds(u[0], u[1], size, param)


@dataclass
class AugmentDraws:
    """The draws of one training batch for [`FinetuneAugmentation`]; a block that is off has `None`."""

    frequency: tuple[torch.Tensor, torch.Tensor] | None
    time: tuple[torch.Tensor, torch.Tensor] | None
    boxes: torch.Tensor | None


@dataclass
class FinetuneAugmentation:
    """
    The log-mel blocks EVAR applies during fine-tuning, in its order: frequency mask, time mask, random resize crop.

    Args:
        freq_mask: torchaudio's `FrequencyMasking` parameter (0: off).
        time_mask: torchaudio's `TimeMasking` parameter (0: off).
        resize_crop: BYOL-A's random resize crop on or off.
    """

    freq_mask: int = 30
    time_mask: int = 100
    resize_crop: bool = True

    def sample(self, batch: int, frequency: int, time: int, generator: torch.Generator | None = None, device=None):
        """The [`AugmentDraws`] of a batch of `(frequency, time)` log-mels."""
        return AugmentDraws(
            sample_masks(batch, frequency, self.freq_mask, generator, device) if self.freq_mask > 0 else None,
            sample_masks(batch, time, self.time_mask, generator, device) if self.time_mask > 0 else None,
            sample_crop_boxes(batch, frequency, time, generator, device) if self.resize_crop else None,
        )

    def __call__(self, x: torch.Tensor, draws: AugmentDraws) -> torch.Tensor:
        """`x (batch, F, T)`, normalised log-mels (0 is the mean, the masks' and the crop canvas' value) ->
        augmented `(batch, F, T)`."""
        if draws.frequency is not None:
            x = mask_along_axis(x, *draws.frequency, axis=-2)
        if draws.time is not None:
            x = mask_along_axis(x, *draws.time, axis=-1)
        if draws.boxes is not None:
            x = random_resize_crop(x[:, None], draws.boxes)[:, 0]
        return x

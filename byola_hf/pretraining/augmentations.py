"""BYOL-A's augmentation blocks, batched on the training device.

The original applies its blocks to one log-mel at a time in Python (`MixupBYOLA`, `RandomResizeCrop`,
`RandomLinearFader`, then `NormalizeBatch` over the batch of both views). Here each block is a pure function of a
batch and of explicit random draws, so the same draws give the original's numbers, and each has a sampler that draws
from the original's distributions on the batch's device:

| block | function | draws | sampler |
|---|---|---|---|
| random resize crop | [`random_resize_crop`] | boxes `(i, j, h, w)` | [`sample_crop_boxes`] |
| log-mixup-exp | [`log_mixup_exp`] | background, alpha | [`MixupMemoryBank`] |
| linear fader (v2) | [`linear_fade`] | ends `(head, tail)` | [`sample_fader_ends`] |
| batch normalisation | [`normalize_batch`] | none | none |

[`BYOLAAugmentation`] chains them into the two normalised views of a batch of pre-normalised log-mels.
"""

import torch
from torch import nn


# The original's resize crop: a zero canvas (1.0 x F, 1.5 x T) around the input, crops of 0.6-1.5 x F and x T.
VIRTUAL_CROP_SCALE = (1.0, 1.5)
FREQ_SCALE = (0.6, 1.5)
TIME_SCALE = (0.6, 1.5)
# PyTorch's bicubic kernel (Keys' cubic convolution with a = -0.75), which the original's F.interpolate uses.
CUBIC_A = -0.75


def canvas_size(frequency: int, time: int) -> tuple[int, int]:
    """The original's virtual crop canvas `(int(F * 1.0), int(T * 1.5))` for inputs of `(F, T)`."""
    return int(frequency * VIRTUAL_CROP_SCALE[0]), int(time * VIRTUAL_CROP_SCALE[1])


def cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Weights `(..., 4)` of the taps at offsets -1, 0, 1, 2 around a source position `floor + t`, `t` in [0, 1)."""
    a = CUBIC_A

    def near(s: torch.Tensor) -> torch.Tensor:  # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s: torch.Tensor) -> torch.Tensor:  # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


def resize_matrices(
    starts: torch.Tensor, sizes: torch.Tensor, offset: int, input_size: int, output_size: int
) -> torch.Tensor:
    """Per example, the `(output_size, input_size)` matrix that maps the input axis to the bicubic resize
    (align_corners) of the canvas segment `[starts, starts + sizes)` to `output_size` points, the input sitting at
    `offset` on the canvas (zeros elsewhere). Taps are clamped to the segment's own ends, as interpolating the crop
    alone does. Shapes: `starts`, `sizes` `(batch,)` -> `(batch, output_size, input_size)` in float32."""
    device = starts.device
    positions = torch.arange(output_size, device=device, dtype=torch.float64)
    scale = (sizes.double() - 1) / max(output_size - 1, 1)
    source = scale[:, None] * positions[None, :]  # (batch, output)
    floor = source.floor()
    weights = cubic_weights(source - floor)  # (batch, output, 4)
    taps = floor.long()[..., None] + torch.arange(-1, 3, device=device)
    taps = torch.minimum(taps.clamp(min=0), (sizes - 1)[:, None, None])
    columns = starts[:, None, None] + taps - offset  # input index of each tap
    inside = (columns >= 0) & (columns < input_size)
    # Taps on the zero canvas add nothing: send them to a spare column that is dropped.
    columns = torch.where(inside, columns, torch.full_like(columns, input_size))
    matrix = torch.zeros(*columns.shape[:2], input_size + 1, dtype=torch.float64, device=device)
    matrix.scatter_add_(2, columns, weights)
    return matrix[..., :input_size].float()


def random_resize_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """
    The original `RandomResizeCrop` with given boxes: each input `(1, F, T)` centred on a zero canvas of
    [`canvas_size`], the crop `canvas[i:i+h, j:j+w]` resized back to `(F, T)` with bicubic interpolation
    (align_corners=True) of the crop alone.

    Args:
        x (`torch.Tensor` of shape `(batch, 1, F, T)`): log-mels.
        boxes (`torch.LongTensor` of shape `(batch, 4)`): `(i, j, h, w)` on the canvas.

    Returns:
        `torch.Tensor` of shape `(batch, 1, F, T)`.
    """
    _, _, frequency, time = x.shape
    canvas_h, canvas_w = canvas_size(frequency, time)
    boxes = boxes.to(device=x.device, dtype=torch.long)
    rows = resize_matrices(boxes[:, 0], boxes[:, 2], (canvas_h - frequency) // 2, frequency, frequency)
    columns = resize_matrices(boxes[:, 1], boxes[:, 3], (canvas_w - time) // 2, time, time)
    resized = rows.to(x.dtype) @ x[:, 0] @ columns.to(x.dtype).transpose(1, 2)
    return resized[:, None]


def sample_crop_boxes(
    batch: int, frequency: int, time: int, generator: torch.Generator | None = None, device=None
) -> torch.LongTensor:
    """Boxes `(batch, 4)` = `(i, j, h, w)` drawn as the original: `h = clip(int(U(0.6, 1.5) F), 1, canvas_h)`, `w =
    clip(int(U(0.6, 1.5) T), 1, canvas_w)`, `i` uniform in `0..canvas_h - h` and `j` in `0..canvas_w - w`."""
    canvas_h, canvas_w = canvas_size(frequency, time)
    u = torch.rand(batch, 4, generator=generator, device=device, dtype=torch.float64)
    h = (FREQ_SCALE[0] + (FREQ_SCALE[1] - FREQ_SCALE[0]) * u[:, 0]).mul(frequency).long().clamp(1, canvas_h)
    w = (TIME_SCALE[0] + (TIME_SCALE[1] - TIME_SCALE[0]) * u[:, 1]).mul(time).long().clamp(1, canvas_w)
    i = (u[:, 2] * (canvas_h - h + 1)).long()
    j = (u[:, 3] * (canvas_w - w + 1)).long()
    return torch.stack([i, j, h, w], dim=1)


def log_mixup_exp(x: torch.Tensor, background: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """`log((1 - alpha) exp(x) + alpha exp(background) + eps)` (eps: the dtype's machine epsilon), the original's
    log-mixup-exp with `alpha` the background's share. `alpha` is a number or `(batch,)` for inputs `(batch, ...)`."""
    alpha = torch.as_tensor(alpha, device=x.device, dtype=torch.float64)
    alpha = alpha.reshape(-1, *([1] * (x.ndim - 1))) if alpha.ndim else alpha
    mixed = (1.0 - alpha).to(x.dtype) * x.exp() + alpha.to(x.dtype) * background.exp()
    return torch.log(mixed + torch.finfo(x.dtype).eps)


def linear_fade(x: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """
    v2's `RandomLinearFader` with given ends: `x + linspace(head, tail, T)` per example.

    Args:
        x (`torch.Tensor` of shape `(batch, 1, F, T)`): log-mels.
        ends (`torch.Tensor` of shape `(batch, 2)`): `(head, tail)` gains in log scale.
    """
    time = x.shape[-1]
    ends = ends.to(device=x.device, dtype=x.dtype)
    head, tail = ends[:, :1], ends[:, 1:]
    # torch.linspace's own formula: from the head for the first half, from the tail for the second.
    step = (tail - head) / max(time - 1, 1)
    index = torch.arange(time, device=x.device)
    from_head = head + index.to(x.dtype) * step
    from_tail = tail - (time - 1 - index).to(x.dtype) * step
    slope = torch.where(index < time // 2, from_head, from_tail)
    return x + slope[:, None, None, :]


def sample_fader_ends(batch: int, gain: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Fader ends `(batch, 2)`, each `gain * U(-1, 1)` as the original draws them."""
    return gain * (2.0 * torch.rand(batch, 2, generator=generator, device=device, dtype=torch.float64) - 1.0)


def normalize_batch(x: torch.Tensor) -> torch.Tensor:
    """The original `NormalizeBatch`: `(x - mean) / std` over axes 0, 2, 3 of `(batch, 1, F, T)` (unbiased std,
    clamped to the dtype's epsilon)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp(torch.finfo(x.dtype).eps, torch.finfo(x.dtype).max)
    return (x - mean) / std


class MixupMemoryBank(nn.Module):
    """
    The original `MixupBYOLA` for a whole batch: each input, in order, is mixed by [`log_mixup_exp`] with a background
    drawn uniformly from a FIFO of the last `size` inputs before it, with `alpha = ratio * U(0, 1)`; the first input
    ever passes unchanged. The FIFO is a ring buffer (`bank`, and `pushed`, the number of inputs ever pushed), saved
    in the model's state, so checkpoints resume it.

    Args:
        ratio: the largest background share (0.4 for v1, 0.2 for v2).
        size: FIFO length (2048 in the original).
        shape: `(1, F, T)` of one input.
    """

    def __init__(self, ratio: float, size: int, shape: tuple[int, int, int]):
        super().__init__()
        self.ratio = ratio
        self.size = size
        self.register_buffer("bank", torch.zeros(size, *shape))
        self.register_buffer("pushed", torch.zeros((), dtype=torch.long))

    def sample(self, count: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws for `count` inputs: `alpha` `(count,)` and `pick` `(count,)`, the background's place among the
        entries the FIFO holds at that input's turn (0 the oldest; -1 when the FIFO is empty)."""
        device = self.bank.device
        u = torch.rand(count, 2, generator=generator, device=device, dtype=torch.float64)
        held = (self.pushed + torch.arange(count, device=device)).clamp(max=self.size)
        pick = torch.where(held > 0, (u[:, 1] * held).long(), torch.full_like(held, -1))
        return self.ratio * u[:, 0], pick

    def forward(
        self, x: torch.Tensor, alpha: torch.Tensor | None = None, pick: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mix each row of `x` `(count, 1, F, T)` (in the order the original would see them) with its background, then
        push every row. Draws from [`sample`] unless `alpha` and `pick` are given."""
        count = x.shape[0]
        if alpha is None or pick is None:
            alpha, pick = self.sample(count)
        alpha, pick = alpha.to(x.device), pick.to(device=x.device, dtype=torch.long)
        start = self.pushed
        turn = torch.arange(count, device=x.device)
        held = (start + turn).clamp(max=self.size)
        absolute = start + turn - held + pick.clamp(min=0)  # the background's push number
        from_batch = absolute >= start
        batch_index = (absolute - start).clamp(0, count - 1)
        background = torch.where(
            from_batch[:, None, None, None], x[batch_index], self.bank[absolute.remainder(self.size)]
        )
        mixed = log_mixup_exp(x, background, alpha)
        mixed = torch.where((pick >= 0)[:, None, None, None], mixed, x)
        self.push(x.detach())
        return mixed

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        """Append the rows of `x` to the FIFO (only the last `size` of them can stay)."""
        kept = x[-self.size :]
        first = self.pushed + x.shape[0] - kept.shape[0]
        slots = (first + torch.arange(kept.shape[0], device=x.device)).remainder(self.size)
        self.bank[slots] = kept.to(self.bank.dtype)
        self.pushed += x.shape[0]


class BYOLAAugmentation(nn.Module):
    """
    The original's two views of a batch, on its device: every pre-normalised log-mel goes twice through mixup (the
    memory bank sees the clip's two calls in turn, as the original's `AugmentationModule` makes them), the random
    resize crop and, for v2 (`fader_gain > 0`), the linear fader; the `2 * batch` views are then normalised together
    ([`normalize_batch`]) and split back.

    Args:
        mixup_ratio, memory_size: of [`MixupMemoryBank`].
        fader_gain: the fader's largest gain (1.0 for v2, 0 for none as in v1).
        shape: `(1, F, T)` of one input.
    """

    def __init__(self, mixup_ratio: float, memory_size: int, fader_gain: float, shape: tuple[int, int, int]):
        super().__init__()
        self.mixup = MixupMemoryBank(mixup_ratio, memory_size, shape)
        self.fader_gain = fader_gain

    @torch.no_grad()
    def forward(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(batch, 1, F, T)` pre-normalised log-mels -> two views `(batch, 1, F, T)`, normalised together."""
        batch, _, frequency, time = log_mel.shape
        calls = log_mel.float().repeat_interleave(2, dim=0)  # clip 0 view 1, clip 0 view 2, clip 1 view 1, ...
        views = self.mixup(calls)
        views = random_resize_crop(views, sample_crop_boxes(2 * batch, frequency, time, device=views.device))
        if self.fader_gain > 0:
            views = linear_fade(views, sample_fader_ends(2 * batch, self.fader_gain, device=views.device))
        views = normalize_batch(torch.cat([views[0::2], views[1::2]]))
        return views[:batch], views[batch:]

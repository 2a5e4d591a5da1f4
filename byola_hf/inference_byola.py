"""Device-specific kernels of the BYOL-A network, for inference ([`select_kernels`]) and for training
([`select_training_kernels`]); [`BYOLAModel`] and the pre-training learner choose through these two functions.

Inference. [`BYOLAModel`] computes its conv blocks and fully connected layers through one of these kernel sets. All of
them compute the same function as the plain modules (`Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d`, `ReLU(Linear)`):

- `"reference"`: the modules themselves. Used when autograd must flow outside training mode (and in training mode
  when nothing trains).
- `"cpu"`: BatchNorm folded into the conv, max-pooling before the ReLU (they commute), channels-last activations
  so oneDNN writes the widest activation once, the first block (one input channel) computed as four stride-2
  tap GEMMs over cache-sized time slices without its full-resolution output, and oneDNN's fused linear + ReLU.
- `"accelerator"`: few large kernels for GPUs and for `torch.compile`: BatchNorm folded into the conv, one cuDNN
  convolution per block in channels-last, max-pooling then an in-place ReLU, no Python loops over slices.

Training (a training-mode forward whose parameters train: fine-tuning, pre-training). A conv block is
`Conv2d(3x3) -> BatchNorm2d` on batch statistics `-> MaxPool2d(2) -> ReLU` (pooling before the ReLU: they commute).
Every kernel set computes that function, values, gradients and the BatchNorm running statistics; they differ in
float rounding only:

- `"reference"`: the modules in the original's contiguous layout. Its rounding is the original code's, which the
  three-step parity test with the original learner checks.
- `"channels_last"`: the modules on channels-last activations, which oneDNN and cuDNN normalise and pool
  vectorised over channels. The default off CPU.
- `"cpu"`: channels-last, and the first block (one input channel, the widest activation) as one fused step that
  never writes its full-resolution output, forward and backward ([`first_block`]). The default on CPU.
"""

import itertools

import torch
from torch import nn


# Outputs per time slice of the CPU first block, inference and training (4 MB of float32: stays in cache).
_FIRST_BLOCK_SLICE_VALUES = 1 << 20
# oneDNN's linear with the ReLU fused (faster than `relu(linear(x))` on AVX-512 CPUs).
_ONEDNN_LINEAR_RELU = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
)
KERNEL_NAMES = ("reference", "cpu", "accelerator")


def select_kernels(
    hidden_states: torch.Tensor, training: bool, parameters_need_grad: bool, forced: str | None = None
) -> "InferenceKernels":
    """The kernel set for one forward: the reference modules while training or when autograd must flow (through the
    input or the parameters); otherwise `forced` if given (tests run the accelerator path on CPU tensors this way), the
    accelerator kernels under `torch.compile` or on any non-CPU device, and the CPU kernels on CPU."""
    if forced is not None and forced not in KERNEL_NAMES:
        raise ValueError(f"Unknown inference kernels {forced!r}: choose one of {KERNEL_NAMES} or None (automatic).")
    needs_autograd = torch.is_grad_enabled() and (hidden_states.requires_grad or parameters_need_grad)
    if training or needs_autograd or forced == "reference":
        return InferenceKernels()
    if forced == "accelerator" or torch.compiler.is_compiling() or hidden_states.device.type != "cpu":
        return AcceleratorKernels()
    return CPUKernels()


class InferenceKernels:
    """The two operations the network is made of, as the plain modules compute them: differentiable, and what training
    mode runs when nothing trains (BatchNorm on batch statistics). Subclasses compute the same faster on one kind of
    device."""

    def conv_block(self, block: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, in_channels, mel, time)` -> `(batch, out_channels, mel // 2, time // 2)`."""
        return block(hidden_states)

    def linear_relu(self, linear: nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
        """`relu(linear(hidden_states))` on `(batch, frames, in_features)`."""
        return nn.functional.relu(linear(hidden_states))


class AcceleratorKernels(InferenceKernels):
    def conv_block(self, block: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        weight, bias = folded_conv_parameters(block)
        hidden = nn.functional.conv2d(
            hidden_states.contiguous(memory_format=torch.channels_last), weight, bias, padding=1
        )
        return nn.functional.max_pool2d(hidden, 2, stride=2).relu_()


class CPUKernels(InferenceKernels):
    def conv_block(self, block: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        weight, bias = folded_conv_parameters(block)
        if block.conv.in_channels == 1:
            return _single_channel_block(hidden_states, weight, bias)
        hidden = nn.functional.conv2d(hidden_states, weight, bias, padding=1)
        return nn.functional.relu(nn.functional.max_pool2d(hidden, 2, stride=2))

    def linear_relu(self, linear: nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
        fused = (
            _ONEDNN_LINEAR_RELU is not None
            and hidden_states.dtype == linear.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        )
        if fused:
            return _ONEDNN_LINEAR_RELU(hidden_states, linear.weight, linear.bias, "relu", [], "")
        return super().linear_relu(linear, hidden_states)


def folded_conv_parameters(block: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's conv weight (channels-last) and bias with its eval-mode BatchNorm folded in:
    `w * gamma / sqrt(var + eps)`, `(b - mean) * gamma / sqrt(var + eps) + beta`. Folded at every forward (a few small
    ops): a cache keyed on the tensors' version counters kept the old weights when they were changed through `.data`
    (`p.data.copy_(q)`, an EMA update), which bumps no counter, and the model returned the old outputs."""
    conv, norm = block.conv, block.batch_norm
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    weight = (conv.weight * scale[:, None, None, None]).contiguous(memory_format=torch.channels_last)
    return weight, (conv.bias - norm.running_mean) * scale + norm.bias


def _single_channel_block(hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The first block (one input channel) without materialising its full-resolution output, the largest tensor of the
    network: for each of the four positions of a 2x2 pooling window, gather the 9 taps at stride 2 and multiply by the
    `(9, channels)` kernel, keeping the running maximum; then add the bias and apply the ReLU. Time is processed in
    slices of about `_FIRST_BLOCK_SLICE_VALUES` outputs so the partial products of a slice stay in cache. Returns
    `(batch, channels, mel // 2, time // 2)` laid out channels-last."""
    if torch.is_autocast_enabled("cpu"):  # cast once here, not in every slice's matmul
        dtype = torch.get_autocast_dtype("cpu")
        hidden_states, weight, bias = hidden_states.to(dtype), weight.to(dtype), bias.to(dtype)
    padded = nn.functional.pad(hidden_states[:, 0], (1, 1, 1, 1))  # (batch, mel + 2, time + 2)
    batch, rows, columns = hidden_states.shape[0], hidden_states.shape[-2] // 2, hidden_states.shape[-1] // 2
    kernel = weight.reshape(weight.shape[0], 9).t()
    step = max(1, _FIRST_BLOCK_SLICE_VALUES // (batch * rows * weight.shape[0]))
    slices = []
    for start in range(0, columns, step):
        stop = min(columns, start + step)
        pooled = None
        for row_offset, column_offset in itertools.product((0, 1), (0, 1)):
            taps = torch.stack(
                [
                    padded[
                        :,
                        row_offset + u : row_offset + u + 2 * rows : 2,
                        column_offset + v + 2 * start : column_offset + v + 2 * stop : 2,
                    ]
                    for u in range(3)
                    for v in range(3)
                ],
                dim=-1,
            )  # (batch, mel // 2, stop - start, 9)
            phase = taps @ kernel
            pooled = phase if pooled is None else torch.maximum(pooled, phase, out=pooled)
        slices.append(pooled)
    pooled = slices[0] if len(slices) == 1 else torch.cat(slices, dim=2)
    return pooled.add_(bias).relu_().permute(0, 3, 1, 2)


# --- training ----------------------------------------------------------------------------------------------------


TRAINING_KERNEL_NAMES = ("reference", "channels_last", "cpu")


def select_training_kernels(views: torch.Tensor, forced: str | None = None) -> "TrainingKernels":
    """The kernel set for the training step on `views`' device: `forced` if given (tests and the parity check),
    otherwise `"cpu"` on CPU and `"channels_last"` on any other device."""
    if forced is not None and forced not in TRAINING_KERNEL_NAMES:
        raise ValueError(f"Unknown training kernels {forced!r}: choose one of {TRAINING_KERNEL_NAMES} or None.")
    name = forced or ("cpu" if views.device.type == "cpu" else "channels_last")
    return {"reference": TrainingKernels, "channels_last": ChannelsLastKernels, "cpu": CPUTrainingKernels}[name]()


class TrainingKernels(InferenceKernels):
    memory_format = torch.contiguous_format

    def conv_blocks(self, blocks: nn.ModuleList, views: torch.Tensor) -> torch.Tensor:
        """Views `(batch, 1, n_mels, frames)` -> `(batch, channels, n_mels / 2**k, frames / 2**k)` after k blocks."""
        hidden = views.contiguous(memory_format=self.memory_format)
        for block in blocks:
            hidden = self.conv_block(block, hidden)
        return hidden

    def conv_block(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """`(batch, in_channels, mel, time)` -> `(batch, out_channels, mel // 2, time // 2)`, pooled then ReLU."""
        conv = block.conv
        weight = conv.weight
        if self.memory_format is not torch.contiguous_format:
            # The weight decides the output's layout when the input has one channel; a clone (not `.contiguous`,
            # which keeps the strides of a one-channel weight) gives it the layout's strides.
            weight = weight.clone(memory_format=self.memory_format)
        hidden = nn.functional.conv2d(hidden, weight, conv.bias, conv.stride, conv.padding)
        return block.activation(block.pool(block.batch_norm(hidden)))


class ChannelsLastKernels(TrainingKernels):
    memory_format = torch.channels_last


class CPUTrainingKernels(ChannelsLastKernels):
    """Channels-last, with the first block fused ([`first_block`]) when it runs in float32 outside autocast. One
    instance serves one learner step: the patch moments of each view are computed once and reused by the online and the
    target encoder, which see the same views."""

    def __init__(self) -> None:
        self.moments: list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = []

    def view_moments(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[`patch_moments`] of `views`, computed on the first call for that tensor."""
        for seen, moments in self.moments:
            if seen is views:
                return moments
        self.moments.append((views, patch_moments(views)))
        return self.moments[-1][1]

    def conv_block(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        conv = block.conv
        fusable = (
            (conv.in_channels, conv.kernel_size, conv.stride, conv.padding) == (1, (3, 3), (1, 1), (1, 1))
            and hidden.dtype == torch.float32
            and not hidden.requires_grad
            and not torch.is_autocast_enabled(hidden.device.type)
        )
        if not fusable:
            return super().conv_block(block, hidden)
        return block.activation(first_block(block, hidden, self.view_moments(hidden)))


def first_block(
    block: nn.Module, views: torch.Tensor, moments: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """`MaxPool2d(BatchNorm2d(Conv2d(views)))` of a one-channel block in training mode, `(batch, 1, mel, time)` ->
    `(batch, channels, mel // 2, time // 2)` (channels-last), without the full-resolution output; updates the
    BatchNorm's running statistics as the module does. `moments`: the views' [`patch_moments`], if known."""
    conv, norm = block.conv, block.batch_norm
    moments = patch_moments(views) if moments is None else moments
    count = views.shape[0] * views.shape[-2] * views.shape[-1]
    with torch.no_grad():
        weight = conv.weight.detach().double().reshape(conv.out_channels, 9)
        mean = weight @ moments[0] + conv.bias.detach().double()
        variance = ((weight @ moments[1]) * weight).sum(-1)
        update_running_statistics(norm, mean, variance, count)
    inverse_std = torch.rsqrt(variance + norm.eps)
    return FirstBlockFunction.apply(views, conv.weight, conv.bias, norm.weight, norm.bias, (*moments, inverse_std))


def patch_moments(views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean `(9,)` and covariance `(9, 9)` (float64) of the zero-padded 3 x 3 patches of `(batch, 1, mel,
    time)` views: a conv output's batch mean is `w @ mean + b`, its biased variance `w @ covariance @ w`."""
    with torch.no_grad():
        padded = nn.functional.pad(views[:, 0], (1, 1, 1, 1))
        mels, frames = views.shape[-2:]
        patches = torch.stack(
            [padded[:, u : u + mels, v : v + frames] for u, v in itertools.product(range(3), range(3))]
        ).reshape(9, -1)
        patches = patches.double()  # float64 sums: the variance is a difference of two of them
        mean = patches.mean(dim=1)
        return mean, (patches @ patches.T) / patches.shape[1] - torch.outer(mean, mean)


def masked_conv_block(block: nn.Module, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A conv block in training mode on a right-padded batch, `(batch, in_channels, mel, time)` ->
    `(batch, out_channels, mel // 2, time // 2)`, whose examples hold `lengths` `(batch,)` valid time steps. The
    BatchNorm's batch statistics, and the running statistics it updates, are those of the valid steps alone (as if the
    examples' valid parts were one batch): how much padding a batch holds moves no example's output."""
    conv, norm = block.conv, block.batch_norm
    hidden = conv(hidden)
    wide = hidden if hidden.dtype == torch.float64 else hidden.float()  # sums over the batch in float32 at least
    valid = (torch.arange(wide.shape[-1], device=wide.device) < lengths[:, None]).to(wide.dtype)[:, None, None, :]
    count = valid.sum() * wide.shape[-2]
    mean = (wide * valid).sum((0, 2, 3)) / count
    centred = wide - mean[:, None, None]
    variance = (centred.square() * valid).sum((0, 2, 3)) / count
    with torch.no_grad():
        update_running_statistics(norm, mean, variance, count)
    scale = norm.weight * torch.rsqrt(variance + norm.eps)
    normalised = (centred * scale[:, None, None] + norm.bias[:, None, None]).to(hidden.dtype)
    return block.activation(block.pool(normalised))


def update_running_statistics(
    norm: nn.BatchNorm2d, mean: torch.Tensor, variance: torch.Tensor, count: int | torch.Tensor
) -> None:
    """What `BatchNorm2d.forward` does to its buffers in training mode, given the batch mean and biased variance
    over `count` values per channel."""
    if not norm.track_running_stats:
        return
    norm.num_batches_tracked.add_(1)
    momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    # A tensor count stays on its device (no host sync); an int one keeps float64 precision.
    unbiased = (
        variance * count / (count - 1).clamp(min=1) if torch.is_tensor(count) else variance * count / max(count - 1, 1)
    )
    norm.running_mean.mul_(1 - momentum).add_(mean.to(norm.running_mean.dtype), alpha=momentum)
    norm.running_var.mul_(1 - momentum).add_(unbiased.to(norm.running_var.dtype), alpha=momentum)


class FirstBlockFunction(torch.autograd.Function):
    """Forward: `(views, conv weight, conv bias, gamma, beta, (patch mean, patch covariance, 1 / sigma))` -> the pooled
    BatchNorm output `(batch, channels, mel // 2, time // 2)`. BatchNorm folds into the conv: with `sigma` the batch
    std of a channel, `x_hat = w_hat . p + b_hat` the normalised output of patch `p` (`w_hat = w / sigma`,
    `b_hat = -w_hat . mean`: the conv bias cancels), the output is `gamma * x_hat + beta`, and each pooling window
    keeps the largest of its four positions (the first on ties, as `MaxPool2d`).

    Backward: only the winning positions receive the gradient `g`. With `s = sum g p(winner)`: `d beta = sum g`,
    `d gamma = sum g x_hat(winner) = w_hat . s + b_hat d beta`, and BatchNorm's backward folded into the conv's weight
    gradient is `d w = gamma / sigma * (s - d beta * mean - d gamma * covariance @ w / sigma)`; the conv bias's
    gradient is exactly zero."""

    @staticmethod
    def forward(ctx, views, weight, bias, gamma, beta, statistics):
        # The batch's statistics (computed without gradients) come as one tuple: autograd passes it through and
        # gives it no gradient, as it gave each of them none.
        patch_mean, patch_covariance, inverse_std = statistics
        weight64 = weight.double().reshape(weight.shape[0], 9)
        weight_hat = weight64 * inverse_std[:, None]
        bias_hat = -(weight_hat @ patch_mean)
        folded_weight = (gamma.double()[:, None] * weight_hat).to(views.dtype)
        folded_bias = (gamma.double() * bias_hat + beta.double()).to(views.dtype)
        pooled, winner = pooled_conv(views, folded_weight, folded_bias)
        ctx.save_for_backward(views, gamma, winner, weight_hat, bias_hat, inverse_std, patch_mean, patch_covariance)
        return pooled.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_output):
        views, gamma, winner, weight_hat, bias_hat, inverse_std, patch_mean, patch_covariance = ctx.saved_tensors
        grad = grad_output.permute(0, 2, 3, 1)  # (batch, mel // 2, time // 2, channels), as the forward's outputs
        channels = grad.shape[-1]
        grad_beta = grad.sum(dim=(0, 1, 2))
        winner_patches = grad.new_zeros(channels, 9)  # s: (channels, 9)
        for start, stop, taps in window_taps(views, channels):
            grad_slice = grad[:, :, start:stop].reshape(-1, 1, channels)
            positions = winner[:, :, start:stop].reshape(-1, 1, channels).long()
            spread = grad.new_zeros(grad_slice.shape[0], 4, channels).scatter_(1, positions, grad_slice)
            winner_patches.addmm_(spread.reshape(-1, channels).T, taps.reshape(-1, 9))
        winner_patches, beta64 = winner_patches.double(), grad_beta.double()
        grad_gamma = (weight_hat * winner_patches).sum(-1) + bias_hat * beta64
        covariance_weight = weight_hat @ patch_covariance  # covariance @ w / sigma, per channel
        grad_weight = (gamma.double() * inverse_std)[:, None] * (
            winner_patches - beta64[:, None] * patch_mean - grad_gamma[:, None] * covariance_weight
        )
        grad_weight = grad_weight.to(grad.dtype).reshape(-1, 1, 3, 3)
        return None, grad_weight, torch.zeros_like(gamma), grad_gamma.to(grad.dtype), grad_beta, None


def window_taps(views: torch.Tensor, channels: int):
    """The first block's pooling windows in slices of time, `(start, stop, taps)`: `taps` holds the 3 x 3 patches of
    the four positions of each window `[start, stop)` of every row, in `MaxPool2d`'s order,
    `(batch, mel // 2, stop - start, 4, 9)`. A slice's outputs stay near `_FIRST_BLOCK_SLICE_VALUES`, so its products
    are pooled in cache."""
    padded = nn.functional.pad(views[:, 0], (1, 1, 1, 1))  # (batch, mel + 2, time + 2)
    batch, rows, columns = views.shape[0], views.shape[-2] // 2, views.shape[-1] // 2
    step = max(1, _FIRST_BLOCK_SLICE_VALUES // (batch * rows * 4 * channels))
    offsets = list(itertools.product(itertools.product((0, 1), (0, 1)), itertools.product(range(3), range(3))))
    for start in range(0, columns, step):
        stop = min(columns, start + step)
        taps = torch.stack(
            [
                padded[:, a + u : a + u + 2 * rows : 2, b + v + 2 * start : b + v + 2 * stop : 2]
                for (a, b), (u, v) in offsets
            ],
            dim=-1,
        )
        yield start, stop, taps.reshape(batch, rows, stop - start, 4, 9)


def pooled_conv(views: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The maximum over each 2 x 2 pooling window of the 3 x 3 conv `(channels, 9)` of one-channel views, and the
    winning position (0-3, `uint8`), each `(batch, mel // 2, time // 2, channels)`. Each slice's four positions
    are laid out as a `(windows, channels, 1, 4)` channels-last image for `max_pool2d`, which keeps the first
    maximum on ties as the block's `MaxPool2d` does."""
    batch, rows, columns, channels = views.shape[0], views.shape[-2] // 2, views.shape[-1] // 2, weight.shape[0]
    pooled = views.new_empty(batch, rows, columns, channels)
    winner = torch.empty(pooled.shape, dtype=torch.uint8, device=views.device)
    for start, stop, taps in window_taps(views, channels):
        windows = taps.shape[0] * taps.shape[1] * taps.shape[2]
        products = torch.addmm(bias, taps.reshape(-1, 9), weight.T).view(windows, 1, 4, channels)
        best, position = nn.functional.max_pool2d(products.permute(0, 3, 1, 2), (1, 4), return_indices=True)
        pooled[:, :, start:stop] = best.view(batch, rows, stop - start, channels)
        winner[:, :, start:stop] = position.view(batch, rows, stop - start, channels)
    return pooled, winner

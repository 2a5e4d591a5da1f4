"""Device-specific inference kernels of the BYOL-A network, chosen in one place ([`select_kernels`]).

[`BYOLAModel`] computes its conv blocks and fully connected layers through one of these kernel sets. All of them
compute the same function as the plain modules (`Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d`, `ReLU(Linear)`):

- `"reference"`: the modules themselves. Used in training mode and whenever autograd must flow.
- `"cpu"`: BatchNorm folded into the conv, max-pooling before the ReLU (they commute), channels-last activations
  so oneDNN writes the widest activation once, the first block (one input channel) computed as four stride-2
  tap GEMMs over cache-sized time slices without its full-resolution output, and oneDNN's fused linear + ReLU.
- `"accelerator"`: few large kernels for GPUs and for `torch.compile`: BatchNorm folded once per weight version
  (cached, not refolded each forward), one cuDNN convolution per block in channels-last, max-pooling then an
  in-place ReLU, no Python loops over slices.
"""

import itertools

import torch
from torch import nn


# Outputs per time slice of the CPU first block (4 MB of float32 per pooling phase: stays in cache).
_FIRST_BLOCK_SLICE_VALUES = 1 << 20
# oneDNN's linear with the ReLU fused (faster than `relu(linear(x))` on AVX-512 CPUs).
_ONEDNN_LINEAR_RELU = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
)
KERNEL_NAMES = ("reference", "cpu", "accelerator")


def select_kernels(
    hidden_states: torch.Tensor, training: bool, parameters_need_grad: bool, forced: str | None = None
) -> "InferenceKernels":
    """
    The kernel set for one forward: the reference modules while training or when autograd must flow (through the
    input or the parameters); otherwise `forced` if given (tests run the accelerator path on CPU tensors this way),
    the accelerator kernels under `torch.compile` or on any non-CPU device, and the CPU kernels on CPU.
    """
    if forced is not None and forced not in KERNEL_NAMES:
        raise ValueError(f"Unknown inference kernels {forced!r}: choose one of {KERNEL_NAMES} or None (automatic).")
    needs_autograd = torch.is_grad_enabled() and (hidden_states.requires_grad or parameters_need_grad)
    if training or needs_autograd or forced == "reference":
        return InferenceKernels()
    if forced == "accelerator" or torch.compiler.is_compiling() or hidden_states.device.type != "cpu":
        return AcceleratorKernels()
    return CPUKernels()


class InferenceKernels:
    """
    The two operations the network is made of, as the plain modules compute them: differentiable, and what training
    mode runs (BatchNorm on batch statistics). Subclasses compute the same faster on one kind of device.
    """

    def conv_block(self, block: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, in_channels, mel, time)` -> `(batch, out_channels, mel // 2, time // 2)`."""
        return block(hidden_states)

    def linear_relu(self, linear: nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
        """`relu(linear(hidden_states))` on `(batch, frames, in_features)`."""
        return nn.functional.relu(linear(hidden_states))


class AcceleratorKernels(InferenceKernels):
    """Folded BatchNorm cached per weight version, one convolution per block, pool then in-place ReLU."""

    def conv_block(self, block: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        weight, bias = folded_conv_parameters(block)
        hidden = nn.functional.conv2d(
            hidden_states.contiguous(memory_format=torch.channels_last), weight, bias, padding=1
        )
        return nn.functional.max_pool2d(hidden, 2, stride=2).relu_()


class CPUKernels(InferenceKernels):
    """oneDNN-friendly kernels: channels-last, the first block as tap GEMMs in cache-sized slices, fused linear."""

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
    """
    The block's conv weight (channels-last) and bias with its eval-mode BatchNorm folded in:
    `w * gamma / sqrt(var + eps)`, `(b - mean) * gamma / sqrt(var + eps) + beta`. Cached on the block until a
    parameter or buffer changes (in place, by loading, or by moving the module); recomputed inside a compiled graph.
    A training-mode forward updates the running statistics in place without bumping their version counters, but it
    always bumps `num_batches_tracked`'s, which is therefore part of the key.
    """
    conv, norm = block.conv, block.batch_norm
    tensors = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
    if norm.num_batches_tracked is not None:
        tensors += (norm.num_batches_tracked,)
    if torch.compiler.is_compiling():
        return _fold(conv, norm)
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
    cached = getattr(block, "_folded_parameters", None)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, *_fold(conv, norm))
        block._folded_parameters = cached
    return cached[1], cached[2]


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    weight = (conv.weight * scale[:, None, None, None]).contiguous(memory_format=torch.channels_last)
    return weight, (conv.bias - norm.running_mean) * scale + norm.bias


def _single_channel_block(hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """
    The first block (one input channel) without materialising its full-resolution output, the largest tensor of
    the network: for each of the four positions of a 2x2 pooling window, gather the 9 taps at stride 2 and multiply
    by the `(9, channels)` kernel, keeping the running maximum; then add the bias and apply the ReLU. Time is
    processed in slices of about `_FIRST_BLOCK_SLICE_VALUES` outputs so the partial products of a slice stay in
    cache. Returns `(batch, channels, mel // 2, time // 2)` laid out channels-last.
    """
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

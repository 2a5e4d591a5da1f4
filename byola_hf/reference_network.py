"""The original BYOL-A networks, computed plainly from their original-layout tensors: the reference for parity.

Written once here and used by the converter's check, by [`BYOLAModel`] (the exact weights of the original time
reduction), by the tests and by the benchmark's baseline. It follows the original code's order of operations
without any of this package's fast paths:

- v1, `AudioNTT2020Task6` (nttcslab/byol-a; s3prl `upstream/byol_a`): three blocks of Conv2d(3x3)-BatchNorm-ReLU-
  MaxPool(2) (`features.{0,4,8}` convs, `features.{1,5,9}` BatchNorms), each frame flattened mel-major
  (`permute(0, 3, 2, 1)`), then `fc.0` + ReLU, Dropout, `fc.3` + ReLU.
- v2, `AudioNTT2022Encoder` (nttcslab/byol-a `v2/`): two such blocks; each output frame is the flattened conv
  features followed by the MLP output.
- The layered s3prl upstream of v1 (`AudioNTT2020Task6X`) returns five layers, each conv block's output flattened
  channel-major, zero-padded to `feature_d` and averaged down to the output frame rate by [`original_time_reduction`].
"""

import torch
from torch import nn


def num_conv_blocks(state_dict: dict[str, torch.Tensor]) -> int:
    """Conv blocks of an original-layout network: 3 for v1, 2 for v2."""
    blocks = 0
    while f"features.{4 * blocks}.weight" in state_dict:
        blocks += 1
    return blocks


def original_forward(
    state_dict: dict[str, torch.Tensor], normalized_log_mel: torch.Tensor, layered: bool = False
) -> torch.Tensor | list[torch.Tensor]:
    """
    The original network in eval mode on a normalised log-mel.

    Args:
        state_dict: tensors under the original keys (`features.N.*`, `fc.0.*`, `fc.3.*`).
        normalized_log_mel (`torch.Tensor` of shape `(batch, 1, n_mels, frames)`): `(log_mel - mean) / std`.
        layered: return the s3prl layered upstream's five layers instead (v1 with `feature_d` at least as wide as
            every conv layer, i.e. 2048 for 64 mel bins, as in the original).

    Returns:
        `(batch, frames // 2**blocks, feature_d)`: v1 the MLP's output, v2 the last conv block's features
        (mel-major) followed by the MLP's output. With `layered`, a list of five such tensors: conv1, conv2, conv3
        (channel-major, zero-padded, time-reduced), fc1, fc2.
    """
    functional = nn.functional
    hidden = normalized_log_mel
    blocks = num_conv_blocks(state_dict)
    target = hidden.shape[-1] // 2**blocks
    feature_d = state_dict["fc.3.weight"].shape[0]
    layers = []
    for i in range(blocks):
        hidden = functional.conv2d(
            hidden, state_dict[f"features.{4 * i}.weight"], state_dict[f"features.{4 * i}.bias"], padding=1
        )
        norm = f"features.{4 * i + 1}."
        hidden = functional.batch_norm(
            hidden,
            state_dict[norm + "running_mean"],
            state_dict[norm + "running_var"],
            state_dict[norm + "weight"],
            state_dict[norm + "bias"],
            training=False,
            eps=1e-5,
        )
        hidden = functional.max_pool2d(functional.relu(hidden), 2, stride=2)
        if layered:
            batch, channels, mels, time = hidden.shape
            state = hidden.permute(0, 3, 1, 2).reshape(batch, time, channels * mels)  # channel-major
            layers.append(original_time_reduction(functional.pad(state, (0, feature_d - state.shape[-1])), target))
    batch, channels, mels, frames = hidden.shape
    conv_features = hidden.permute(0, 3, 2, 1).reshape(batch, frames, mels * channels)  # mel-major
    fc1 = functional.relu(functional.linear(conv_features, state_dict["fc.0.weight"], state_dict["fc.0.bias"]))
    fc2 = functional.relu(functional.linear(fc1, state_dict["fc.3.weight"], state_dict["fc.3.bias"]))
    if layered:
        # The layered upstream concatenates the layers and splits them again.
        stacked = torch.cat([*layers, fc1, fc2], dim=-1)
        return list(stacked.reshape(batch, frames, len(layers) + 2, feature_d).permute(2, 0, 1, 3))
    return fc2 if blocks == 3 else torch.cat([conv_features, fc2], dim=-1)


def original_time_reduction(states: torch.Tensor, target: int) -> torch.Tensor:
    """
    The layered upstream's reduction of `(batch, time, width)` to `target` frames: while longer than `target`, merge
    the last two frames by their mean when the length is odd, then average neighbour pairs.
    """
    while states.shape[1] > target:
        if states.shape[1] % 2 == 1:
            states = torch.cat([states[:, :-2], states[:, -2:].mean(1, keepdim=True)], dim=1)
        states = states.reshape(states.shape[0], states.shape[1] // 2, 2, states.shape[-1]).mean(2)
    return states


def tail_weights(halvings: int) -> tuple[tuple[float, ...], ...]:
    """
    For each tail length `s` in `[2**h, 2**(h+1) - 1]`, the weights (padded to `2**(h+1) - 1`) with which
    [`original_time_reduction`] averages the last `s` frames into the last output frame when it halves `h` times:
    the reduction run on the identity, in float64.
    """
    block = 2**halvings
    rows = []
    for size in range(block, 2 * block):
        identity = torch.eye(size, dtype=torch.float64)[None]  # frame i: weight 1 on tail position i
        weights = original_time_reduction(identity, 1)[0, 0]
        rows.append(tuple(weights.tolist()) + (0.0,) * (2 * block - 1 - size))
    return tuple(rows)

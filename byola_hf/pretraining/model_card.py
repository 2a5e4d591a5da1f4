"""The card of a pre-trained encoder: byola_hf's model card with what pre-training did."""

from typing import Any

from huggingface_hub import ModelCard

from ..configuration_byola import BYOLAConfig, statistics_source
from ..hub import model_card


def pretraining_card(config: BYOLAConfig, info: dict[str, Any]) -> ModelCard:
    """[`~byola_hf.hub.model_card`] of the encoder (statistics and their provenance included), with a
    "Pre-training" section before "Usage": the data, where training started, steps, epochs, batch, learning rate,
    the loss at the first and last logs."""
    provenance = config.stats_provenance or {}
    source = statistics_source(provenance)
    # A stream whose statistics were given was never read whole, so its size and epochs are not known.
    size = "streamed (size not measured)"
    if info["audio_hours"] is not None:
        size = f"{provenance.get('num_examples')} clips, {info['audio_hours']:.3f} h"
    epochs = "not known (a stream not counted)" if info["epochs"] is None else f"{info['epochs']:.2f}"
    # Trainer logs the mean loss since the previous log: the run's first and last logs.
    loss = "- training loss: not logged"
    if info["logged_losses"]:
        (first_step, first), (last_step, last) = info["logged_losses"]
        loss = f"- training loss: {first:.4f} at step {first_step}, {last:.4f} at step {last_step}"
    lines = [
        "## Pre-training",
        "",
        f"Pre-trained with BYOL-A {'v2' if config.concat_conv_features else 'v1'} by `byola-pretrain` (byola_hf).",
        "",
        f"- data: {source}, split `{provenance.get('split')}`, {size}",
        f"- started from: {info['init_from'] or 'random initialisation'}",
        f"- steps: {info['steps']}, epochs: {epochs}, batch: {info['batch_size']}, "
        f"learning rate: {info['learning_rate']:g}",
        loss,
        "",
    ]
    return model_card(config, details="\n".join(lines) + "\n")

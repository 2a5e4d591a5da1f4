"""The card of a pre-trained encoder: byola_hf's model card with what pre-training did."""

from typing import Any

from huggingface_hub import ModelCard

from ..configuration_byola import BYOLAConfig
from ..hub import model_card


def pretraining_card(config: BYOLAConfig, info: dict[str, Any]) -> ModelCard:
    """[`~byola_hf.hub.model_card`] of the encoder (statistics and their provenance included), with a
    "Pre-training" section before "Usage": the data, where training started, steps, epochs, batch, learning rate,
    the loss at the first and last logs."""
    provenance = config.stats_provenance or {}
    source = provenance.get("dataset")
    if provenance.get("config"):
        source = f"{source} ({provenance['config']})"
    lines = [
        "## Pre-training",
        "",
        f"Pre-trained with BYOL-A {'v2' if config.concat_conv_features else 'v1'} by `byola-pretrain` (byola_hf).",
        "",
        f"- data: {source}, split `{provenance.get('split')}`, " + data_size(provenance, info),
        f"- started from: {info['init_from'] or 'random initialisation'}",
        f"- steps: {info['steps']}, epochs: {epochs_text(info['epochs'])}, batch: {info['batch_size']}, "
        f"learning rate: {info['learning_rate']:g}",
        loss_line(info["logged_losses"]),
        "",
    ]
    text = str(model_card(config))
    head, marker, tail = text.partition("## Usage")
    return ModelCard(head + "\n".join(lines) + "\n" + marker + tail)


def loss_line(logged: list[tuple[int, float]]) -> str:
    """The training loss at the run's first and last logs (Trainer logs the mean since the previous log)."""
    if not logged:
        return "- training loss: not logged"
    (first_step, first), (last_step, last) = logged
    return f"- training loss: {first:.4f} at step {first_step}, {last:.4f} at step {last_step}"


def epochs_text(epochs: float | None) -> str:
    """Passes over the data, or why they are not known."""
    return "not known (a stream not counted)" if epochs is None else f"{epochs:.2f}"


def data_size(provenance: dict[str, Any], info: dict[str, Any]) -> str:
    """ "N clips, H h", or what is known of a stream whose statistics were given (it was never read whole)."""
    if info["audio_hours"] is None:
        return "streamed (size not measured)"
    return f"{provenance.get('num_examples')} clips, {info['audio_hours']:.3f} h"

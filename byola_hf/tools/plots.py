"""PNG pictures of a fine-tuned head: the learned layer weights and a confusion matrix."""

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


LAYER_NAMES = ("conv1", "conv2", "conv3", "fc1", "fc2")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_layer_weights(layer_weights: torch.Tensor, path: str | Path, title: str = "BYOL-A layer weights") -> Path:
    """Bar chart of `softmax(layer_weights)`: how much each BYOL-A layer contributes to the task."""
    plt = _pyplot()
    weights = torch.softmax(layer_weights.float(), dim=-1).numpy()
    names = LAYER_NAMES if len(weights) == len(LAYER_NAMES) else [f"layer {i}" for i in range(len(weights))]
    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    bars = axis.bar(names, weights, color="#4C72B0")
    axis.axhline(1 / len(weights), color="grey", linestyle="--", linewidth=1, label="uniform")
    axis.bar_label(bars, fmt="%.3f", fontsize=8)
    axis.set_ylabel("softmax weight")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


def save_confusion_matrix(
    references: np.ndarray,
    predictions: np.ndarray,
    label_names: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix",
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class) with counts in the cells."""
    figure = confusion_matrix_figure(references, predictions, label_names, title)
    figure.savefig(path)
    _pyplot().close(figure)
    return Path(path)


def confusion_matrix_figure(references: np.ndarray, predictions: np.ndarray, label_names: Sequence[str], title: str):
    """The matplotlib figure [`save_confusion_matrix`] saves, its title wrapped to the figure's width."""
    plt = _pyplot()
    size = len(label_names)
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (np.asarray(references), np.asarray(predictions)), 1)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = max(4.0, 0.45 * size + 2)
    figure, axis = plt.subplots(figsize=(side, side), dpi=100)
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(size), label_names, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(size), label_names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if size <= 30:
        for i, j in zip(*np.nonzero(counts)):
            color = "white" if rates[i, j] > 0.5 else "black"
            axis.text(j, i, counts[i, j], ha="center", va="center", fontsize=7, color=color)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    # tight_layout makes room above the axes but does not wrap: a line wider than the figure was cut at its edges.
    # About 12 characters of 10-point text fit an inch.
    full_title = textwrap.fill(f"{title} (accuracy {accuracy:.1%})", width=int(side * 12))
    axis.set_title(full_title, fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    return figure

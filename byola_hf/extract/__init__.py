"""Embeddings at dataset scale: `extract_embeddings` and the `byola-extract` command (needs the `[stats]` extra)."""

from .cli import main
from .embed import AudioClips, embed_clip_batch, layer_widths
from .extract import ExtractionResult, extract_embeddings, load_embeddings
from .source import load_source, metadata_csv_source


__all__ = [
    "AudioClips",
    "ExtractionResult",
    "embed_clip_batch",
    "extract_embeddings",
    "layer_widths",
    "load_embeddings",
    "load_source",
    "main",
    "metadata_csv_source",
]

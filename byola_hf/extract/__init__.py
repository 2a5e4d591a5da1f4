"""Embeddings at dataset scale: `extract_embeddings` and the `byola-extract` command (needs the `[stats]` extra)."""

from .cli import main
from .extract import ExtractionResult, embed_batch, extract_embeddings, load_embeddings, load_source


__all__ = ["ExtractionResult", "embed_batch", "extract_embeddings", "load_embeddings", "load_source", "main"]

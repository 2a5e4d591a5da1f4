"""Embeddings at dataset scale: `extract_embeddings` and the `byola-extract` command (needs the `[stats]` extra).

[`source`] reads what to embed (a dataset split, a folder of audio, an EVAR task CSV) and its fingerprint; [`embed`]
decodes clips in DataLoader workers (through `byola_hf.audio`) and runs the model on batches; [`extract`] writes
owned, resumable shards and reads them back; [`cli`] is the command line.
"""

from ..tools.data import load_source, metadata_csv_source
from .cli import main
from .embed import AudioClips, embed_clip_batch, layer_widths
from .extract import ExtractArguments, ExtractionResult, extract_embeddings, load_embeddings


__all__ = [
    "AudioClips",
    "ExtractArguments",
    "ExtractionResult",
    "embed_clip_batch",
    "extract_embeddings",
    "layer_widths",
    "load_embeddings",
    "load_source",
    "main",
    "metadata_csv_source",
]

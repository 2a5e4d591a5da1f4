"""Optional dependencies: the model library needs torch, transformers, numpy and safetensors only; each tool names
the extra that brings what it needs."""

import importlib
from types import ModuleType


# What each extra of setup.cfg brings, for the message when one is missing.
EXTRAS = {
    "audio": "file decoding and resampling (soundfile, librosa)",
    "stats": "the statistics command (datasets, soundfile, librosa)",
    "pretrain": "pre-training (datasets, accelerate, soundfile, librosa)",
    "superb": "the SUPERB recipe (datasets, evaluate, accelerate, matplotlib, soundfile, librosa)",
}


def require_extra(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise an `ImportError` of one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module} is not installed: it is part of byola_hf's [{extra}] extra ({EXTRAS[extra]}). Install it with "
            f"`pip install 'byola_hf[{extra}]'`."
        ) from error

"""The HEAR 2021 common API for BYOL-A (v1 and v2): `load_model`, `get_timestamp_embeddings`, `get_scene_embeddings`.

    from byola_hf import hear
    model = hear.load_model("byola-2048-task")                    # a model directory (or Hub id) with statistics
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)  # audio: (n_sounds, n_samples) at 16 kHz
    scenes = hear.get_scene_embeddings(audio, model)

In HEAR's terms: the timestamp embeddings are BYOL-A's frame features (`last_hidden_state`: `feature_d` wide, 12.5
frames per second for v1, 25 for v2), each stamped with the centre of the audio it covers; the scene embedding is
BYOL-A's clip embedding (`pooler_output`, max + mean over time). Both are float32 on the audio's device.

Statistics (the log-mel mean and std, read from the model directory's config): BYOL-A normalises with the task's own,
but HEAR evaluates one model on many tasks, so fix one pair for the whole benchmark: compute it with
`byola-compute-stats` on a broad corpus that spans the tasks (or a mix of their training splits), save it into the
directory, and report `config.stats_provenance`. `load_model(..., mean=M, std=S)` sets a pair given by hand instead.
"""

import torch
from torch import nn

from .feature_extraction_byola import BYOLAFeatureExtractor
from .modeling_byola import BYOLAModel


# Audio per forward call: sounds are processed this many seconds of audio at a time, so any number of sounds of up
# to 20 minutes each fits in a few GB (the network runs long inputs in exact chunks itself).
_SECONDS_PER_CALL = 600


class BYOLAHearModel(nn.Module):
    """
    A BYOL-A model with the attributes the HEAR API requires.

    Attributes:
        sample_rate (`int`): the rate the audio must have (16000).
        scene_embedding_size (`int`): width of [`get_scene_embeddings`]'s output (`feature_d`).
        timestamp_embedding_size (`int`): width of [`get_timestamp_embeddings`]'s output (`feature_d`).
    """

    def __init__(self, model: BYOLAModel, feature_extractor: BYOLAFeatureExtractor):
        super().__init__()
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.sample_rate = feature_extractor.sampling_rate
        self.scene_embedding_size = model.config.feature_d
        self.timestamp_embedding_size = model.config.feature_d

    def train(self, mode: bool = True) -> "BYOLAHearModel":
        """HEAR embeddings are inference: the network stays in eval mode whatever `mode` (a parent module's
        `.train()` would otherwise make it normalise each batch by its own BatchNorm statistics, move the running
        ones and drop out features)."""
        super().train(mode)
        self.model.eval()
        return self

    def embed(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(frame features (n, frames, d), clip embeddings (n, d))` of `(n, samples)` audio, in float32 on its
        device, computed a bounded amount of audio at a time."""
        if not isinstance(audio, torch.Tensor) or audio.ndim != 2 or 0 in audio.shape:
            raise ValueError(
                "HEAR audio must be a torch tensor of shape (n_sounds, n_samples), both at least 1; got "
                f"{type(audio).__name__} {tuple(getattr(audio, 'shape', ()))}."
            )
        minimum = self.model.config.min_samples
        if audio.shape[1] < minimum:  # the feature extractor's advice (pad_to_min_length) is no HEAR argument
            raise ValueError(
                f"HEAR audio of {audio.shape[1]} samples is too short for BYOL-A: sounds need at least {minimum} "
                f"samples ({minimum / self.sample_rate:g} s at {self.sample_rate} Hz) for one embedding frame; "
                "zero-pad them to that length."
            )
        per_call = max(1, _SECONDS_PER_CALL * self.sample_rate // max(audio.shape[1], 1))
        frames, scenes = [], []
        with torch.no_grad():
            for start in range(0, audio.shape[0], per_call):
                inputs = self.feature_extractor(
                    audio[start : start + per_call], sampling_rate=self.sample_rate, device=audio.device
                )
                outputs = self.model(**inputs)
                frames.append(outputs.last_hidden_state.float())
                scenes.append(outputs.pooler_output.float())
        return torch.cat(frames), torch.cat(scenes)


def load_model(
    model_file_path: str = "", mean: float | None = None, std: float | None = None, device: str | None = None
) -> BYOLAHearModel:
    """
    HEAR `load_model`: a BYOL-A model directory (written by `byola-convert` / `byola-compute-stats`) or Hub id.

    Args:
        model_file_path: the directory or Hub id. HEAR's default empty path is refused: BYOL-A's weights are under
            NTT's licence and not bundled.
        mean, std: normalisation statistics to use instead of the directory's (both or neither).
        device: where to put the model (HEAR's harness usually moves it itself).
    """
    if not model_file_path:
        raise ValueError(
            "byola_hf.hear.load_model needs a model directory: convert the official weights with byola-convert and "
            "compute statistics with byola-compute-stats (the weights are under NTT's licence and not bundled)."
        )
    if (mean is None) != (std is None):
        raise ValueError("mean and std go together: give both or neither.")
    overrides = {} if mean is None else {"mean": mean, "std": std, "stats_provenance": {"method": "given"}}
    try:
        model = BYOLAModel.from_pretrained(model_file_path, **overrides)
    except OSError as error:  # a missing folder reads as an invalid or unreachable Hub id
        reason = " ".join(str(error).split())[:200]
        raise ValueError(
            f"Could not load a BYOL-A model from {model_file_path!r} ({reason}): pass a directory written by "
            "byola-convert, or a reachable Hub id."
        ) from None
    model.config.require_statistics(f"The model at {model_file_path!r}")
    feature_extractor = BYOLAFeatureExtractor.from_model_config(model.config)
    hear_model = BYOLAHearModel(model, feature_extractor)
    return hear_model.to(device) if device is not None else hear_model


def get_timestamp_embeddings(audio: torch.Tensor, model: BYOLAHearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """
    HEAR `get_timestamp_embeddings`.

    Args:
        audio (`torch.Tensor` of shape `(n_sounds, n_samples)`): float32 audio at `model.sample_rate`, every sound
            padded to the same length (as the HEAR harness gives it).

    Returns:
        `(embeddings, timestamps)`: `(n_sounds, n_timestamps, model.timestamp_embedding_size)` float32 and
        `(n_sounds, n_timestamps)` float32 milliseconds (each frame's centre), both on the audio's device.
    """
    frames, _ = model.embed(audio)
    centers = model.model.config.frame_centers_ms(frames.shape[1])  # [`BYOLAConfig.frame_centers_ms`]
    timestamps = torch.tensor(centers, dtype=torch.float32, device=frames.device)
    return frames, timestamps.expand(frames.shape[0], -1)


def get_scene_embeddings(audio: torch.Tensor, model: BYOLAHearModel) -> torch.Tensor:
    """HEAR `get_scene_embeddings`: `(n_sounds, model.scene_embedding_size)` float32 clip embeddings (BYOL-A's
    max + mean over time) of `(n_sounds, n_samples)` audio, on its device."""
    return model.embed(audio)[1]


__all__ = ["BYOLAHearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]

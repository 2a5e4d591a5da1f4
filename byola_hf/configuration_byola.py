"""BYOL-A model configuration."""

import copy
import functools
import json
import math
import os
from typing import Any

import torch
from transformers import PretrainedConfig
from transformers.utils import logging

from .audio import unit_samples


# [`BYOLAForSequenceClassification`]'s heads: SUPERB's (frame projection, mean pooling) and EVAR's fine-tuning head.
CLASSIFIER_HEADS = ("superb", "evar")
# The model type of byola-pretrain's learner checkpoints ([`BYOLAPreTrainingConfig`], kept beside the encoder's
# config so that AutoConfig and the encoders' loaders recognise such a folder without the pre-training tools).
PRETRAINING_MODEL_TYPE = "byola-pretraining"
logger = logging.get_logger(__name__)


def one_torch_thread_in_forked_child() -> None:
    """A forked process (a `datasets.map(num_proc=...)` worker, a DataLoader worker) computes with one torch thread:
    the workers are the parallelism, and a child forked after its parent ran a parallel torch op (loading a model
    or a feature extractor does) deadlocks at its own first one on the inherited OpenMP pool."""
    torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=one_torch_thread_in_forked_child)


class PrivatePushMixin:
    """Hub pushes of BYOL-A's objects (`push_to_hub`, `save_pretrained(..., push_to_hub=True)`) create the repository
    private unless `private=False` is passed (transformers' default is public; NTT's weights may not be published,
    docs/hub.md). Mixed in before the transformers base class."""

    def push_to_hub(self, repo_id: str, *args, private: bool | None = None, **kwargs):
        check_private_push(getattr(self, "config", self), repo_id, private is not False, kwargs.get("token"))
        return super().push_to_hub(repo_id, *args, private=private is not False, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        if kwargs.get("push_to_hub"):
            kwargs["private"] = kwargs.get("private") is not False
            # transformers' default repository: the folder's name
            repo_id = kwargs.get("repo_id") or os.path.basename(os.path.normpath(save_directory))
            check_private_push(getattr(self, "config", self), repo_id, kwargs["private"], kwargs.get("token"))
        return super().save_pretrained(save_directory, *args, **kwargs)


def public_repository(repo_id: str, token: str | bool | None = None) -> str | None:
    """The full id of `repo_id` (a bare name is in the token's namespace) when it exists on the Hub and is public,
    else `None`: creating it again (`exist_ok`) would not make it private."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    api = HfApi(token=token)
    if "/" not in repo_id:  # created in the token's own namespace, not looked up as a canonical model
        repo_id = f"{api.whoami()['name']}/{repo_id}"
    try:
        return None if api.model_info(repo_id).private else repo_id
    except RepositoryNotFoundError:
        return None


def check_private_push(config: "BYOLAConfig", repo_id: str, private: bool, token: str | bool | None = None) -> None:
    """Before an object's own push: refuse a private push into a public repository, which would publish it; warn
    before a push of NTT's weights ([`warn_if_licensed`])."""
    public = public_repository(repo_id, token) if private else None
    if public is not None:
        raise ValueError(
            f"{public} already exists and is public: pushing there would publish this model's files. Push to "
            "another repo_id, or pass private=False to publish them."
        )
    warn_if_licensed(config, private)


def warn_if_licensed(config: "BYOLAConfig", private: bool) -> None:
    """Warn on stderr before a push of weights converted from NTT's files (their licence is for evaluation)."""
    source = getattr(config, "converted_from", None)
    if source is None:
        return
    visibility = "a private" if private else "a PUBLIC"
    logger.warning(
        f"Pushing weights converted from NTT's {source} to {visibility} repository: NTT's licence allows internal "
        "evaluation only, not redistribution without NTT's written consent."
    )


class BYOLAConfig(PrivatePushMixin, PretrainedConfig):
    r"""
    Configuration of a BYOL-A audio encoder ([`BYOLAModel`]): the network sizes, the log-mel front-end the network
    was trained on, and the per-task normalisation statistics.

    BYOL-A (Niizumi et al., "BYOL for Audio", IJCNN 2021 / TASLP 2023) normalises every log-mel spectrogram with a
    scalar `mean` and `std` computed on the downstream task's own data. They are `None` until computed (see
    `byola_hf.stats.compute_stats` / `byola-compute-stats`); a model whose config has no statistics refuses to run.

    Two networks are described by the same fields (see [`BYOLAConfig.from_variant`]):

    | variant | paper | conv blocks | MLP | output frame | frames/s |
    |---|---|---|---|---|---|
    | `AudioNTT2020` (v1, default) | IJCNN 2021 | 3 | 512 -> d -> d | the MLP's output (`feature_d` = d) | 12.5 |
    | `AudioNTT2022` (v2) | TASLP 2023 | 2 | 1024 -> 2048 -> 2048 | conv features + MLP output (3072) | 25 |

    Args:
        feature_d (`int`, *optional*, defaults to 2048):
            Size of `last_hidden_state` and `pooler_output` (512, 1024 or 2048 for the official v1 weights; 3072 for
            v2); without `concat_conv_features` also that of both fully connected layers (see `mlp_hidden_size`).
        conv_channels (`int`, *optional*, defaults to 64):
            Channels of each of the convolutional blocks.
        num_conv_layers (`int`, *optional*, defaults to 3):
            Conv-BatchNorm-ReLU-MaxPool(2) blocks; time and frequency are downsampled by `2**num_conv_layers`.
        mlp_hidden_size (`int`, *optional*):
            Output width of the first fully connected layer; `feature_d` when not given (v1). 2048 for v2.
        concat_conv_features (`bool`, *optional*, defaults to `False`):
            Each output frame is the last conv block's features (flattened mel-major, `conv_hidden_sizes[-1]` values)
            then the second fully connected layer's, `feature_d - conv_hidden_sizes[-1]` wide (v2); else the latter
            alone (v1).
        variant (`str`, *optional*):
            `"AudioNTT2020"` (v1) or `"AudioNTT2022"` (v2, with `concat_conv_features`): derived from
            `concat_conv_features` when not given, recorded in `config.json` and the model card.
        hidden_dropout (`float`, *optional*, defaults to 0.3):
            Dropout before the second fully connected layer (active in training mode only).
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the BatchNorm layers.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Sampling rate of the waveform the front-end expects.
        n_fft (`int`, *optional*, defaults to 1024):
            FFT size of the STFT.
        win_length (`int`, *optional*, defaults to 1024):
            Length of the (periodic Hann) analysis window.
        hop_length (`int`, *optional*, defaults to 160):
            STFT hop in samples (10 ms at 16 kHz).
        n_mels (`int`, *optional*, defaults to 64):
            Number of mel bands (Slaney scale and normalisation).
        f_min (`float`, *optional*, defaults to 60.0):
            Lowest mel band edge in Hz.
        f_max (`float`, *optional*, defaults to 7800.0):
            Highest mel band edge in Hz.
        mean (`float`, *optional*):
            Mean of the task's log-mel spectrograms, subtracted before the network.
        std (`float`, *optional*):
            Standard deviation of the task's log-mel spectrograms; the network input is `(log_mel - mean) / std`.
        stats_provenance (`dict`, *optional*):
            Where `mean`/`std` came from (dataset, config, split, examples, frames, method): `byola-compute-stats`.
        inference_chunk_frames (`int`, *optional*, defaults to 12000):
            In eval mode [`BYOLAModel`] runs inputs longer than this many log-mel frames (120 s at 16 kHz) in exact
            chunks so memory stays bounded (`0`: never). Does not change results beyond float rounding.
        use_weighted_layer_sum (`bool`, *optional*, defaults to `True`):
            Heads: learn a softmax-weighted sum of the `num_hidden_layers` hidden states (weights start equal), as
            SUPERB's featurizer does; otherwise use `last_hidden_state`.
        freeze_base_model (`bool`, *optional*, defaults to `True`):
            Heads: keep the BYOL-A encoder frozen and in eval mode (the SUPERB protocol).
        classifier_proj_size (`int`, *optional*, defaults to 256):
            [`BYOLAForSequenceClassification`]: projection before mean pooling.
        classifier_head (`str`, *optional*, defaults to `"superb"`):
            [`BYOLAForSequenceClassification`]: `"superb"` (the featurizer, a projection, mean pooling and a linear
            layer) or `"evar"` (EVAR's fine-tuning head: BatchNorm without affine parameters on the clip embedding
            `pooler_output`, then a linear layer; needs `use_weighted_layer_sum=False`).
        classifier_slots (`list[int]`, *optional*):
            [`BYOLAForSequenceClassification`] with several labels per clip (intent classification's action /
            object / location): the number of classes of each slot. Logits are the slots' logits concatenated;
            the loss is the sum of the slots' cross-entropies.
        ctc_head (`str`, *optional*, defaults to `"linear"`):
            [`BYOLAForCTC`]: `"linear"` (projection then a frame-level linear layer, SUPERB PR) or `"bilstm"`
            (projection, a bidirectional LSTM, a linear layer, SUPERB ASR).
        ctc_proj_size (`int`, *optional*, defaults to 256):
            [`BYOLAForCTC`]: projection width (and the LSTM's hidden size for `"bilstm"`).
        ctc_lstm_layers (`int`, *optional*, defaults to 2):
            [`BYOLAForCTC`] with `ctc_head="bilstm"`: LSTM layers.
        ctc_blank_id (`int`, *optional*, defaults to 0):
            [`BYOLAForCTC`]: the blank token (the tokenizer's pad token).
        ctc_loss_reduction (`str`, *optional*, defaults to `"mean"`):
            [`BYOLAForCTC`]: `"mean"` or `"sum"` of the CTC loss.
        ctc_zero_infinity (`bool`, *optional*, defaults to `True`):
            [`BYOLAForCTC`]: zero infinite losses (impossible alignments).
        vocab_size (`int`, *optional*):
            [`BYOLAForCTC`]: output tokens, blank included.
        frame_lstm_hidden_size (`int`, *optional*, defaults to 512):
            [`BYOLAForAudioFrameClassification`]: hidden size of its one-layer LSTM.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of fresh linear weights; saved weights load as they are.

    Example:

    ```python
    >>> from byola_hf import BYOLAConfig, BYOLAModel

    >>> config = BYOLAConfig(feature_d=2048, mean=-8.907230, std=4.892486)
    >>> model = BYOLAModel(config)  # random weights
    ```
    """

    model_type = "byola"
    attribute_map = {"hidden_size": "feature_d"}

    # One keyword per config attribute, as every transformers PretrainedConfig takes them (from_pretrained does).
    def __init__(  # noqa: PLR0913
        self,
        feature_d: int = 2048,
        conv_channels: int = 64,
        num_conv_layers: int = 3,
        mlp_hidden_size: int | None = None,
        concat_conv_features: bool = False,
        variant: str | None = None,
        hidden_dropout: float = 0.3,
        batch_norm_eps: float = 1e-5,
        sampling_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 60.0,
        f_max: float = 7800.0,
        mean: float | None = None,
        std: float | None = None,
        stats_provenance: dict[str, Any] | None = None,
        inference_chunk_frames: int = 12000,
        use_weighted_layer_sum: bool = True,
        freeze_base_model: bool = True,
        classifier_proj_size: int = 256,
        classifier_slots: list[int] | None = None,
        classifier_head: str = "superb",
        ctc_head: str = "linear",
        ctc_proj_size: int = 256,
        ctc_lstm_layers: int = 2,
        ctc_blank_id: int = 0,
        ctc_loss_reduction: str = "mean",
        ctc_zero_infinity: bool = True,
        vocab_size: int | None = None,
        frame_lstm_hidden_size: int = 512,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.feature_d, self.conv_channels, self.num_conv_layers = feature_d, conv_channels, num_conv_layers
        self.mlp_hidden_size, self.concat_conv_features = mlp_hidden_size, concat_conv_features
        self.variant = variant if variant is not None else _variant_name(concat_conv_features)
        self.hidden_dropout, self.batch_norm_eps = hidden_dropout, batch_norm_eps
        self.sampling_rate = sampling_rate
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.n_mels, self.f_min, self.f_max = n_mels, f_min, f_max
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)
        self.stats_provenance, self.inference_chunk_frames = stats_provenance, inference_chunk_frames
        self.use_weighted_layer_sum = use_weighted_layer_sum
        self.freeze_base_model = freeze_base_model
        self.classifier_proj_size = classifier_proj_size
        self.classifier_slots = list(classifier_slots) if classifier_slots is not None else None
        self.classifier_head = classifier_head
        self.ctc_head, self.ctc_proj_size, self.ctc_lstm_layers = ctc_head, ctc_proj_size, ctc_lstm_layers
        self.ctc_blank_id, self.ctc_loss_reduction = ctc_blank_id, ctc_loss_reduction
        self.ctc_zero_infinity, self.vocab_size = ctc_zero_infinity, vocab_size
        self.frame_lstm_hidden_size, self.initializer_range = frame_lstm_hidden_size, initializer_range
        kwargs.setdefault("custom_pipelines", copy.deepcopy(EMBEDDING_PIPELINE))
        super().__init__(**kwargs)
        self._validate_byola()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "BYOLAConfig":
        """`PretrainedConfig.from_dict`, where every `from_pretrained` hands its keyword overrides, which transformers
        sets after building the config: they are validated as the constructor's (`classifier_head="EVAR"` would give
        the SUPERB head), and a `num_labels` beside an `id2label` of another length is refused (the head would get
        `len(id2label)` outputs)."""
        num_labels, id2label = kwargs.get("num_labels"), kwargs.get("id2label")
        if num_labels is not None and id2label is not None and len(id2label) != num_labels:
            raise ValueError(
                f"num_labels={num_labels} but id2label names {len(id2label)} labels: give an id2label (and label2id) "
                "entry for every class, or leave num_labels out (it is len(id2label))."
            )
        loaded = super().from_dict(config_dict, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._validate_byola()
        return loaded

    @property
    def custom_pipelines(self) -> dict[str, Any]:
        """The pipelines a saved directory's code provides (`"byola-audio-embedding"`, `"audio-classification"`) for
        `pipeline(..., trust_remote_code=True)` without byola_hf, less the tasks byola_hf (imported) registered itself:
        transformers then uses the installed class and asks for no remote code."""
        stored = self.__dict__.get("custom_pipelines") or {}
        if not stored:
            return stored
        from transformers.pipelines import PIPELINE_REGISTRY

        registered = PIPELINE_REGISTRY.supported_tasks
        return {
            task: info
            for task, info in stored.items()
            if task not in registered or not getattr(registered[task]["impl"], "__module__", "").startswith("byola_hf")
        }

    @custom_pipelines.setter
    def custom_pipelines(self, value: dict[str, Any]) -> None:
        self.__dict__["custom_pipelines"] = value

    def _validate_byola(self) -> None:
        self._validate_network()
        self._validate_front_end()
        self._validate_statistics_and_heads()

    def _validate_network(self) -> None:
        """Sizes are positive integers and the variant matches the architecture flags."""
        for name in (
            "feature_d",
            "conv_channels",
            "num_conv_layers",
            "mlp_hidden_size",
            "sampling_rate",
            "n_fft",
            "win_length",
            "hop_length",
            "n_mels",
        ):
            value = getattr(self, name)
            if value is None and name == "mlp_hidden_size":  # feature_d wide (v1)
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                or_none = " or None" if name == "mlp_hidden_size" else ""
                raise ValueError(f"BYOLAConfig.{name} must be a positive integer{or_none}, got {value!r}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"BYOLAConfig.variant must be one of {sorted(VARIANTS)}, got {self.variant!r}.")
        if self.variant != _variant_name(self.concat_conv_features):
            raise ValueError(
                f"BYOLAConfig.variant={self.variant!r} does not match "
                f"concat_conv_features={self.concat_conv_features}: "
                f"{_variant_name(True)} concatenates the conv features to the MLP output, {_variant_name(False)} does "
                "not. Use BYOLAConfig.from_variant(name) for a consistent config."
            )
        if self.fc_output_size <= 0:
            raise ValueError(
                f"BYOLAConfig.feature_d ({self.feature_d}) must exceed the conv features it concatenates "
                f"({self.conv_hidden_sizes[-1]}) when concat_conv_features=True."
            )

    def _validate_front_end(self) -> None:
        """The STFT, the mel band edges, the pooling and the dropout agree with each other."""
        if self.win_length > self.n_fft:
            raise ValueError(f"BYOLAConfig.win_length ({self.win_length}) must not exceed n_fft ({self.n_fft}).")
        if not 0 <= self.f_min < self.f_max <= self.sampling_rate / 2:
            raise ValueError(
                f"BYOLAConfig needs 0 <= f_min < f_max <= sampling_rate / 2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sampling_rate={self.sampling_rate}."
            )
        if self.n_mels % self.time_downsampling != 0:
            raise ValueError(
                f"BYOLAConfig.n_mels ({self.n_mels}) must be divisible by 2**num_conv_layers "
                f"({self.time_downsampling})."
            )
        if not 0.0 <= self.hidden_dropout < 1.0:
            raise ValueError(f"BYOLAConfig.hidden_dropout must be in [0, 1), got {self.hidden_dropout}.")

    def _validate_statistics_and_heads(self) -> None:
        """Both statistics or neither (valid numbers), and the heads' options from their choices."""
        if (self.mean is None) != (self.std is None):
            raise ValueError(
                f"BYOLAConfig needs both normalisation statistics or neither, got mean={self.mean}, std={self.std}."
            )
        if self.mean is not None:
            check_statistics(self.mean, self.std)
        if self.ctc_head not in ("linear", "bilstm"):
            raise ValueError(f"BYOLAConfig.ctc_head must be 'linear' or 'bilstm', got {self.ctc_head!r}.")
        if self.ctc_loss_reduction not in ("mean", "sum"):
            raise ValueError(
                f"BYOLAConfig.ctc_loss_reduction must be 'mean' or 'sum', got {self.ctc_loss_reduction!r}."
            )
        if self.classifier_head not in CLASSIFIER_HEADS:
            raise ValueError(
                f"BYOLAConfig.classifier_head must be one of {CLASSIFIER_HEADS}, got {self.classifier_head!r}."
            )
        if self.classifier_head == "evar" and (self.use_weighted_layer_sum or self.classifier_slots):
            raise ValueError(
                "BYOLAConfig.classifier_head='evar' classifies the clip embedding (pooler_output): set "
                "use_weighted_layer_sum=False and no classifier_slots."
            )
        if self.classifier_slots is not None and (
            not self.classifier_slots or any(not isinstance(n, int) or n < 1 for n in self.classifier_slots)
        ):
            raise ValueError(
                f"BYOLAConfig.classifier_slots must be positive class counts, got {self.classifier_slots}."
            )

    @classmethod
    def from_variant(cls, variant: str, **kwargs) -> "BYOLAConfig":
        """The config of a published network: `"AudioNTT2020"` (BYOL-A v1, `feature_d` 512/1024/2048, default 2048) or
        `"AudioNTT2022"` (v2, 3072-d). `kwargs` override any field (statistics, head options, `feature_d`)."""
        if variant not in VARIANTS:
            raise ValueError(f"Unknown BYOL-A variant {variant!r}: choose one of {sorted(VARIANTS)}.")
        return cls(**{**VARIANTS[variant], **kwargs})

    @property
    def mlp_sizes(self) -> tuple[int, int]:
        """Output widths of the two fully connected layers."""
        return (self.mlp_hidden_size or self.feature_d, self.fc_output_size)

    @property
    def fc_output_size(self) -> int:
        """Width of the second fully connected layer: `feature_d`, less the concatenated conv features for v2."""
        return self.feature_d - self.conv_hidden_sizes[-1] if self.concat_conv_features else self.feature_d

    @property
    def frames_per_second(self) -> float:
        """Output frames per second of audio: `sampling_rate / (hop_length * 2**num_conv_layers)` (12.5 v1, 25 v2)."""
        return self.sampling_rate / (self.hop_length * self.time_downsampling)

    def frame_centers_ms(self, frames: int) -> list[float]:
        """Centre in milliseconds of each of `frames` output frames: output frame `t` pools log-mel frames
        `t * D ... t * D + D - 1` (`D = 2**num_conv_layers`), and log-mel frame `k` is centred on sample
        `k * hop_length` (80 t + 35 ms for v1, 40 t + 15 ms for v2)."""
        offset = (self.time_downsampling - 1) / 2 * self.hop_length / self.sampling_rate * 1000.0
        return [t * 1000.0 / self.frames_per_second + offset for t in range(frames)]

    @property
    def time_downsampling(self) -> int:
        """Mel frames per output frame: each conv block halves time (and frequency)."""
        return 2**self.num_conv_layers

    @property
    def conv_hidden_sizes(self) -> list[int]:
        """Width of each conv block's output flattened over (channels, mel bins)."""
        return [self.conv_channels * (self.n_mels // 2 ** (i + 1)) for i in range(self.num_conv_layers)]

    @property
    def layer_hidden_size(self) -> int:
        """Common width of the `hidden_states`, each zero-padded to it: the widest layer's, so that no layer is cut
        (the original layered upstream pads every layer to `feature_d`, too narrow for the first conv block's 2048
        values at 64 mel bins when `feature_d` is 512 or 1024)."""
        return max([self.feature_d, *self.conv_hidden_sizes, *self.mlp_sizes])

    @property
    def num_hidden_layers(self) -> int:
        """Number of entries in `hidden_states`: one per conv block, the two fully connected layers, and for v2 the
        concatenated output."""
        return self.num_conv_layers + 2 + int(self.concat_conv_features)

    @property
    def min_samples(self) -> int:
        """Fewest waveform samples the model takes (see [`minimum_samples`]): 1120 at 16 kHz for v1, 513 for v2."""
        return minimum_samples(self.time_downsampling, self.hop_length, self.n_fft)

    @property
    def has_statistics(self) -> bool:
        return self.mean is not None and self.std is not None

    def require_statistics(self, subject: str = "This BYOL-A model") -> None:
        """Raise the one `ValueError` for a model without task statistics, its sentence starting with `subject`."""
        if not self.has_statistics:
            raise ValueError(
                f"{subject} has no normalisation statistics (config.mean / config.std are None). BYOL-A normalises "
                "log-mels with the mean and std of the downstream task's data: compute them with `byola-compute-stats "
                "--model_name_or_path MODEL_DIR --dataset_name DATASET --output_dir OUT`, or set config.mean and "
                "config.std to known values."
            )


# Saved with every config so that a directory's remote code includes BYOL-A's pipelines (pipelines.py): the
# embedding pipeline, and the audio-classification one, which resamples inputs at other rates and decodes files
# without ffmpeg (transformers' stock class would take a 48 kHz array as 16 kHz).
EMBEDDING_PIPELINE = {
    "byola-audio-embedding": {"impl": "pipelines.BYOLAAudioEmbeddingPipeline", "pt": ["AutoModel"], "type": "audio"},
    "audio-classification": {
        "impl": "pipelines.BYOLAAudioClassificationPipeline",
        "pt": ["AutoModelForAudioClassification"],
        "type": "audio",
    },
}
# The published networks: BYOL-A v1 (Niizumi et al., IJCNN 2021) and v2 (TASLP 2023).
VARIANTS: dict[str, dict[str, Any]] = {
    "AudioNTT2020": {"num_conv_layers": 3, "feature_d": 2048, "mlp_hidden_size": None, "concat_conv_features": False},
    "AudioNTT2022": {"num_conv_layers": 2, "feature_d": 3072, "mlp_hidden_size": 2048, "concat_conv_features": True},
}


def _variant_name(concat_conv_features: bool) -> str:
    return "AudioNTT2022" if concat_conv_features else "AudioNTT2020"


def minimum_samples(time_downsampling: int, hop_length: int, n_fft: int) -> int:
    """Fewest waveform samples that give one output frame, `(time_downsampling - 1) * hop_length` (frames are
    `(1 + samples // hop_length) // time_downsampling`), and that the centred STFT's reflect padding accepts,
    `n_fft // 2 + 1`. The one rule behind `BYOLAConfig.min_samples` and `BYOLAFeatureExtractor.min_samples`."""
    return max((time_downsampling - 1) * hop_length, n_fft // 2 + 1)


def check_trained_head(config: BYOLAConfig, head: str, source: object, use: str, fix: str) -> None:
    """Refuse to `use` a model (`source`, for the message) as a trained `head` (a class name) unless it was saved as
    one (`config.architectures`): a head loaded from an encoder folder is freshly drawn, and its scores are those of
    random weights. The one check of every place that takes a model's head as trained."""
    if head not in (config.architectures or []):
        saved_as = ", ".join(config.architectures or ["an encoder"])
        raise ValueError(
            f"{use} {source} as it is, and it has no trained {head} head (it was saved as {saved_as}): {fix}"
        )


# How to pass a model's encoder without its trained head: every refusal of a model whose head must not be the start.
ENCODER_ALONE = (
    "pass the encoder it was trained from, or save its encoder alone (BYOLAModel.from_pretrained(...).save_pretrained"
    "(DIR)) and pass DIR."
)


def check_head_fits(config: BYOLAConfig, head: str, head_kwargs: dict[str, Any], source: object) -> None:
    """Refuse to train or evaluate a `head` (a class name) for `head_kwargs` (its labels, slots, vocabulary size...)
    from a model (`source`, for the message) saved with a trained `head` for other ones: loaded, the head would start
    from that one, its outputs read as this task's classes (or fail on their sizes). A model saved as an encoder or
    with another kind of head gets its `head` freshly drawn."""
    if head not in (config.architectures or []):
        return
    canonical = functools.partial(json.dumps, sort_keys=True, default=str)
    differs = [key for key, value in head_kwargs.items() if canonical(getattr(config, key, None)) != canonical(value)]
    if differs:
        raise ValueError(
            f"{source} holds a trained {head} head for other {', '.join(differs)} than this task's: {ENCODER_ALONE}"
        )


def statistics_source(provenance: dict[str, Any]) -> str:
    """The data `config.stats_provenance` names, as cards state it: the dataset, its configuration and its folder
    (`audiofolder (mini/ks)`: `audiofolder` alone does not tell one task's statistics from another's)."""
    details = [str(provenance[key]) for key in ("config", "data_dir") if provenance.get(key)]
    return f"{provenance.get('dataset')}" + (f" ({', '.join(details)})" if details else "")


def warn_if_statistics_of_other_units(config: BYOLAConfig, unit_seconds: float | None) -> None:
    """Warn when `config`'s statistics were given by hand (`byola-convert --mean/--std`: another corpus's, such as
    VoxCeleb1's) rather than computed on the task, or computed over clips cut to another length (`stats_provenance`'s
    `unit_seconds`, `None` for whole clips) than the run's `unit_seconds`: EVAR computes them on each task's training
    clips, on the same units, as padding or cropping moves the log-mel distribution. Compared in samples (0.99999 s
    and 1 s are 16000 samples)."""
    if (config.stats_provenance or {}).get("method") == "given":
        logger.warning(
            "The model's statistics were given by hand (byola-convert --mean/--std), not computed from the task's "
            "training clips as EVAR computes each task's: byola-compute-stats computes them (docs/statistics.md)."
        )
        return
    computed = (config.stats_provenance or {}).get("unit_seconds", unit_seconds)  # not recorded: nothing to say
    if unit_samples(computed, config.sampling_rate, 0) != unit_samples(unit_seconds, config.sampling_rate, 0):
        computed_over, read = (f"clips cut to {s:g} s" if s else "whole clips" for s in (computed, unit_seconds))
        logger.warning(
            f"The statistics were computed over {computed_over}, this run reads {read}: pass the same "
            "--unit_seconds to byola-compute-stats, as EVAR does."
        )


def check_statistics_kept(
    folder: str | os.PathLike, mean: float | None, std: float | None, since: str, overwrite: bool = True
) -> None:
    """Refuse to write a model again into `folder` (the run's own) when its saved statistics are no longer `mean` and
    `std`, those the run writes: byola-compute-stats saved a task's there in place `since` the run (e.g. "it was
    converted"), and the run would silently put its own back. `overwrite`: the command has --overwrite_output_dir."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        return
    saved = BYOLAConfig.from_pretrained(folder)
    if (saved.mean, saved.std) != (mean, std):
        source = statistics_source(saved.stats_provenance or {})
        raise ValueError(
            f"{folder} holds statistics computed since {since} (mean {saved.mean}, std {saved.std}, on {source}), "
            "which this run would replace: write into another folder"
            + (", or pass --overwrite_output_dir to replace them." if overwrite else ".")
        )


def check_statistics(mean: Any, std: Any) -> None:
    """Raise a `ValueError` unless `mean` is a finite number and `std` a finite positive number, both usable in the
    float32 the model computes in (a std below float32's smallest normal number would turn every input infinite)."""
    float32 = torch.finfo(torch.float32)
    for name, value in (("mean", mean), ("std", std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"The normalisation statistic `{name}` must be a finite number, got {value!r}.")
        if abs(value) > float32.max:
            raise ValueError(f"The normalisation statistic `{name}` is beyond float32's range: {value!r}.")
    if std <= 0:
        raise ValueError(f"The normalisation statistic `std` must be positive, got {std!r}.")
    if std < float32.tiny:
        raise ValueError(
            f"The normalisation statistic `std` is {std!r}, below float32's smallest normal number "
            f"({float32.tiny:.3g}): normalising by it overflows; recompute the statistics on audio that is not silent."
        )


# The original configs' values that differ between BYOL-A v1 (config.yaml, train.py) and v2 (config_v2.yaml,
# train_v2.py); everything else is shared.
VARIANT_PRETRAINING = {
    "AudioNTT2020": {"mixup_ratio": 0.4, "fader_gain": 0.0, "learning_rate": 3e-4, "pad_both_ends": True},
    "AudioNTT2022": {"mixup_ratio": 0.2, "fader_gain": 1.0, "learning_rate": 1e-4, "pad_both_ends": False},
}


class BYOLAPreTrainingConfig(BYOLAConfig):
    r"""
    [`~byola_hf.BYOLAConfig`] of the encoder plus what BYOL-A pre-training needs. `mean` and `std` are the
    statistics of the pre-training data, used to pre-normalise every log-mel crop before the augmentations.

    Args:
        projection_size (`int`, *optional*, defaults to 256): output of the projector and the predictor.
        projection_hidden_size (`int`, *optional*, defaults to 4096): their hidden BatchNorm layer.
        ema_decay (`float`, *optional*, defaults to 0.99): `target = ema_decay * target + (1 - ema_decay) * online`.
        mixup_ratio (`float`, *optional*): largest background share of mixup; 0.4 (v1) or 0.2 (v2) by default.
        mixup_memory_size (`int`, *optional*, defaults to 2048): the mixup FIFO's length.
        fader_gain (`float`, *optional*): the linear fader's largest gain; 0 (none, v1) or 1.0 (v2) by default.
        crop_seconds (`float`, *optional*, defaults to 0.95): length of a training crop (96 log-mel frames).
        kwargs: the encoder's [`~byola_hf.BYOLAConfig`] fields.
    """

    model_type = PRETRAINING_MODEL_TYPE
    _auto_class = None  # not a model directory's config: nothing to copy for remote code

    def __init__(
        self,
        projection_size: int = 256,
        projection_hidden_size: int = 4096,
        ema_decay: float = 0.99,
        mixup_ratio: float | None = None,
        mixup_memory_size: int = 2048,
        fader_gain: float | None = None,
        crop_seconds: float = 0.95,
        **kwargs,
    ):
        super().__init__(**kwargs)
        defaults = VARIANT_PRETRAINING[self.variant]
        self.projection_size = projection_size
        self.projection_hidden_size = projection_hidden_size
        self.ema_decay = ema_decay
        self.mixup_ratio = defaults["mixup_ratio"] if mixup_ratio is None else mixup_ratio
        self.mixup_memory_size = mixup_memory_size
        self.fader_gain = defaults["fader_gain"] if fader_gain is None else fader_gain
        self.crop_seconds = crop_seconds
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {self.ema_decay}.")
        for name in ("projection_size", "projection_hidden_size", "mixup_memory_size"):
            size = getattr(self, name)
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"{name} must be a positive integer, got {size!r}.")
        if not 0.0 <= self.mixup_ratio <= 1.0:
            raise ValueError(f"mixup_ratio must be in [0, 1], got {self.mixup_ratio}.")
        if not 0.0 <= self.fader_gain < float("inf"):
            raise ValueError(f"fader_gain must be a finite number of at least 0, got {self.fader_gain}.")
        if self.crop_frames < self.time_downsampling:
            raise ValueError(f"crop_seconds={crop_seconds} gives fewer log-mel frames than one output frame.")

    @classmethod
    def from_encoder_config(cls, config: BYOLAConfig, **kwargs) -> "BYOLAPreTrainingConfig":
        """The pre-training config of an encoder (its network and front-end; statistics from `kwargs` if given)."""
        fields = {key: value for key, value in config.to_dict().items() if key in ENCODER_FIELDS}
        return cls(**{**fields, **kwargs})

    def encoder_config(self, **kwargs) -> BYOLAConfig:
        """The encoder's own [`~byola_hf.BYOLAConfig`] (no pre-training fields), with `kwargs` overriding."""
        fields = {key: value for key, value in self.to_dict().items() if key in ENCODER_FIELDS}
        return BYOLAConfig(**{**fields, **kwargs})

    @property
    def crop_samples(self) -> int:
        """Waveform samples of a crop: `int(crop_seconds * sampling_rate)`, as the original's `unit_samples`."""
        return int(self.crop_seconds * self.sampling_rate)

    @property
    def crop_frames(self) -> int:
        """Log-mel frames of a crop (96 for 0.95 s at a 10 ms hop)."""
        return 1 + self.crop_samples // self.hop_length

    @property
    def pad_both_ends(self) -> bool:
        """Short clips: v1 pads both ends, v2 the end only."""
        return VARIANT_PRETRAINING[self.variant]["pad_both_ends"]


# The encoder's fields: those BYOLAConfig writes, less what PretrainedConfig adds and the auto_map.
# `converted_from` (the NTT file a model's weights descend from) follows an encoder through pre-training: a model
# trained on from NTT's weights is under NTT's licence too (model cards and pushes say so).
ENCODER_FIELDS = (
    frozenset(BYOLAConfig().to_diff_dict())
    | frozenset(name for name in BYOLAConfig.__init__.__code__.co_varnames if name not in ("self", "kwargs"))
    | {"converted_from"}
)


__all__ = ["PRETRAINING_MODEL_TYPE", "BYOLAConfig", "BYOLAPreTrainingConfig"]

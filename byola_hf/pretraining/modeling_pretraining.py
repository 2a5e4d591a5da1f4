"""BYOL-A pre-training: the BYOL learner of the original code as a transformers model.

The original trains with lucidrains' byol-pytorch (commit 2aa84ee, patched by BYOL-A): an online network (encoder,
projector, predictor) and a target network (encoder, projector), the target an exponential moving average of the
online one. [`BYOLAForPreTraining`] holds both around [`~byola_hf.BYOLAModel`] encoders, the augmentations with their
memory bank ([`~byola_hf.pretraining.augmentations.BYOLAAugmentation`]), and saves the online encoder as a plain
BYOL-A model directory.
"""

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from ..configuration_byola import BYOLAConfig, BYOLAPreTrainingConfig, PrivatePushMixin
from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..inference_byola import TrainingKernels, select_training_kernels
from ..modeling_byola import BYOLAModel
from .augmentations import BYOLAAugmentation


@dataclass
class BYOLAPreTrainingOutput(ModelOutput):
    """
    Output of [`BYOLAForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): BYOL's symmetric loss, `2 - 2 cos` both ways, mean over the batch.
        online_predictions (`torch.FloatTensor` of shape `(2, batch, projection_size)`): the predictor's outputs
            for view one and view two.
        target_projections (`torch.FloatTensor` of shape `(2, batch, projection_size)`): the target's projections.
    """

    loss: torch.FloatTensor | None = None
    online_predictions: torch.FloatTensor | None = None
    target_projections: torch.FloatTensor | None = None


class BYOLAProjection(nn.Module):
    """BYOL's projector and predictor: `Linear(d, hidden) -> BatchNorm1d -> ReLU -> Linear(hidden, out)`."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.batch_norm = nn.BatchNorm1d(hidden_size)
        self.activation = nn.ReLU()
        self.output = nn.Linear(hidden_size, output_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, input_size)` -> `(batch, output_size)`."""
        return self.output(self.activation(self.batch_norm(self.dense(hidden_states))))


class BYOLAForPreTraining(PrivatePushMixin, PreTrainedModel):
    """BYOL-A's learner: `forward(view_one, view_two)` gives BYOL's loss of two normalised views, or
    `forward(input_features=log_mels)` makes the views of raw log-mel crops first (pre-normalised with `config.mean` /
    `config.std`, then [`~byola_hf.pretraining.augmentations.BYOLAAugmentation`]). Call [`update_target`] after each
    optimizer step.

    The encoders see the views as they are: they run with statistics 0 and 1 inside, and [`encoder_model`] gives the
    online encoder with the pre-training statistics, as a plain [`~byola_hf.BYOLAModel`]."""

    config_class = BYOLAPreTrainingConfig
    config: BYOLAPreTrainingConfig
    base_model_prefix = "byola_pretraining"
    main_input_name = "input_features"
    supports_gradient_checkpointing = False
    # None: the device's fastest training kernels; "reference" forces the original's layout and rounding.
    training_kernels: str | None = None

    def __init__(self, config: BYOLAPreTrainingConfig | BYOLAConfig):
        if not isinstance(config, BYOLAPreTrainingConfig):
            if not isinstance(config, BYOLAConfig):
                raise TypeError(
                    f"BYOLAForPreTraining takes a BYOLAPreTrainingConfig (or an encoder's BYOLAConfig), got "
                    f"{type(config).__name__}."
                )
            # An encoder's config: the learner of that network with BYOL-A's pre-training defaults.
            config = BYOLAPreTrainingConfig.from_encoder_config(config)
        super().__init__(config)
        identity = config.encoder_config(mean=0.0, std=1.0, stats_provenance=None)
        self.encoder = BYOLAModel(identity)
        self.projector = BYOLAProjection(config.feature_d, config.projection_hidden_size, config.projection_size)
        self.predictor = BYOLAProjection(config.projection_size, config.projection_hidden_size, config.projection_size)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        self.augmentation = BYOLAAugmentation(
            config.mixup_ratio, config.mixup_memory_size, config.fader_gain, (1, config.n_mels, config.crop_frames)
        )
        self.post_init()
        # post_init hands a nested PreTrainedModel to its own `_init_weights`: BYOLAModel's gives transformers'
        # normal(0.02) linears with zero biases, meant for fine-tuning heads. The original starts from PyTorch's.
        self.encoder.apply(self._init_weights)
        self.reset_target()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation, as the original used."""
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)):
            module.reset_parameters()

    @torch.no_grad()
    def reset_target(self) -> None:
        """Make the target an exact copy of the online encoder and projector (parameters and buffers), frozen."""
        for online, target in ((self.encoder, self.target_encoder), (self.projector, self.target_projector)):
            target.load_state_dict(online.state_dict())
            target.requires_grad_(False)

    @torch.no_grad()
    def update_target(self) -> None:
        """The EMA step: `target = ema_decay * target + (1 - ema_decay) * online`, parameters only (buffers keep the
        target's own running statistics, as the original)."""
        decay = self.config.ema_decay
        online = [*self.encoder.parameters(), *self.projector.parameters()]
        target = [*self.target_encoder.parameters(), *self.target_projector.parameters()]
        for target_parameter, online_parameter in zip(target, online):
            target_parameter.copy_(target_parameter * decay + (1.0 - decay) * online_parameter)

    def embed(self, encoder: BYOLAModel, views: torch.Tensor, kernels: TrainingKernels | None = None) -> torch.Tensor:
        """Clip embeddings `(batch, feature_d)` of views `(batch, 1, n_mels, frames)`: the max + mean over time of the
        encoder's output, `encoder(views[:, 0]).pooler_output`. In training mode it is computed here in the same order
        of operations, except that each conv block pools before its ReLU (they commute, so every value and gradient is
        bit for bit the same, and the ReLU runs on a quarter of the activation), through the device's training kernels
        ([`~byola_hf.inference_byola.select_training_kernels`]; `kernels` gives the set [`forward`] shares between the
        online and the target encoder)."""
        if not self.training:
            return encoder(views[:, 0], check_values=False).pooler_output
        kernels = kernels or select_training_kernels(views, self.training_kernels)
        hidden = kernels.conv_blocks(encoder.conv_blocks, views)
        batch, channels, mels, frames = hidden.shape
        conv_features = hidden.permute(0, 3, 2, 1).reshape(batch, frames, mels * channels)  # mel-major
        fc1 = nn.functional.relu(encoder.fc1(conv_features))
        output = nn.functional.relu(encoder.fc2(encoder.dropout(fc1)))
        if encoder.config.concat_conv_features:
            output = torch.cat([conv_features, output], dim=-1)
        return output.amax(1) + output.mean(1)

    def forward(
        self,
        view_one: torch.Tensor | None = None,
        view_two: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> BYOLAPreTrainingOutput | tuple:
        r"""
        Args:
            view_one, view_two (`torch.FloatTensor` of shape `(batch, 1, n_mels, frames)`): two augmented views,
                normalised (the encoders do not normalise them again).
            input_features (`torch.FloatTensor` of shape `(batch, n_mels, crop_frames)`): raw log-mel crops instead
                of views: they are pre-normalised and augmented here (needs `config.mean` and `config.std`).

        Returns:
            [`BYOLAPreTrainingOutput`]; a tuple with `return_dict=False`.
        """
        if input_features is not None:
            view_one, view_two = self.make_views(input_features)
        if view_one is None or view_two is None:
            raise ValueError("BYOLAForPreTraining needs view_one and view_two, or input_features.")
        views, kernels = (view_one, view_two), select_training_kernels(view_one, self.training_kernels)
        predictions = [self.predictor(self.projector(self.embed(self.encoder, view, kernels))) for view in views]
        with torch.no_grad():
            targets = [self.target_projector(self.embed(self.target_encoder, view, kernels)) for view in views]
        loss = (byol_loss(predictions[0], targets[1]) + byol_loss(predictions[1], targets[0])).mean()
        output = BYOLAPreTrainingOutput(loss, torch.stack(predictions), torch.stack(targets))
        return output if return_dict is not False else output.to_tuple()

    def make_views(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two normalised views `(batch, 1, n_mels, frames)` of raw log-mel crops `(batch, n_mels, frames)`."""
        if not self.config.has_statistics:
            raise ValueError("Pre-training from log-mels needs the data's statistics in config.mean / config.std.")
        # In float32 even under bf16 autocast: the crop's interpolation is a matmul that autocast would round.
        with torch.autocast(input_features.device.type, enabled=False):
            normalised = (input_features.float() - self.config.mean) / self.config.std
            return self.augmentation(normalised[:, None])

    def encoder_model(self) -> BYOLAModel:
        """The online encoder as a plain [`~byola_hf.BYOLAModel`] with the pre-training statistics (on CPU)."""
        model = BYOLAModel(self.config.encoder_config())
        model.load_state_dict({key: value.detach().cpu() for key, value in self.encoder.state_dict().items()})
        return model.eval()

    def save_encoder(self, save_directory: str | Path, **kwargs: Any) -> BYOLAModel:
        """Save [`encoder_model`] as a BYOL-A model directory (config with the statistics, weights, remote code,
        the feature extractor that `AutoFeatureExtractor` and the pipelines load)."""
        model = self.encoder_model()
        model.save_pretrained(save_directory, **kwargs)
        BYOLAFeatureExtractor.from_model_config(model.config).save_pretrained(save_directory)
        return model

    def load_encoder(self, encoder: BYOLAModel) -> None:
        """Start from a trained encoder (further pre-training): its weights into the online and target encoders."""
        self.encoder.load_state_dict(encoder.state_dict())
        self.target_encoder.load_state_dict(encoder.state_dict())

    @torch.no_grad()
    def load_original_learner_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the state of the original code's BYOL learner (`online_encoder.net.*`,
        `online_encoder.projector.net.*`, `online_predictor.net.*`, `target_encoder.*`; the duplicate `net.*` is
        ignored), so runs of the original can be continued here. Raises a `ValueError` naming missing or unexpected
        keys."""
        mapped: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            if key.startswith("net."):
                continue
            name = original_learner_key(key, self.config)
            if name is None:
                raise ValueError(f"Unexpected key in the original learner's state: {key!r}.")
            mapped[name] = value
        own = {key for key in self.state_dict() if not key.startswith("augmentation.")}
        missing, unexpected = sorted(own - set(mapped)), sorted(set(mapped) - own)
        if missing or unexpected:
            raise ValueError(
                f"Original learner state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}."
            )
        self.load_state_dict(mapped, strict=False)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`2 - 2 cos(prediction, target)` per example, `(batch,)`."""
    prediction = nn.functional.normalize(prediction, dim=-1, p=2)
    target = nn.functional.normalize(target, dim=-1, p=2)
    return 2 - 2 * (prediction * target).sum(dim=-1)


# The original networks' Sequential indices: AudioNTT2020/2022 `features.{4k, 4k+1}` are conv block k's conv and
# BatchNorm, `fc.0` / `fc.3` the two linear layers; BYOL's MLP `net.0`, `net.1`, `net.3`.
PROJECTION_INDEX = {"0": "dense", "1": "batch_norm", "3": "output"}
FC_INDEX = {"0": "fc1", "3": "fc2"}


def original_learner_key(key: str, config: BYOLAConfig) -> str | None:
    """Our name of one key of the original learner's state dict, or `None` when it has no place here."""
    prefixes = {
        "online_encoder.projector.net.": "projector.",
        "online_predictor.net.": "predictor.",
        "target_encoder.projector.net.": "target_projector.",
    }
    for prefix, ours in prefixes.items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix) :].partition(".")
            return f"{ours}{PROJECTION_INDEX[index]}.{rest}" if index in PROJECTION_INDEX else None
    for prefix, ours in (("online_encoder.net.", "encoder."), ("target_encoder.net.", "target_encoder.")):
        if key.startswith(prefix):
            parts = key[len(prefix) :].split(".", 2)
            if len(parts) < 3 or not parts[1].isdigit():
                return None
            part, index, rest = parts
            if part == "features":
                block, layer = divmod(int(index), 4)
                kind = {0: "conv", 1: "batch_norm"}.get(layer)
                return f"{ours}conv_blocks.{block}.{kind}.{rest}" if kind and block < config.num_conv_layers else None
            if part == "fc" and index in FC_INDEX:
                return f"{ours}{FC_INDEX[index]}.{rest}"
    return None


__all__ = ["BYOLAForPreTraining", "BYOLAPreTrainingOutput", "BYOLAProjection", "byol_loss"]

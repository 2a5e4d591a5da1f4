"""The linear classifier of EVAR's linear evaluation (nttcslab/eval-audio-repr `lineareval.py`, `TorchMLPClassifier2`
with no hidden layer), written from its facts:

- features standardised with the mean and (population) std of the training part, a constant feature only centred;
- one `nn.Linear`, initialised by torch after `torch.manual_seed(seed)`;
- Adam (betas 0.9/0.999, eps 1e-8, weight decay 1e-8) at `learning_rate`, mini-batches of `min(200, n)` drawn as
  `DataLoader(shuffle=True)` draws them from torch's global generator;
- the loss `-mean(one_hot(y) * log_softmax(logits))` (cross-entropy divided by the number of classes);
- after each epoch the validation accuracy (argmax of the softmax); one equal to the best so far counts as an
  improvement (`>=`) and keeps that epoch's weights; training stops at the `patience`-th epoch in a row without one
  (`patience=0`: never early); the best epoch's weights are the result.

One difference: EVAR one-hot encodes labels with scikit-learn's `LabelBinarizer`, which gives a single column for two
classes; here every task, binary ones included, gets one output and one one-hot column per class.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..modeling_byola import evar_loss


# EVAR's `batch_size="auto"`: min(200, n).
MAX_BATCH_SIZE = 200
ADAM_WEIGHT_DECAY = 1e-8
# EVAR holds out this share of the training part for early stopping when a task has no validation split.
VALIDATION_FRACTION = 0.1


@dataclass
class TrainingSettings:
    """What the classifier is trained with (EVAR's BYOL-A config by default), and the share of the training part held
    out for early stopping when a task has no validation split."""

    learning_rate: float = 3e-4
    epochs: int = 200
    patience: int = 20
    validation_fraction: float = VALIDATION_FRACTION
    device: str | torch.device | None = None


@dataclass
class LinearRun:
    """A trained classifier (best validation epoch's weights), that epoch (0-based) and the epochs run."""

    layer: nn.Linear
    best_epoch: int
    epochs_run: int
    best_validation_accuracy: float


def standardize(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """`train_x` and `others` as float32, standardised with `train_x`'s per-feature mean and population std
    (computed in float64; a constant feature is only centred), as scikit-learn's `StandardScaler`."""
    train64 = train_x.astype(np.float64)
    mean, std = train64.mean(0), train64.std(0)
    std[std == 0] = 1.0
    return [((x.astype(np.float64) - mean) / std).astype(np.float32) for x in (train_x, *others)]


def predict(layer: nn.Linear, x: np.ndarray) -> np.ndarray:
    """Class indices of standardised features `x` `(n, d)`, computed on the layer's device."""
    with torch.no_grad():
        return layer(torch.from_numpy(x).to(layer.weight.device)).softmax(-1).argmax(-1).cpu().numpy()


def draw_seed() -> int:
    """One number from torch's global generator, as a DataLoader takes one per iteration for its workers' seed and
    a shuffling sampler one more for its permutation."""
    return int(torch.empty((), dtype=torch.int64).random_().item())


def epoch_batches(num_examples: int, batch_size: int) -> list[torch.Tensor]:
    """One epoch's shuffled mini-batches, drawn from the global generator as `DataLoader(shuffle=True)` draws them."""
    draw_seed()  # the loader's worker base seed
    permutation = torch.randperm(num_examples, generator=torch.Generator().manual_seed(draw_seed()))
    return list(permutation.split(batch_size))


class EarlyStopping:
    """EVAR's rule: `>=` the best validation accuracy (starting from 0) is an improvement; the `patience`-th epoch
    in a row without one stops (never with `patience=0`)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_accuracy, self.best_epoch, self.best_state, self.wait = 0.0, 0, None, 0

    def step(self, epoch: int, accuracy: float, layer: nn.Linear) -> bool:
        """Record the epoch; whether to stop."""
        if accuracy >= self.best_accuracy:
            self.best_accuracy, self.best_epoch, self.wait = accuracy, epoch, 1
            self.best_state = {name: value.clone() for name, value in layer.state_dict().items()}
            return False
        stop = self.patience > 0 and self.wait >= self.patience
        self.wait += 1
        return stop


def train_linear(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    num_classes: int,
    seed: int,
    settings: TrainingSettings | None = None,
) -> LinearRun:
    """Train EVAR's linear classifier (see the module doc) on standardised float32 features `(n, d)` and int64 labels,
    with `settings` (EVAR's BYOL-A config when `None`; `validation_fraction` is not used here), on `settings.device`
    (CPU by default; the initial weights and the batches are drawn on the CPU either way, as EVAR draws them); torch's
    global random state is restored afterwards."""
    settings = TrainingSettings() if settings is None else settings
    device = torch.device(settings.device or "cpu")
    inputs, targets = torch.from_numpy(train_x).to(device), torch.from_numpy(train_y).to(device)
    valid_inputs, valid_targets = torch.from_numpy(valid_x).to(device), torch.from_numpy(valid_y).to(device)
    batch_size = min(MAX_BATCH_SIZE, len(inputs))
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only: torch.manual_seed would also reseed CUDA's, which fork_rng(devices=[]) does not
        # restore, and a probe during pre-training on a GPU would replay the augmentations' draws after it.
        torch.default_generator.manual_seed(seed)
        layer = nn.Linear(inputs.shape[1], num_classes).to(device)
        optimizer = torch.optim.Adam(
            layer.parameters(), lr=settings.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=ADAM_WEIGHT_DECAY
        )
        stopper, epoch = EarlyStopping(settings.patience), 0
        for epoch in range(settings.epochs):
            for batch in epoch_batches(len(inputs), batch_size):
                batch = batch.to(device)
                optimizer.zero_grad()
                evar_loss(layer(inputs[batch]), targets[batch], None).backward()
                optimizer.step()
            draw_seed()  # the validation loader's worker base seed
            with torch.no_grad():
                predictions = layer(valid_inputs).softmax(-1).argmax(-1)
            if stopper.step(epoch, float((predictions == valid_targets).float().mean()), layer):
                break
    layer.load_state_dict(stopper.best_state)
    return LinearRun(layer, stopper.best_epoch, epoch + 1, stopper.best_accuracy)


def hold_out_validation(labels: np.ndarray, fraction: float, seed: int, attempts: int = 100) -> np.ndarray:
    """Sorted indices of a random `ceil(fraction * n)` examples holding every class, as EVAR draws a validation part
    when a task has none (scikit-learn's `train_test_split`, shuffled, not stratified, drawn again until every class is
    in it, at most 100 times)."""
    rng = np.random.default_rng(seed)
    count = int(np.ceil(fraction * len(labels)))
    classes = np.unique(labels)
    for _ in range(attempts):
        chosen = rng.permutation(len(labels))[:count]
        if len(np.unique(labels[chosen])) == len(classes):
            return np.sort(chosen)
    raise ValueError(
        f"No validation part of {count} of the {len(labels)} training examples held every one of the "
        f"{len(classes)} classes in {attempts} draws: some classes have too few examples; give a larger "
        "--validation_fraction or a validation split."
    )

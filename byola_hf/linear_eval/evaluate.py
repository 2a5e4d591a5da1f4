"""Linear evaluation of frozen clip embeddings, as the BYOL-A papers and the authors' EVAR package run it.

The protocol (facts from nttcslab/byol-a `evaluate.py` and nttcslab/eval-audio-repr `lineareval.py` with its BYOL-A
config): features standardised with the training split's mean and std; one linear layer (no hidden layer) trained
with Adam at learning rate 3e-4 for at most 200 epochs; early stopping when the validation accuracy has not improved
for 20 epochs, keeping the best epoch's weights; test accuracy reported, repeated over seeds as mean ± std.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..extract.extract import load_embeddings


@dataclass
class LinearEvalResult:
    """Test accuracy over seeds and the details of the first seed's run."""

    test_accuracy: float
    test_accuracy_std: float
    accuracies: list[float]
    classes: list[str]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    best_epochs: list[int]
    num_train: int
    num_validation: int
    num_test: int
    validation: str
    settings: dict = field(default_factory=dict)


def train_linear(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    classes: int,
    seed: int,
    learning_rate: float = 3e-4,
    epochs: int = 200,
    patience: int = 20,
    batch_size: int = 256,
) -> tuple[nn.Linear, int]:
    """A linear classifier on standardised features, the weights of its best validation epoch, and that epoch."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=learning_rate)
    inputs, targets = torch.from_numpy(train_x), torch.from_numpy(train_y)
    valid_inputs, valid_targets = torch.from_numpy(valid_x), torch.from_numpy(valid_y)
    best_accuracy, best_epoch, best_state = -1.0, 0, None
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(layer(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = float((layer(valid_inputs).argmax(-1) == valid_targets).float().mean())
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = {key: value.clone() for key, value in layer.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    layer.load_state_dict(best_state)
    return layer, best_epoch


def linear_eval(
    train_dir: str,
    test_dir: str,
    label_column_name: str,
    validation_dir: str | None = None,
    validation_fraction: float | None = None,
    seeds: int = 1,
    seed: int = 42,
    learning_rate: float = 3e-4,
    epochs: int = 200,
    patience: int = 20,
    output_dir: str | None = None,
) -> LinearEvalResult:
    """
    Linear evaluation over `byola-extract` outputs: `train_dir`, `test_dir` and a validation split (`validation_dir`,
    or `validation_fraction` of the training split held out, stratified, fixed by `seed`). With `output_dir`,
    writes `eval_results.json` (`test_accuracy` = the mean over seeds, `test_accuracy_std`, per-class report) and
    `confusion_matrix.png`.
    """
    train, test = load_embeddings(train_dir), load_embeddings(test_dir)
    labels = sorted({str(value) for value in train[label_column_name]})
    index = {label: position for position, label in enumerate(labels)}
    unseen = sorted({str(value) for value in test[label_column_name]} - set(labels))
    if unseen:
        raise ValueError(f"Test labels never seen in training: {', '.join(unseen[:10])}.")

    def arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(dataset["embedding"], dtype=np.float32)
        y = np.asarray([index[str(value)] for value in dataset[label_column_name]], dtype=np.int64)
        return x, y

    train_x, train_y = arrays(train)
    if validation_dir is not None:
        valid_x, valid_y = arrays(load_embeddings(validation_dir))
        validation = f"the split at {validation_dir}"
    else:
        fraction = 0.1 if validation_fraction is None else validation_fraction
        if not 0 < fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}.")
        held_out = _stratified_hold_out(train_y, fraction, seed)
        valid_x, valid_y = train_x[held_out], train_y[held_out]
        keep = np.setdiff1d(np.arange(len(train_y)), held_out)
        train_x, train_y = train_x[keep], train_y[keep]
        validation = f"{fraction:g} of the training split held out (stratified, seed {seed})"
    test_x, test_y = arrays(test)
    # Standardised with the training split's statistics, as the original protocol does.
    mean, std = train_x.mean(0), train_x.std(0)
    std[std == 0] = 1.0
    train_x, valid_x, test_x = ((x - mean) / std for x in (train_x, valid_x, test_x))

    accuracies, best_epochs, first_predictions = [], [], None
    for run in range(seeds):
        layer, best_epoch = train_linear(
            train_x, train_y, valid_x, valid_y, len(labels), seed + run, learning_rate, epochs, patience
        )
        with torch.no_grad():
            predictions = layer(torch.from_numpy(test_x)).argmax(-1).numpy()
        accuracies.append(float((predictions == test_y).mean()))
        best_epochs.append(best_epoch)
        if first_predictions is None:
            first_predictions = predictions
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (test_y, first_predictions), 1)
    result = LinearEvalResult(
        test_accuracy=float(np.mean(accuracies)),
        test_accuracy_std=float(np.std(accuracies)),
        accuracies=accuracies,
        classes=labels,
        per_class=_per_class_report(matrix, labels),
        confusion_matrix=matrix.tolist(),
        best_epochs=best_epochs,
        num_train=len(train_y),
        num_validation=len(valid_y),
        num_test=len(test_y),
        validation=validation,
        settings={
            "learning_rate": learning_rate,
            "epochs": epochs,
            "patience": patience,
            "seeds": seeds,
            "seed": seed,
            "label_column_name": label_column_name,
        },
    )
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        (output / "eval_results.json").write_text(json.dumps(asdict(result), indent=1))
        from ..tools.plots import save_confusion_matrix

        save_confusion_matrix(
            test_y,
            first_predictions,
            labels,
            output / "confusion_matrix.png",
            title="Linear evaluation confusion matrix",
        )
    return result


def _stratified_hold_out(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of about `fraction` of each class (at least one where the class has two or more examples)."""
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held_out.extend(members[:count].tolist())
    return np.sort(np.asarray(held_out, dtype=np.int64))


def _per_class_report(matrix: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    report = {}
    for position, label in enumerate(labels):
        true_positive = matrix[position, position]
        predicted, actual = matrix[:, position].sum(), matrix[position].sum()
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[label] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(actual),
        }
    return report

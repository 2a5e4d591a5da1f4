"""Linear evaluation of the encoder while it pre-trains: the papers' protocol on a small labelled dataset, so the logs
show whether pre-training helps the task (`byola-pretrain --eval_dataset_name ... --eval_label_column_name ...`)."""

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import decode_undecoded_audio
from ..feature_extraction_byola import BYOLAFeatureExtractor
from ..linear_eval.classifier import VALIDATION_FRACTION, TrainingSettings, hold_out_validation
from ..linear_eval.evaluate import Fold, run_fold
from ..modeling_byola import BYOLAModel
from ..tools.data import load_source


@dataclass
class LabelledClips:
    """Decoded clips `(samples,)` and their class indices."""

    waveforms: list[np.ndarray]
    labels: np.ndarray


@dataclass
class LinearProbeData:
    """A task's training and test clips, decoded once; `classes` are the training split's labels, sorted."""

    train: LabelledClips
    test: LabelledClips
    classes: list[str]


def load_linear_probe_data(
    dataset_name: str,
    label_column_name: str,
    sampling_rate: int,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    audio_column_name: str = "audio",
) -> LinearProbeData:
    """Decode both splits of a labelled audio dataset (refusing a missing label column or unseen test labels)."""
    splits = {}
    for split in (train_split, test_split):
        dataset = load_source(dataset_name, dataset_config_name, data_dir, split, audio_column_name, sampling_rate)
        if label_column_name not in dataset.column_names:
            raise ValueError(
                f"The evaluation dataset has no column '{label_column_name}'; its columns are "
                f"{dataset.column_names}. Pass the label column with --eval_label_column_name."
            )
        splits[split] = dataset
    classes = sorted({str(value) for value in splits[train_split][label_column_name]})
    index = {label: position for position, label in enumerate(classes)}
    unseen = sorted({str(value) for value in splits[test_split][label_column_name]} - set(classes))
    if unseen or len(classes) < 2:
        raise ValueError(f"The evaluation needs two or more classes seen in training; unseen test labels: {unseen}.")

    def clips(dataset) -> LabelledClips:
        waveforms = [decode_undecoded_audio(item, sampling_rate) for item in dataset[audio_column_name]]
        return LabelledClips(waveforms, np.array([index[str(v)] for v in dataset[label_column_name]], np.int64))

    return LinearProbeData(clips(splits[train_split]), clips(splits[test_split]), classes)


def linear_probe_data(data_args, sampling_rate: int) -> LinearProbeData | None:
    """The `--eval_dataset_name` task, decoded, or `None` without one."""
    if data_args.eval_dataset_name is None:
        return None
    if data_args.eval_label_column_name is None:
        raise ValueError("--eval_dataset_name needs --eval_label_column_name (the column of class labels).")
    try:
        return load_linear_probe_data(
            data_args.eval_dataset_name,
            data_args.eval_label_column_name,
            sampling_rate,
            data_args.eval_dataset_config_name,
            data_args.eval_data_dir,
            data_args.eval_train_split,
            data_args.eval_test_split,
            data_args.eval_audio_column_name,
        )
    except ValueError as error:  # the loaders name the training data's flags; here they are the --eval_ ones
        flags = r"--(dataset_name|dataset_config_name|data_dir|audio_column_name)\b"
        message = re.sub(flags, r"--eval_\1", str(error)).replace("--split", "--eval_train_split/--eval_test_split")
        raise ValueError(message) from None


@torch.no_grad()
def clip_embeddings(
    model: BYOLAModel, feature_extractor: BYOLAFeatureExtractor, waveforms: list[np.ndarray], batch_size: int = 16
) -> np.ndarray:
    """`(clips, feature_d)` float32 clip embeddings of `model` (in eval mode), computed on the model's device."""
    rows = []
    for start in range(0, len(waveforms), batch_size):
        inputs = feature_extractor(
            waveforms[start : start + batch_size],
            sampling_rate=feature_extractor.sampling_rate,
            return_tensors="pt",
            padding=True,
            pad_to_min_length=True,
            device=model.device,
        )
        rows.append(model(**inputs).pooler_output.float().cpu().numpy())
    return np.concatenate(rows)


@dataclass
class LinearProbeMetrics:
    """Test accuracy per classifier seed, and the effective rank of the test clips' embeddings."""

    accuracies: list[float]
    effective_rank: float


def linear_probe_metrics(
    model: BYOLAModel, feature_extractor: BYOLAFeatureExtractor, data: LinearProbeData, seeds: Sequence[int]
) -> LinearProbeMetrics:
    """The clips embedded once by `model`, then `byola-linear-eval`'s classifier (EVAR's protocol: standardised
    features, a validation part held out as EVAR holds it, early stopping) trained with each of `seeds`."""
    train_x = clip_embeddings(model, feature_extractor, data.train.waveforms)
    test_x = clip_embeddings(model, feature_extractor, data.test.waveforms)
    accuracies = []
    for seed in seeds:
        fold = Fold("probe", train_x, data.train.labels, test_x, data.test.labels)
        try:
            hold_out_validation(fold.train_y, VALIDATION_FRACTION, seed)  # the part run_fold holds out
        except ValueError:  # too few clips per class to hold any out: early stopping watches the training clips
            fold.valid_x, fold.valid_y = train_x, data.train.labels
        accuracies.append(run_fold(fold, len(data.classes), seed, TrainingSettings()).accuracy)
    return LinearProbeMetrics(accuracies, effective_rank(test_x))


def effective_rank(embeddings: np.ndarray) -> float:
    """How many directions `embeddings` `(clips, dims)` spread over: exp of the entropy of the centred embeddings'
    variance spectrum (Roy and Vetterli's effective rank; k for k directions of equal variance). BYOL's failure on
    small data, dimensional collapse, shows as a fall of it while the loss still falls."""
    embeddings = embeddings.astype(np.float64)
    centred = embeddings - embeddings.mean(axis=0)
    variances = np.linalg.svd(centred, compute_uv=False) ** 2
    if variances.sum() == 0:  # every clip the same embedding: no direction at all
        return 0.0
    shares = variances[variances > 0] / variances.sum()
    return float(np.exp(-(shares * np.log(shares)).sum()))

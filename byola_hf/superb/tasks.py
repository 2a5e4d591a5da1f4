"""SUPERB task presets for BYOL-A: head, default learning rate and metric of each task (see docs/superb.md)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class SuperbTask:
    """One SUPERB task: the head class, the default learning rate, the metric module and its main key."""

    name: str
    head: str
    learning_rate: float
    metric: str
    metric_key: str
    metric_config: str | None = None
    description: str = ""


SUPERB_TASKS = {
    "ks": SuperbTask(
        "ks",
        "BYOLAForSequenceClassification",
        1e-4,
        "accuracy",
        "accuracy",
        description="keyword spotting (Speech Commands)",
    ),
    "ic": SuperbTask(
        "ic",
        "BYOLAForSequenceClassification",
        1e-4,
        "accuracy",
        "accuracy",
        description="intent classification, one softmax per slot (Fluent Speech Commands)",
    ),
    # The BYOL-A upstream's README uses 1e-3 for SID (SUPERB's default is 1e-4).
    "sid": SuperbTask(
        "sid",
        "BYOLAForSequenceClassification",
        1e-3,
        "accuracy",
        "accuracy",
        description="speaker identification (VoxCeleb1)",
    ),
    "er": SuperbTask(
        "er",
        "BYOLAForSequenceClassification",
        1e-4,
        "accuracy",
        "accuracy",
        description="emotion recognition (IEMOCAP)",
    ),
    "pr": SuperbTask(
        "pr",
        "BYOLAForCTC",
        1e-2,
        "error_rate",
        "per",
        "per",
        description="phoneme recognition with CTC (LibriSpeech phonemes)",
    ),
    "asr": SuperbTask(
        "asr",
        "BYOLAForCTC",
        1e-4,
        "error_rate",
        "wer",
        "wer",
        description="speech recognition with CTC, BiLSTM head (LibriSpeech characters)",
    ),
    "sd": SuperbTask(
        "sd",
        "BYOLAForAudioFrameClassification",
        1e-4,
        "der",
        "der",
        description="speaker diarization (LibriMix, 2 speakers)",
    ),
}

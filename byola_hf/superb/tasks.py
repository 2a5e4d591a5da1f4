"""SUPERB task presets for BYOL-A (see docs/superb.md). A task names its head class, which
[`~byola_hf.superb.recipes.recipe_for`] maps to its recipe; every other per-task fact is a field of [`SuperbTask`],
so the recipe never branches on a task name."""

from dataclasses import dataclass


@dataclass(frozen=True)
class SuperbTask:
    """One SUPERB task: the head class, the default learning rate, the metric module and its main key, the
    defaults its recipe reads (label or transcription column, CTC head and projection width, phoneme tokens), and
    whether training batches are drawn class-balanced (s3prl's KS)."""

    name: str
    head: str
    learning_rate: float
    metric: str
    metric_key: str
    metric_config: str | None = None
    description: str = ""
    label_column: str = "label"
    ctc_head: str = "linear"
    ctc_proj_size: int = 256
    phonemes: bool = False
    class_balanced: bool = False

    @property
    def greater_is_better(self) -> bool:
        """Whether a higher `metric_key` is better: accuracy is, error rates (PER, WER, DER) are not."""
        return self.metric_key == "accuracy"


CLASSIFICATION = "BYOLAForSequenceClassification"
CTC = "BYOLAForCTC"
FRAMES = "BYOLAForAudioFrameClassification"

SUPERB_TASKS = {
    # s3prl draws KS training clips class-balanced: `_unknown_` (20 word folders) would otherwise outweigh each word.
    "ks": SuperbTask(
        "ks",
        CLASSIFICATION,
        1e-4,
        "accuracy",
        "accuracy",
        description="keyword spotting (Speech Commands)",
        class_balanced=True,
    ),
    "ic": SuperbTask(
        "ic",
        CLASSIFICATION,
        1e-4,
        "accuracy",
        "accuracy",
        description="intent classification, one softmax per slot (Fluent Speech Commands)",
        label_column="action,object,location",
    ),
    # The BYOL-A upstream's README uses 1e-3 for SID (SUPERB's default is 1e-4).
    "sid": SuperbTask(
        "sid", CLASSIFICATION, 1e-3, "accuracy", "accuracy", description="speaker identification (VoxCeleb1)"
    ),
    "er": SuperbTask("er", CLASSIFICATION, 1e-4, "accuracy", "accuracy", description="emotion recognition (IEMOCAP)"),
    "pr": SuperbTask(
        "pr",
        CTC,
        1e-2,
        "error_rate",
        "per",
        "per",
        description="phoneme recognition with CTC (LibriSpeech phonemes)",
        label_column="phonemes",
        phonemes=True,
    ),
    "asr": SuperbTask(
        "asr",
        CTC,
        1e-4,
        "error_rate",
        "wer",
        "wer",
        description="speech recognition with CTC, BiLSTM head (LibriSpeech characters)",
        label_column="text",
        ctc_head="bilstm",
        ctc_proj_size=1024,
    ),
    "sd": SuperbTask(
        "sd",
        FRAMES,
        1e-4,
        "der",
        "der",
        description="speaker diarization (LibriMix, 2 speakers)",
        label_column="activity",
    ),
}

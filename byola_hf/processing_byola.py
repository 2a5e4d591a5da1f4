"""Processor for BYOL-A CTC models: the feature extractor and a CTC tokenizer."""

from transformers import BatchFeature, ProcessorMixin

from .configuration_byola import PrivatePushMixin


class BYOLAProcessor(PrivatePushMixin, ProcessorMixin):
    r"""
    Wraps a [`BYOLAFeatureExtractor`] and a CTC tokenizer (e.g. transformers' `Wav2Vec2CTCTokenizer`) for
    [`BYOLAForCTC`]: `processor(audio=..., sampling_rate=..., text=...)` gives `input_features`, `attention_mask`
    and `labels`; `processor.batch_decode(logits.argmax(-1))` collapses repeats and drops blanks.
    """

    # transformers 5 finds a processor's parts from its __init__ signature: this one names them.
    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(self, audio=None, text=None, sampling_rate: int | None = None, **kwargs):
        """Featurise `audio` and/or tokenise `text` (then returned as `labels`: token id lists, or with
        `return_tensors` one `(batch, longest)` tensor padded with -100, which the CTC loss leaves out)."""
        if audio is None and text is None:
            raise ValueError("Pass `audio`, `text`, or both.")
        inputs = self.feature_extractor(audio, sampling_rate=sampling_rate, **kwargs) if audio is not None else None
        if text is None:
            return inputs
        encodings = self.tokenizer(text)
        if inputs is None:
            return encodings
        labels = encodings["input_ids"]
        if kwargs.get("return_tensors") is not None:
            rows = labels if isinstance(text, (list, tuple)) else [labels]
            width = max(len(row) for row in rows)
            padded = {"labels": [row + [-100] * (width - len(row)) for row in rows]}
            labels = BatchFeature(padded, tensor_type=kwargs["return_tensors"])["labels"]
        inputs["labels"] = labels
        return inputs


__all__ = ["BYOLAProcessor"]

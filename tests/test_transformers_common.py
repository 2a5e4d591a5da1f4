"""
transformers' own common tests on byola_hf, as a `tests/models/byola/` folder upstream would run them: the installed
transformers version's `ModelTesterMixin`, `ConfigTester` and `SequenceFeatureExtractionTestMixin`, taken from its
PyPI sdist at test time (tests/transformers_release.py: downloaded once, cached, never copied here), with BYOL-A
testers for v1 (`AudioNTT2020`) and v2 (`AudioNTT2022`): the model and every head (sequence classification, CTC with
the linear and the BiLSTM head, frame classification), the config and the feature extractor. Every head also exports
with `torch.export` (the LSTM heads mask instead of packing; their outputs equal the packed ones).

Tests that cannot apply to a convolutional audio encoder are skipped through the testers' flags, as other audio
models do (no attention, so no SDPA/flash/attention outputs; no token embeddings; no `generate` or cache; no
gradient checkpointing). Two upstream tests are replaced by what they check, said in their docstrings:
`test_num_layers_is_small` and `test_retain_grad_hidden_states_attentions`.
"""

import copy
import itertools
import unittest
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn
from transformers_release import ReleaseUnavailable, load_common_tests

from byola_hf import (
    BYOLAConfig,
    BYOLAFeatureExtractor,
    BYOLAForAudioFrameClassification,
    BYOLAForCTC,
    BYOLAForSequenceClassification,
    BYOLAModel,
)
from byola_hf.modeling_byola import AUTO_MAP

from conftest import IN_CI


try:
    with warnings.catch_warnings():
        # Markers transformers' own conftest registers (flash_attn_test, torch_compile_test, ...).
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        common = load_common_tests()
except ReleaseUnavailable as error:
    message = f"transformers' common test files could not be downloaded from the package index ({error})"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

ModelTesterMixin = common.modeling.ModelTesterMixin
ConfigTester = common.configuration.ConfigTester
SequenceFeatureExtractionTestMixin = common.sequence_feature_extraction.SequenceFeatureExtractionTestMixin
floats_tensor = common.modeling.floats_tensor

# Where transformers would list BYOL-A's classes once it is a model folder there (the Auto classes byola_hf
# registers): the common tests choose labels and skip base models by these names.
MAPPING_NAMES = {
    "MODEL_MAPPING_NAMES": "AutoModel",
    "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES": "AutoModelForAudioClassification",
    "MODEL_FOR_CTC_MAPPING_NAMES": "AutoModelForCTC",
    "MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES": "AutoModelForAudioFrameClassification",
}


class BYOLAModelTester:
    """Tiny BYOL-A networks (16 mel bins, 4 channels) of one variant's block layout, and a padded batch."""

    # The sizes no test changes.
    n_mels = 16
    conv_channels = 4
    num_labels = 3
    vocab_size = 6
    is_training = True

    def __init__(
        self,
        parent,
        variant: str = "AudioNTT2020",
        ctc_head: str = "linear",
        batch_size: int = 3,
        mel_frames: int = 40,
    ):
        self.parent = parent
        self.variant = variant
        self.ctc_head = ctc_head
        self.batch_size = batch_size
        self.mel_frames = mel_frames
        config = self.get_config()
        # Checked by the common tests: hidden_states has one entry per layer (no embedding output), each
        # (batch, output frames, layer_hidden_size).
        self.num_hidden_layers = self.expected_num_hidden_layers = config.num_hidden_layers
        self.seq_length = mel_frames // config.time_downsampling
        self.hidden_size = config.layer_hidden_size

    def get_config(self) -> BYOLAConfig:
        widths = {"AudioNTT2020": {"feature_d": 24}, "AudioNTT2022": {"feature_d": 40, "mlp_hidden_size": 24}}
        return BYOLAConfig.from_variant(
            self.variant,
            n_mels=self.n_mels,
            conv_channels=self.conv_channels,
            **widths[self.variant],
            mean=-8.0,
            std=4.0,
            # Train the whole network, so the common gradient checks reach the encoder too.
            freeze_base_model=False,
            classifier_proj_size=8,
            ctc_head=self.ctc_head,
            ctc_proj_size=8,
            ctc_lstm_layers=2,
            vocab_size=self.vocab_size,
            frame_lstm_hidden_size=8,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs(self) -> tuple[BYOLAConfig, torch.Tensor, torch.Tensor]:
        input_features = floats_tensor([self.batch_size, self.n_mels, self.mel_frames], scale=8.0) - 12.0
        # Right-padded examples of decreasing lengths, each at least one output frame long.
        lengths = torch.linspace(self.mel_frames, self.mel_frames // 2, self.batch_size).long()
        attention_mask = (torch.arange(self.mel_frames)[None, :] < lengths[:, None]).long()
        return self.get_config(), input_features, attention_mask

    def prepare_config_and_inputs_for_common(self) -> tuple[BYOLAConfig, dict[str, torch.Tensor]]:
        config, input_features, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_features": input_features, "attention_mask": attention_mask}

    def labels_for(self, model_class: type, config: BYOLAConfig) -> torch.Tensor:
        """Targets each head trains on: a class per clip, token ids per clip (-100 padded) or frame activities."""
        generator = torch.Generator().manual_seed(0)
        frames = self.mel_frames // config.time_downsampling
        if model_class is BYOLAForCTC:
            tokens = torch.randint(1, config.vocab_size, (self.batch_size, 2), generator=generator)
            return torch.cat([tokens, torch.full((self.batch_size, 1), -100)], dim=-1)
        if model_class is BYOLAForAudioFrameClassification:
            shape = (self.batch_size, frames, config.num_labels)
            return torch.randint(0, 2, shape, generator=generator).float()
        return torch.randint(0, config.num_labels, (self.batch_size,), generator=generator)

    def create_and_check_model(self, config: BYOLAConfig, input_features, attention_mask) -> None:
        model = BYOLAModel(config).eval()
        with torch.no_grad():
            output = model(input_features, attention_mask=attention_mask)
        frames = self.mel_frames // config.time_downsampling
        self.parent.assertEqual(output.last_hidden_state.shape, (self.batch_size, frames, config.feature_d))
        self.parent.assertEqual(output.pooler_output.shape, (self.batch_size, config.feature_d))
        self.parent.assertEqual(
            output.attention_mask.sum(-1).tolist(), (attention_mask.sum(-1) // 2**config.num_conv_layers).tolist()
        )

    def create_and_check_heads(self, config: BYOLAConfig, input_features, attention_mask) -> None:
        inputs = {"input_features": input_features, "attention_mask": attention_mask}
        frames = self.mel_frames // config.time_downsampling
        expected = {
            BYOLAForSequenceClassification: (self.batch_size, config.num_labels),
            BYOLAForCTC: (self.batch_size, frames, config.vocab_size),
            BYOLAForAudioFrameClassification: (self.batch_size, frames, config.num_labels),
        }
        for model_class, shape in expected.items():
            model = model_class(config).train()
            output = model(**inputs, labels=self.labels_for(model_class, config))
            self.parent.assertEqual(output.logits.shape, shape)
            self.parent.assertTrue(torch.isfinite(output.loss))


class BYOLACommonTests(ModelTesterMixin):
    """The settings every BYOL-A model test class shares."""

    all_model_classes = (BYOLAModel, BYOLAForSequenceClassification, BYOLAForCTC, BYOLAForAudioFrameClassification)
    # A convolutional encoder over log-mels: no attention (so no attention outputs, SDPA or flash attention), no
    # token or position embeddings to resize, no generation or cache, no gradient checkpointing
    # (`supports_gradient_checkpointing = False` skips those tests).
    has_attentions = False
    test_resize_embeddings = False
    # `_init_weights` initialises every weight (the check is otherwise skipped for files without a copyright year).
    test_can_init_all_missing_weights_before_2023 = True
    variant = "AudioNTT2020"
    ctc_head = "linear"

    @classmethod
    def setUpClass(cls):
        from transformers.models.auto import modeling_auto

        cls.mapping_patches = [
            mock.patch.dict(getattr(modeling_auto, name), {"byola": AUTO_MAP[auto_class].split(".")[-1]})
            for name, auto_class in MAPPING_NAMES.items()
        ]
        for patch in cls.mapping_patches:
            patch.start()

    @classmethod
    def tearDownClass(cls):
        for patch in cls.mapping_patches:
            patch.stop()

    def setUp(self):
        self.model_tester = BYOLAModelTester(self, variant=self.variant, ctc_head=self.ctc_head)
        self.config_tester = ConfigTester(
            self,
            config_class=BYOLAConfig,
            has_text_modality=False,
            common_properties=["hidden_size", "num_hidden_layers"],
            feature_d=37,
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels and model_class is not BYOLAModel:
            inputs["labels"] = self.model_tester.labels_for(model_class, self.model_tester.get_config())
        return inputs

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def test_heads(self):
        self.model_tester.create_and_check_heads(*self.model_tester.prepare_config_and_inputs())

    @unittest.skip(reason="BYOL-A takes log-mel spectrograms and has no input token embeddings to get or set")
    def test_model_get_set_embeddings(self):
        pass

    def test_num_layers_is_small(self):
        """
        Replaces the upstream check that a tester builds at most two layers. BYOL-A's layer count is not a free
        size: it is the variant's block layout (`num_conv_layers` conv blocks, which set the time downsampling and
        so the output frame rate, plus the two fully connected layers, and the concatenation for v2), five entries
        for both published networks. The testers keep each variant's layout, so the tests see the real frame rate
        and layer structure, and keep every width tiny instead, which is what the upstream check is for: the
        models stay small and fast.
        """
        config = self.model_tester.get_config()
        self.assertEqual(config.num_conv_layers, BYOLAConfig.from_variant(self.variant).num_conv_layers)
        for model_class in self.all_model_classes:
            self.assertLess(model_class(config).num_parameters(), 20_000)

    def test_retain_grad_hidden_states_attentions(self):
        """
        The upstream check, run on a head rather than on `BYOLAModel`. `BYOLAModel.hidden_states` are, as in the
        layered upstream SUPERB reads, each layer averaged down in time to the output frame rate and zero-padded to
        a common width: views beside the path to `last_hidden_state`, so a gradient from `last_hidden_state` never
        reaches them by design (making them the tensors the next layer consumes would change their values). The
        heads' featurizer sums exactly these tensors, so there they are on the graph and take the gradient.
        """
        self.all_model_classes = (BYOLAForSequenceClassification,)
        super().test_retain_grad_hidden_states_attentions()

    def test_torch_export(self):
        """Every class exports with `torch.export` on a padded batch and the exported program gives the eager
        outputs (in eval mode, where the encoder runs its inference kernels)."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            with self.subTest(model_class.__name__):
                model = model_class(copy.deepcopy(config)).eval()
                with torch.no_grad():
                    expected = model(**inputs)
                    program = torch.export.export(model, args=(), kwargs=inputs)
                    exported = program.module()(**inputs)
                for key in ("last_hidden_state", "pooler_output", "logits"):
                    if key in expected:
                        torch.testing.assert_close(exported[key], expected[key], rtol=1e-5, atol=1e-6)


class BYOLAModelTest(BYOLACommonTests, unittest.TestCase):
    """BYOL-A v1 (`AudioNTT2020`): three conv blocks, output = the second fully connected layer."""


class BYOLAV2ModelTest(BYOLACommonTests, unittest.TestCase):
    """BYOL-A v2 (`AudioNTT2022`): two conv blocks, output = conv features and the MLP's, concatenated."""

    variant = "AudioNTT2022"


class BYOLAForCTCBiLSTMTest(BYOLACommonTests, unittest.TestCase):
    """The CTC head with `ctc_head="bilstm"` (SUPERB ASR): two bidirectional LSTM layers over the valid frames."""

    all_model_classes = (BYOLAForCTC,)
    ctc_head = "bilstm"


class BYOLAFeatureExtractionTester:
    """Time-first log-mel rows `(frames, feature_size)` of increasing lengths, the layout the common tests use."""

    def __init__(self, parent, batch_size=5, min_seq_length=40, max_seq_length=121, feature_size=16):
        self.parent = parent
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.feature_size = feature_size

    def prepare_feat_extract_dict(self) -> dict:
        return {"feature_size": self.feature_size, "sampling_rate": 16000, "hop_length": 160, "time_downsampling": 8}

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        rng = np.random.default_rng(0)
        lengths = (
            [self.max_seq_length] * self.batch_size
            if equal_length
            else range(self.min_seq_length, self.max_seq_length, self.seq_length_diff)
        )
        rows = [rng.standard_normal((length, self.feature_size)).astype(np.float32) for length in lengths]
        return rows if numpify else [row.tolist() for row in rows]


class BYOLAFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = BYOLAFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = BYOLAFeatureExtractionTester(self)

    def test_pad_own_layout_follows_the_base_contract(self):
        """This extractor's own `(feature_size, frames)` rows: `padding=False` leaves them as they are, a short
        `max_length` without truncation returns the rows, truncation needs `max_length` as in the base class, and
        padding is digital silence, marked 0 in the mask (the layout of `__call__`)."""
        fe = BYOLAFeatureExtractor(feature_size=16)
        rows = [row.T for row in self.feat_extract_tester.prepare_inputs_for_common(numpify=True)]
        batch = {"input_features": rows}
        unpadded = fe.pad(batch, padding=False)["input_features"]
        self.assertEqual([row.shape for row in unpadded], [row.shape for row in rows])
        short = fe.pad(batch, padding="max_length", max_length=50)["input_features"]
        self.assertEqual([row.shape[-1] for row in short], [max(50, row.shape[-1]) for row in rows])
        with self.assertRaises(ValueError):
            fe.pad(batch, padding="longest", truncation=True)
        cut = fe.pad(batch, padding="max_length", max_length=50, truncation=True, return_tensors="np")
        self.assertEqual(cut["input_features"].shape, (len(rows), 16, 50))
        np.testing.assert_array_equal(cut["attention_mask"].sum(-1), [min(50, row.shape[-1]) for row in rows])
        padded = fe.pad(batch, return_tensors="pt")
        silence = float(np.log(np.float32(fe.log_offset)))
        for row, features, mask in zip(rows, padded["input_features"], padded["attention_mask"]):
            np.testing.assert_array_equal(features[:, : row.shape[-1]].numpy(), row)
            self.assertTrue(bool((features[:, row.shape[-1] :] == silence).all()))
            self.assertEqual(int(mask.sum()), row.shape[-1])

    def test_pad_own_layout_equals_the_base_class_on_time_first_rows(self):
        """Every combination of the padding arguments: this layout's rows give what `SequenceFeatureExtractor.pad`
        gives for the same rows time-first (padding with the same value), transposed, or the same error."""
        fe = BYOLAFeatureExtractor(feature_size=16)
        fe.padding_value = float(np.log(np.float32(fe.log_offset)))
        rows = self.feat_extract_tester.prepare_inputs_for_common(numpify=True)
        for padding, max_length, truncation, multiple in itertools.product(
            (True, False, "longest", "max_length"), (None, 50, 200), (False, True), (None, 12)
        ):
            arguments = {"padding": padding, "max_length": max_length, "truncation": truncation}
            with self.subTest(**arguments, pad_to_multiple_of=multiple):
                arguments["pad_to_multiple_of"] = multiple
                try:
                    expected = fe.pad({"input_features": rows, "labels": [1, 2, 3, 4, 5]}, **arguments)
                except ValueError:
                    with self.assertRaises(ValueError):
                        fe.pad({"input_features": [row.T for row in rows]}, **arguments)
                    continue
                got = fe.pad({"input_features": [row.T for row in rows], "labels": [1, 2, 3, 4, 5]}, **arguments)
                self.assertEqual(type(got["input_features"]), type(expected["input_features"]))
                self.assertEqual(got["labels"].tolist(), expected["labels"].tolist())
                for key in ("input_features", "attention_mask"):
                    for row, expected_row in zip(got[key], expected[key], strict=True):
                        np.testing.assert_array_equal(row, expected_row.T)

    def test_pad_refuses_rows_in_neither_layout(self):
        fe = BYOLAFeatureExtractor(feature_size=16)
        with self.assertRaisesRegex(ValueError, r"expected \(16, frames\)"):
            fe.pad([{"input_features": np.zeros((10, 15))}])
        with self.assertRaisesRegex(ValueError, r"Row 1 has input_features of shape \(20, 16\)"):
            fe.pad([{"input_features": np.zeros((16, 20))}, {"input_features": np.zeros((20, 16))}])


def run_lstm_packed(lstm: nn.LSTM, sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The packed-sequence way the heads ran their LSTMs before: what the masked LSTM must equal."""
    packed = nn.utils.rnn.pack_padded_sequence(sequences, lengths, batch_first=True, enforce_sorted=False)
    return nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=sequences.shape[1])[0]


@pytest.mark.parametrize("variant", ["AudioNTT2020", "AudioNTT2022"])
@pytest.mark.parametrize("model_class", [BYOLAForCTC, BYOLAForAudioFrameClassification])
def test_masked_lstm_heads_equal_packed_lstm(model_class, variant):
    """The LSTM heads (BiLSTM CTC, frame classification) on a padded batch, in float64: their logits equal those of
    the same modules run on packed sequences, and padding of any value changes no valid frame."""
    tester = BYOLAModelTester(None, variant=variant, ctc_head="bilstm", batch_size=4, mel_frames=48)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    inputs["attention_mask"][-1, 8:] = 0  # one example of a single output frame for v1
    inputs["input_features"] = (
        inputs["input_features"].double().masked_fill(inputs["attention_mask"][:, None] == 0, 9.0)
    )
    torch.manual_seed(0)
    model = model_class(config).double().eval()
    with torch.no_grad():
        logits = model(**inputs).logits
        features, frame_mask, _ = model.encode(inputs["input_features"], inputs["attention_mask"], False)
        lengths = frame_mask.sum(-1)
        if model_class is BYOLAForCTC:
            expected = model.lm_head(run_lstm_packed(model.lstm, model.projector(features), lengths))
        else:
            expected = model.classifier(run_lstm_packed(model.lstm, features, lengths))
    valid = frame_mask.bool()
    assert not valid.all()
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-12)

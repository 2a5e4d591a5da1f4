"""The embedding and audio-classification pipelines: real recordings of several rates and layouts, batching,
devices, no remote-code prompt when byola_hf is imported."""

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    pipeline,
)

import byola_hf  # noqa: F401  (registers the model type and the pipelines)
from byola_hf import (
    BYOLAModel,
)
from byola_hf.pipelines import load_audio

from conftest import FE, IN_CI, waveforms


SOUNDS = {
    "bell": Path("/usr/share/sounds/freedesktop/stereo/bell.oga"),  # 44.1 kHz stereo OGG/Vorbis
    "front_center": Path("/usr/share/sounds/alsa/Front_Center.wav"),  # 48 kHz mono WAV
}


@pytest.fixture(scope="module")
def sound_files(tmp_path_factory) -> list[str]:
    """Real recordings of several rates and channel layouts, plus espeak-ng speech at 22.05 kHz."""
    missing = [str(path) for path in SOUNDS.values() if not path.exists()]
    if missing:
        message = f"Sound files missing: {missing} (scripts/setup.sh installs sound-theme-freedesktop, alsa-utils)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    speech = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "turn the lights on"], check=True)
    files = [str(SOUNDS["bell"]), str(SOUNDS["front_center"]), str(speech)]
    rates = {soundfile.info(f).samplerate for f in files}
    channels = {soundfile.info(f).channels for f in files}
    assert len(rates) == 3 and channels == {1, 2}
    return files


def test_embedding_pipeline_batches_mixed_lengths(random2048_dir, sound_files):
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir))
    alone = [extractor(path) for path in sound_files]
    batched = extractor(sound_files, batch_size=2)
    worst = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(alone, batched))
    frames_alone = [extractor(path, frame_level=True) for path in sound_files]
    frames_batched = extractor(sound_files, frame_level=True, batch_size=3)
    assert [f.shape for f in frames_alone] == [f.shape for f in frames_batched]
    assert len({f.shape[0] for f in frames_alone}) == 3  # really mixed lengths
    worst = max([worst] + [float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(frames_alone, frames_batched)])
    print(f"\nembedding pipeline, batch_size 2/3 vs alone on mixed files: {worst:.2g}")
    assert worst < 1e-5


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))],
)
def test_pipeline_computes_log_mel_per_batch_on_its_device(random2048_dir, sound_files, device):
    """Decoding stays in preprocess (CPU, DataLoader workers); the log-mel is one batched call in _forward, on the
    pipeline's device, and equals the feature extractor's numpy path followed by the model."""
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir), device=device)
    decoded = extractor.preprocess(sound_files[0])
    assert set(decoded) == {"waveforms", "lengths"} and decoded["waveforms"].device.type == "cpu"
    calls = []
    log_mel = extractor.feature_extractor.log_mel

    def recording_log_mel(waveforms, lengths=None):
        calls.append((waveforms.device.type, tuple(waveforms.shape[:1])))
        return log_mel(waveforms, lengths)

    extractor.feature_extractor.log_mel = recording_log_mel
    batched = extractor(sound_files, batch_size=3)
    assert calls == [(device, (3,))]
    with_workers = extractor(sound_files, batch_size=3, num_workers=2)  # decoding in DataLoader workers
    assert all(np.array_equal(a, b) for a, b in zip(batched, with_workers))

    fe = extractor.feature_extractor
    model = AutoModel.from_pretrained(random2048_dir).eval()
    for path, embedding in zip(sound_files, batched):
        with torch.no_grad():
            expected = model(**fe(load_audio(path, 16000), sampling_rate=16000, return_tensors="pt")).pooler_output
        assert np.abs(embedding - expected[0].numpy()).max() / np.abs(embedding).max() < 1e-5


def test_classification_pipeline_batches_and_reads_files(classifier_dir, sound_files):
    classifier = pipeline("audio-classification", model=str(classifier_dir))
    arrays = [load_audio(path, 16000) for path in sound_files]
    alone = [classifier(array, sampling_rate=16000) for array in arrays]
    batched = classifier(arrays, sampling_rate=16000, batch_size=2)
    for a, b in zip(alone, batched):
        assert [s["label"] for s in a] == [s["label"] for s in b]
        assert np.allclose([s["score"] for s in a], [s["score"] for s in b], atol=1e-6)
    from_files = classifier(sound_files[0])  # a path: soundfile decodes, librosa resamples; no ffmpeg
    assert {s["label"] for s in from_files} == {"a", "b", "c"}
    stated = classifier({"raw": arrays[0][:16000], "sampling_rate": 22050})  # resampled, no torchaudio needed
    assert len(stated) == 3


def test_slot_classifier_scores_are_each_slots_probabilities(small_model, tmp_path):
    """An intent classifier (`classifier_slots`, SUPERB IC: one softmax per slot, as its loss) scored its labels with
    one softmax over every slot's logits: `action=off` read 0.32 where the model gives it 0.97 of its slot. Each
    score is now its label's probability within its slot; the labels stay ranked by it."""
    names = ["action=on", "action=off", "object=lamp", "object=music", "object=heat"]
    torch.manual_seed(0)
    head = AutoModelForAudioClassification.from_pretrained(
        small_model, classifier_slots=[2, 3], num_labels=5, id2label=dict(enumerate(names))
    ).eval()
    torch.nn.init.normal_(head.classifier.weight, std=3.0)
    head.save_pretrained(tmp_path)
    AutoFeatureExtractor.from_pretrained(small_model).save_pretrained(tmp_path)
    waveform = waveforms(lengths=(20000,))[0]
    with torch.no_grad():
        logits = head(**FE(waveform, sampling_rate=16000, return_tensors="pt")).logits[0].double()
    expected = torch.cat([logits[:2].softmax(-1), logits[2:].softmax(-1)])
    scores = pipeline("audio-classification", model=str(tmp_path))(waveform, sampling_rate=16000, top_k=None)
    assert [s["label"] for s in scores] == [names[i] for i in expected.argsort(descending=True)]
    assert np.allclose([s["score"] for s in scores], expected.sort(descending=True).values, atol=1e-6)
    top = pipeline("audio-classification", model=str(tmp_path))(waveform, sampling_rate=16000, top_k=2)
    assert top == scores[:2]


@pytest.mark.parametrize("task", ["byola-audio-embedding", "audio-classification"])
def test_pipelines_run_a_model_handed_over_in_training_mode_as_in_eval(small_model, task):
    """`pipeline(task, model=model)` with a model still in training mode (after `Trainer.train()`, or a head with its
    encoder unfrozen) ran it so: BatchNorm normalised each batch by its own statistics and moved the running ones,
    dropout was on; a clip's embedding was 49% off its eval value and depended on the batch. The pipelines put the
    model in eval mode, as `from_pretrained` returns it (and as the HEAR API does)."""
    head = task == "audio-classification"
    loader = AutoModelForAudioClassification if head else AutoModel
    kwargs = {"num_labels": 3, "freeze_base_model": False} if head else {}
    model = loader.from_pretrained(small_model, **kwargs)
    if head:
        model.config.architectures = [type(model).__name__]  # a trained head, as save_pretrained records it
    fe = AutoFeatureExtractor.from_pretrained(small_model)
    clips = waveforms(lengths=(20000, 9000))
    expected = pipeline(task, model=model.eval(), feature_extractor=fe)(clips, sampling_rate=16000, batch_size=2)
    statistics = model.state_dict()
    running = {k: v.clone() for k, v in statistics.items() if "running" in k}
    got = pipeline(task, model=model.train(), feature_extractor=fe)(clips, sampling_rate=16000, batch_size=2)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in running.items())
    if head:
        got, expected = ([[s["score"] for s in scores] for scores in batch] for batch in (got, expected))
    assert np.allclose(got, expected, atol=1e-6)


def test_classification_pipeline_refuses_a_flag_that_is_not_a_bool(classifier_dir):
    """`classifier(clip, pad_to_min_length="no")` padded the clip (a non-empty string is true) where the embedding
    pipeline refuses the same flag: both pipelines check it alike."""
    classifier = pipeline("audio-classification", model=str(classifier_dir))
    with pytest.raises(ValueError, match="pad_to_min_length must be True or False, got 'no'"):
        classifier(waveforms(lengths=(600,))[0], sampling_rate=16000, pad_to_min_length="no")


def test_classification_pipeline_leaves_other_models_alone():
    from transformers import AudioClassificationPipeline

    assert issubclass(byola_hf.BYOLAAudioClassificationPipeline, AudioClassificationPipeline)


def test_no_prompt_when_byola_hf_is_imported(random2048_dir):
    script = textwrap.dedent(f"""
        import byola_hf, numpy as np
        from transformers import pipeline
        extractor = pipeline("byola-audio-embedding", model={str(random2048_dir)!r})
        print(extractor(np.zeros(16000, np.float32), sampling_rate=16000).shape)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(2048,)" in result.stdout
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr


def test_any_audio_in(random2048_dir, sound_files, tmp_path):
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir))
    mono = load_audio(sound_files[2], 16000)
    reference = extractor(mono, sampling_rate=16000)
    stereo = np.stack([mono, mono])
    for variant in (
        stereo,
        stereo.T,
        {"raw": stereo.T, "sampling_rate": 16000},
        {"array": mono, "sampling_rate": 16000, "path": "x.wav"},
    ):
        np.testing.assert_allclose(
            extractor(variant, sampling_rate=16000) if not isinstance(variant, dict) else extractor(variant),
            reference,
            rtol=0,
            atol=1e-5,
        )
    # Integer PCM is scaled by its dtype: int16 samples give the float result.
    pcm = np.round(mono * 20000).astype(np.int16)
    np.testing.assert_allclose(
        extractor(pcm, sampling_rate=16000), extractor(pcm / 32768.0, sampling_rate=16000), atol=1e-5
    )
    fe = AutoFeatureExtractor.from_pretrained(random2048_dir)
    np.testing.assert_array_equal(
        fe(pcm, sampling_rate=16000)["input_features"][0],
        fe(pcm.astype(np.float32) / 32768, sampling_rate=16000)["input_features"][0],
    )
    # A stated rate is resampled: the 48 kHz WAV read by hand equals the file path.
    samples, rate = soundfile.read(sound_files[1], dtype="float32")
    np.testing.assert_allclose(extractor(samples, sampling_rate=rate), extractor(sound_files[1]), atol=1e-5)
    # Raw bytes of a file.
    np.testing.assert_allclose(extractor(Path(sound_files[0]).read_bytes()), extractor(sound_files[0]), atol=1e-6)
    # Errors that say what is wrong.
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(ValueError, match="Could not read audio from .*notes.wav"):
        extractor(str(bad))
    with pytest.raises(ValueError, match=r"Could not read audio from the given bytes \(9 bytes\)"):
        extractor(b"not audio")
    with pytest.raises(ValueError, match=r"layer must be an int in \[-5, 5\)"):  # said [0, 5) but took -1
        extractor(mono, layer=5)
    with pytest.raises(ValueError, match=r"got -6"):
        extractor(mono, layer=-6)
    np.testing.assert_array_equal(extractor(mono, layer=-1), extractor(mono, layer=4))
    with pytest.raises(ValueError, match=r"layer must be an int in \[-5, 5\).*got True"):  # gave hidden state 1
        extractor(mono, layer=True)
    np.testing.assert_array_equal(extractor(mono, layer=np.int64(2)), extractor(mono, layer=2))
    with pytest.raises(ValueError, match="frame_level must be True or False, got 'no'"):  # was taken as true
        extractor(mono, frame_level="no")
    with pytest.raises(ValueError, match="'raw' or 'array'"):
        extractor({"samples": mono, "sampling_rate": 16000})


def test_pipelines(real512_dir, tmp_path):
    embedder = pipeline("byola-audio-embedding", model=str(real512_dir))
    base = BYOLAModel.from_pretrained(real512_dir).eval()
    wave = waveforms(lengths=(16000,))[0]
    with torch.no_grad():
        expected = base(**FE(wave, sampling_rate=16000, return_tensors="pt"))
    np.testing.assert_allclose(embedder(wave), expected.pooler_output[0].numpy(), rtol=1e-5, atol=1e-6)
    assert embedder(wave, frame_level=True).shape == tuple(expected.last_hidden_state.shape[1:])
    resampled = embedder({"array": wave[::2], "sampling_rate": 8000})
    assert resampled.shape == (512,)
    import soundfile as sf

    sf.write(tmp_path / "clip.wav", wave, 16000, subtype="FLOAT")
    np.testing.assert_allclose(embedder(str(tmp_path / "clip.wav")), embedder(wave), rtol=1e-4, atol=1e-4)

    head = AutoModelForAudioClassification.from_pretrained(real512_dir, num_labels=2, id2label={0: "a", 1: "b"})
    head.save_pretrained(tmp_path / "head")
    FE.save_pretrained(tmp_path / "head")
    classifier = pipeline("audio-classification", model=str(tmp_path / "head"))
    result = classifier(wave)
    assert {r["label"] for r in result} == {"a", "b"} and abs(sum(r["score"] for r in result) - 1) < 1e-5


@pytest.mark.parametrize("task", ["byola-audio-embedding", "audio-classification"])
def test_pipelines_refuse_a_clip_without_an_output_frame_before_the_device(small_model, task):
    """A v1 clip of 513-1119 samples (a log-mel, but no output frame) passed the pipelines' check of the log-mel's
    513 samples; batched with a longer clip on a GPU, where the model reads no values back (`check_values=False`),
    its embedding was NaN and its scores NaN, silently. `preprocess` knows the length on the host and refuses it
    there, naming the fix."""
    head = task == "audio-classification"
    loader = AutoModelForAudioClassification if head else AutoModel
    model = loader.from_pretrained(small_model, **({"num_labels": 3} if head else {})).eval()
    if head:
        model.config.architectures = [type(model).__name__]
    encoder = model.base_model
    encoder.forward = functools.partial(encoder.forward, check_values=False)  # as a forward on an accelerator runs
    fe = AutoFeatureExtractor.from_pretrained(small_model)
    run = pipeline(task, model=model, feature_extractor=fe)
    clips = waveforms(lengths=(16000, fe.min_samples - 1))
    with pytest.raises(ValueError, match=f"at least {fe.min_samples}.*pad_to_min_length=True"):
        run(clips, sampling_rate=16000, batch_size=2)
    padded = run(clips, sampling_rate=16000, batch_size=2, pad_to_min_length=True)
    scores = padded if not head else [[s["score"] for s in clip] for clip in padded]
    assert np.isfinite(np.asarray(scores[1], dtype=float)).all()


def test_pad_to_min_length_pads_as_the_feature_extractor(random2048_dir):
    """The pipelines' `pad_to_min_length=True` zero-pads a short clip at its end, as the feature extractor's option
    of the same name (padding at the start survived: every other test's clip is long enough)."""
    clip = waveforms(lengths=(600,))[0]
    extractor = pipeline("byola-audio-embedding", model=str(random2048_dir))
    model = BYOLAModel.from_pretrained(random2048_dir).eval()
    inputs = AutoFeatureExtractor.from_pretrained(random2048_dir)(
        clip, sampling_rate=16000, pad_to_min_length=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = model(**inputs)
    np.testing.assert_allclose(extractor(clip, pad_to_min_length=True), expected.pooler_output[0].numpy(), rtol=1e-6)
    frames = extractor(clip, pad_to_min_length=True, frame_level=True)
    np.testing.assert_allclose(frames, expected.last_hidden_state[0].numpy(), rtol=1e-6, atol=1e-7)

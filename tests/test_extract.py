"""byola-extract: embeddings equal the model's example by example; workers, resumption, fingerprints, owned folders,
bad audio."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoModel

from byola_hf import BYOLAFeatureExtractor
from byola_hf.extract import (
    ExtractArguments,
    embed_clip_batch,
    extract,
    extract_embeddings,
    layer_widths,
    load_embeddings,
    main,
)
from byola_hf.extract.cli import build_parser
from byola_hf.pipelines import load_audio

from conftest import (
    PROJECT_ROOT,
    assert_rerun_refused_unless_it_may_change,
    console_script,
    every_flag,
    run_two_ranks,
    slow,
)


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    """Two labels; 16 kHz mono, 44.1 kHz stereo and 22.05 kHz clips of several lengths; one corrupt, one empty."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    specs = [
        ("yes", 16000, 1, 1.0),
        ("yes", 44100, 2, 0.7),
        ("no", 22050, 1, 2.3),
        ("no", 16000, 2, 0.3),
        ("yes", 48000, 1, 1.6),
    ]
    for index, (label, rate, channels, seconds) in enumerate(specs):
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        samples = (0.1 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32)
        sf.write(root / "train" / label / f"clip{index}.wav", samples, rate)
    bad = root.parent / (root.name + "_bad")
    for label in ("yes", "no"):
        (bad / "train" / label).mkdir(parents=True)
    for index, (label, rate, channels, seconds) in enumerate(specs[:3]):
        sf.write(
            bad / "train" / label / f"clip{index}.wav",
            (0.1 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32),
            rate,
        )
    # Sorted first in their shard ("no/a...", "no/b..."), so a shard's first batch holds only bad files.
    (bad / "train" / "no" / "a_corrupt.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(bad / "train" / "no" / "b_empty.wav", np.zeros((0, 1), np.float32), 16000)
    return root, bad


def extraction(model_name_or_path: str, dataset_name: str, output_dir: str, **options) -> ExtractArguments:
    """The arguments of an extraction, decoding in the main process unless `num_workers` is given."""
    return ExtractArguments(model_name_or_path, output_dir, dataset_name=dataset_name, **{"num_workers": 0, **options})


def embeddings(output_dir) -> np.ndarray:
    return np.stack(load_embeddings(str(output_dir))["embedding"])


def test_embeddings_equal_the_model_example_by_example(audio_folder, random2048_dir, tmp_path):
    root, _ = audio_folder
    result = extract_embeddings(
        extraction(
            str(random2048_dir),
            "audiofolder",
            str(tmp_path / "out"),
            data_dir=str(root),
            frames=True,
            layers="0,4",
            batch_size=3,
            shard_size=2,
        )
    )
    dataset = load_embeddings(str(tmp_path / "out"))
    assert result.num_examples == len(dataset) == 5 and result.skipped == []
    # Row for row in the source's order (three shards joined in order), its columns beside.
    import datasets

    source = datasets.load_dataset("audiofolder", data_dir=str(root), split="train")
    source = source.cast_column("audio", datasets.Audio(decode=False))
    assert dataset["path"] == [item["path"] for item in source["audio"]] and dataset["label"] == source["label"]
    assert {"label", "path", "duration", "embedding", "timestamps", "frames_0", "frames_4"} <= set(
        dataset.column_names
    )
    model = AutoModel.from_pretrained(random2048_dir).eval()
    fe = BYOLAFeatureExtractor.from_model_config(model.config)
    worst = 0.0
    for row in dataset:
        waveform = load_audio(row["path"], 16000)  # soundfile + librosa, as byola-extract decodes
        with torch.no_grad():
            outputs = model(**fe(waveform, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
        expected = outputs.pooler_output[0].numpy()
        worst = max(worst, float(np.abs(np.asarray(row["embedding"]) - expected).max() / np.abs(expected).max()))
        last = np.asarray(row["frames_4"])
        assert last.shape == outputs.last_hidden_state[0].shape  # (frames, feature_d): last_hidden_state itself
        np.testing.assert_allclose(last, outputs.last_hidden_state[0].numpy(), atol=1e-4 * np.abs(last).max())
        first = np.asarray(row["frames_0"])  # the first conv block at its own width, not padded
        assert first.shape == (len(last), layer_widths(model.config)[0])
        np.testing.assert_allclose(first, outputs.hidden_states[0][0, :, : first.shape[1]].numpy(), atol=1e-4)
        np.testing.assert_allclose(row["timestamps"], 80 * np.arange(len(last)) + 35, atol=1e-3)
        assert abs(row["duration"] - len(waveform) / 16000) < 1e-6
    assert dataset.features["embedding"].feature.dtype == "float32"
    assert dataset.features["frames_0"].feature.feature.dtype == "float32"
    print(f"\nbyola-extract vs the model, clip embeddings: max relative deviation {worst:.2g}")
    assert worst < 1e-4


def test_unit_seconds_embeds_each_clip_cut_or_padded_and_keeps_its_own_duration(
    audio_folder, random2048_dir, tmp_path
):
    """--unit_seconds (EVAR's unit_sec): each embedding is the model's on the clip's first unit of samples, zero-padded
    when the clip is shorter (0.3 s here); `duration` stays the clip's own as decoded (docs/embeddings.md), not the
    unit's."""
    root, _ = audio_folder
    extract_embeddings(
        extraction(
            str(random2048_dir),
            "audiofolder",
            str(tmp_path / "out"),
            data_dir=str(root),
            unit_seconds=0.5,
            batch_size=3,
        )
    )
    model = AutoModel.from_pretrained(random2048_dir).eval()
    fe = BYOLAFeatureExtractor.from_model_config(model.config)
    for row in load_embeddings(str(tmp_path / "out")):
        waveform = load_audio(row["path"], 16000)
        unit = np.pad(waveform[:8000], (0, max(0, 8000 - len(waveform))))
        with torch.no_grad():
            expected = model(**fe(unit, sampling_rate=16000, return_tensors="pt")).pooler_output[0].numpy()
        np.testing.assert_allclose(row["embedding"], expected, rtol=0, atol=1e-4 * np.abs(expected).max())
        assert abs(row["duration"] - len(waveform) / 16000) < 1e-6


def test_statistics_of_other_units_are_warned_of(small_model, tmp_path, caplog):
    """EVAR computes a task's statistics and its embeddings on the same units: statistics of whole clips (or
    another --unit_seconds) beside byola-extract --unit_seconds normalised the embeddings by another log-mel
    distribution without a word. A warning names both lengths; the same length says nothing."""
    from byola_hf.stats import StatsArguments, compute_stats

    folder = tmp_path / "clips"
    folder.mkdir()
    for index, seconds in enumerate((0.4, 1.3)):
        sf.write(folder / f"{index}.wav", 0.1 * np.sin(np.arange(int(seconds * 16000)) / 7.0), 16000)
    stats = tmp_path / "stats"
    compute_stats(StatsArguments(str(small_model), str(folder), unit_seconds=1.0, output_dir=str(stats)))
    for unit, warned in ((0.5, True), (1.0, False)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            extract_embeddings(extraction(str(stats), str(folder), str(tmp_path / f"out{unit}"), unit_seconds=unit))
        expected = "computed over clips cut to 1 s, this run reads clips cut to 0.5 s"
        assert (expected in caplog.text) is warned, caplog.text


def test_units_of_the_same_samples_are_not_warned_of(caplog):
    """Statistics computed with --unit_seconds 0.99999 and byola-extract --unit_seconds 1 both cut 16000 samples
    (the same statistics, checked: mean,std=-2.75622769022782,3.19442949509874 twice), yet the run warned that they
    were computed over other units. Lengths are compared in samples; 0.5 s is still warned of."""
    from byola_hf import BYOLAConfig
    from byola_hf.configuration_byola import warn_if_statistics_of_other_units

    config = BYOLAConfig(stats_provenance={"unit_seconds": 0.99999})
    for unit, warned in ((1.0, False), (0.5, True)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            warn_if_statistics_of_other_units(config, unit)
        assert ("computed over clips cut to 0.99999 s" in caplog.text) is warned, caplog.text


def test_statistics_given_by_hand_are_warned_of(caplog):
    """The README's conversion records VoxCeleb1's statistics as given by hand, without a unit: extracting or
    fine-tuning an EVAR task with them said nothing, though EVAR computes each task's on its training clips."""
    from byola_hf import BYOLAConfig
    from byola_hf.configuration_byola import warn_if_statistics_of_other_units

    for method, warned in (("given", True), ("exact", False)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            warn_if_statistics_of_other_units(
                BYOLAConfig(mean=-8.9, std=4.9, stats_provenance={"method": method}), 5.0
            )
        assert (
            "statistics were given by hand (byola-convert --mean/--std), not computed from" in caplog.text
        ) is warned, caplog.text


def test_last_layer_frames_are_feature_d_wide(audio_folder, random2048_dir, tmp_path):
    root, _ = audio_folder
    extract_embeddings(
        extraction(str(random2048_dir), str(root / "train" / "yes"), str(tmp_path / "out"), frames=True)
    )
    dataset = load_embeddings(str(tmp_path / "out"))
    assert [name for name in dataset.column_names if name.startswith("frames_")] == ["frames_4"]
    assert np.asarray(dataset[0]["frames_4"]).shape[1] == 2048


def test_workers_equal_one_process_and_resumption_gives_the_same_dataset(
    audio_folder, random2048_dir, tmp_path, monkeypatch
):
    root, _ = audio_folder
    model, options = str(random2048_dir), {"data_dir": str(root), "shard_size": 2, "batch_size": 2}
    reference = extract_embeddings(extraction(model, "audiofolder", str(tmp_path / "one"), num_workers=0, **options))
    workers = extract_embeddings(extraction(model, "audiofolder", str(tmp_path / "two"), num_workers=2, **options))
    one, two = load_embeddings(reference.output_dir), load_embeddings(workers.output_dir)
    assert one["path"] == two["path"] and one["duration"] == two["duration"]
    np.testing.assert_array_equal(embeddings(tmp_path / "two"), embeddings(tmp_path / "one"))

    calls = {"count": 0}
    original = extract.embed_clip_batch

    def interrupted(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 1:  # the second shard dies
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(extract, "embed_clip_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(extraction(model, "audiofolder", str(tmp_path / "resumed"), **options))
    assert sorted(path.name for path in (tmp_path / "resumed" / "shards").iterdir()) == ["00000"]
    monkeypatch.setattr(extract, "embed_clip_batch", original)
    with pytest.raises(ValueError, match="other inputs or arguments.*--overwrite_output_dir"):
        extract_embeddings(
            extraction(model, "audiofolder", str(tmp_path / "resumed"), data_dir=str(root), shard_size=3)
        )
    resumed = extract_embeddings(extraction(model, "audiofolder", str(tmp_path / "resumed"), num_workers=2, **options))
    assert load_embeddings(resumed.output_dir)["path"] == one["path"]
    np.testing.assert_array_equal(embeddings(tmp_path / "resumed"), embeddings(tmp_path / "one"))
    assert not (tmp_path / "resumed" / "shards").exists()
    again = extract_embeddings(
        extraction(model, "audiofolder", str(tmp_path / "resumed"), **options)
    )  # finished: no work
    assert again.num_examples == 5


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from byola_hf.extract import extract

original = extract.save_shard

def save_then_die(job, index, rows, features):
    original(job, index, rows, features)
    me = os.getpid()
    stats = {p: open(f"/proc/{p}/stat").read() for p in os.listdir("/proc") if p.isdigit()}
    children = [p for p, stat in stats.items() if stat.split(")")[-1].split()[1] == str(me)]
    Path(sys.argv[1]).write_text(" ".join(children))
    os.kill(me, signal.SIGKILL)

extract.save_shard = save_then_die
arguments = extract.ExtractArguments(
    sys.argv[2], sys.argv[3], dataset_name="audiofolder", data_dir=sys.argv[4], shard_size=2, num_workers=2
)
extract.extract_embeddings(arguments)
"""


def cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [console_script("byola-extract"), *arguments], capture_output=True, text=True, cwd=PROJECT_ROOT
    )


def one_line_error(result: subprocess.CompletedProcess) -> bool:
    """Exit code 2 and the error as the last line of stderr, the only one saying `error:` (progress bars aside)."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    return (
        result.returncode == 2
        and "Traceback" not in result.stderr
        and errors == lines[-1:]
        and lines[-1].startswith("byola-extract: error:")
    )


@slow
def test_kill_9_then_changed_arguments_refuse_and_the_same_resume(audio_folder, random2048_dir, tmp_path):
    root, _ = audio_folder
    output, pids = tmp_path / "out", tmp_path / "children"
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(pids), str(random2048_dir), str(output), str(root)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    children = [int(pid) for pid in pids.read_text().split()]
    assert children, "the run had DataLoader workers"
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in children):
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children), "workers outlived their killed parent"
    common = ["--model_name_or_path", str(random2048_dir), "--dataset_name", "audiofolder", "--data_dir", str(root)]
    common += ["--output_dir", str(output)]
    changed = cli(*common, "--shard_size", "3")
    assert one_line_error(changed) and "--overwrite_output_dir" in changed.stderr
    resumed = cli(*common, "--shard_size", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = extract_embeddings(
        extraction(str(random2048_dir), "audiofolder", str(tmp_path / "ref"), data_dir=str(root))
    )
    assert load_embeddings(str(output))["path"] == load_embeddings(reference.output_dir)["path"]
    np.testing.assert_array_equal(embeddings(output), embeddings(tmp_path / "ref"))
    assert "5 clips" in resumed.stdout and "audio-hours per minute" in resumed.stdout
    restarted = extract_embeddings(
        extraction(
            str(random2048_dir),
            "audiofolder",
            str(output),
            data_dir=str(root),
            shard_size=3,
            overwrite_output_dir=True,
        )
    )
    assert restarted.num_examples == 5
    np.testing.assert_array_equal(embeddings(output), embeddings(tmp_path / "ref"))


def test_source_fingerprint_sees_a_file_written_again_under_its_name(tmp_path):
    """A folder of files: datasets fingerprints it by the names; a clip exported again (same length, so the same
    size) must make another source, or a resumed extraction would mix embeddings of two versions."""
    from byola_hf.tools.data import load_source, source_fingerprint

    clip = tmp_path / "clips" / "a.wav"
    clip.parent.mkdir()
    sf.write(clip, np.linspace(-0.5, 0.5, 1600, dtype=np.float32), 16000, subtype="PCM_16")
    before = source_fingerprint(load_source(str(clip.parent)), "audio")
    assert source_fingerprint(load_source(str(clip.parent)), "audio") == before
    sf.write(clip, np.linspace(0.5, -0.5, 1600, dtype=np.float32), 16000, subtype="PCM_16")
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))
    assert source_fingerprint(load_source(str(clip.parent)), "audio") != before


def test_a_copied_model_folder_is_the_same_model_and_new_statistics_another(random2048_dir, tmp_path):
    """The model's fingerprint held the path it was loaded from: the same weights and statistics loaded from a copied
    folder, or as `dir/`, were "another model", so byola-linear-eval refused splits embedded with them and a resumed
    extraction was refused. Statistics or weights that differ still make another model."""
    import shutil

    from byola_hf.extract.extract import model_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(random2048_dir, copy)
    original = model_fingerprint(AutoModel.from_pretrained(random2048_dir))
    assert model_fingerprint(AutoModel.from_pretrained(copy)) == original
    assert model_fingerprint(AutoModel.from_pretrained(f"{random2048_dir}/")) == original
    assert model_fingerprint(AutoModel.from_pretrained(copy, std=3.0)) != original
    model = AutoModel.from_pretrained(copy)
    with torch.no_grad():
        model.fc1.bias[0] += 1.0
    assert model_fingerprint(model) != original


def test_a_folder_with_split_folders_is_not_read_whole(audio_folder):
    """`--dataset_name root/` where root holds train/ and test/: --split would be ignored and the splits mixed, so it
    is refused with the ways to say what is meant; a glob reads every file on purpose."""
    from byola_hf.tools.data import load_source

    root, _ = audio_folder
    with pytest.raises(ValueError, match=r"holds split folders \(train\): read one with --dataset_name audiofolder"):
        load_source(str(root), split="test")
    assert len(load_source(str(root / "**" / "*.wav"))) == len(load_source(str(root / "train"))) == 5


@pytest.mark.parametrize(
    "layout, message",
    [
        (
            ("train-clean-100/1/a.wav", "test-clean/2/b.wav"),
            r"split folders \(test-clean, train-clean-100\): read one",
        ),
        (
            ("Train/a.wav", "Test/b.wav"),
            r"split folders \(Test, Train\): pass the folder of one split \(such as Test/",
        ),
        (
            ("spk/Dev/a.wav", "spk/b.wav"),
            r"split folders \(spk/Dev\): pass the folder of one split \(such as spk/Dev/",
        ),
        (("x/train_0001.wav", "x/test_0001.wav"), r"files named for splits \(test_0001.wav, train_0001.wav\): read"),
        (("Train_1.wav", "Test_1.wav"), r"files named for splits \(Test_1.wav, Train_1.wav\): pass one split's files"),
        (("train/notes.txt", "trainer/a.wav", "contest/b.wav", "sounds/test_tone.wav", "latest/c.wav"), None),
        (("Steam train passing.wav", "Mic test.wav", "birds.wav", "Mic test/d.wav"), None),
        (("Mic test/train/a.wav", "b.wav"), r"split folders \(Mic test/train\): read one"),
    ],
)
def test_audio_laid_out_in_splits_is_found_as_datasets_reads_it(layout, message, tmp_path):
    """Only folders named exactly train, test... at the top were split folders: a LibriSpeech root (train-clean-100/,
    test-clean/), which datasets' audiofolder reads as train and test splits, was read whole, its test audio mixed
    into the training split's statistics, and so was a folder of train_*.wav beside test_*.wav. datasets' keywords
    and separators are used now, for audio files at any depth, in any case; recordings beside which one folder or
    file happens to name a split are no split layout (datasets would read them as one and drop the others)."""
    import soundfile

    from byola_hf.tools.data import load_source

    root = tmp_path / "root"
    for name in layout:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".wav"):
            soundfile.write(root / name, np.zeros(1600, np.float32), 16000)
        else:
            (root / name).write_text("not audio")
    if message is None:
        assert len(load_source(f"{root}/")) == 4
        return
    with pytest.raises(ValueError, match=message):
        load_source(f"{root}/")
    assert f"'{root}/**/*.wav' to read every file" in str(pytest.raises(ValueError, load_source, str(root)).value)


def test_a_folder_reached_again_through_a_symlink_is_read_once(audio_folder, tmp_path):
    """A link to a parent folder (a cycle) made the recursive listing read each clip 41 times (until the path got too
    deep), a link to a sibling folder twice, and both links together never ended. A linked file is read."""
    from byola_hf.tools.data import audio_files_dataset

    clips = sorted((audio_folder[0] / "train").glob("*/*.wav"))
    (tmp_path / "data" / "a").mkdir(parents=True)
    for clip in clips[:2]:
        (tmp_path / "data" / "a" / clip.name).symlink_to(clip)
    (tmp_path / "data" / "a" / "parent").symlink_to(tmp_path / "data")
    (tmp_path / "data" / "again").symlink_to(tmp_path / "data" / "a")
    assert audio_files_dataset(str(tmp_path / "data"))["path"] == [
        str(tmp_path / "data" / "a" / clip.name) for clip in clips[:2]
    ]


def test_never_deletes_what_it_did_not_write(audio_folder, random2048_dir, tmp_path):
    root, _ = audio_folder
    project = tmp_path / "p"
    (project / "dataset").mkdir(parents=True)
    (project / "shards").mkdir()
    for index, path in enumerate(sorted((root / "train").rglob("*.wav"))):
        (project / "dataset" / f"{index}.wav").write_bytes(path.read_bytes())
    (project / "shards" / "notes.txt").write_text("mine")
    before = sorted(path.name for path in project.rglob("*"))
    for output in (project, project / "dataset"):
        with pytest.raises(ValueError, match="did not write"):
            extract_embeddings(
                extraction(str(random2048_dir), str(project / "dataset"), str(output), overwrite_output_dir=True)
            )
    assert sorted(path.name for path in project.rglob("*")) == before


def test_two_runs_into_one_folder_refuse(audio_folder, random2048_dir, random3072_dir, tmp_path):
    root, bad = audio_folder
    output = str(tmp_path / "out")
    extract_embeddings(extraction(str(random2048_dir), str(root / "train" / "yes"), output))
    for model, source in ((random3072_dir, root / "train" / "yes"), (random2048_dir, root / "train" / "no")):
        with pytest.raises(ValueError, match="other inputs or arguments"):
            extract_embeddings(extraction(str(model), str(source), output))
    assert len(load_embeddings(output)) == 3


def test_bad_audio_is_reported_by_path_or_skipped_even_when_a_batch_has_only_bad_files(
    audio_folder, random2048_dir, tmp_path
):
    _, bad = audio_folder
    with pytest.raises(ValueError, match=r"a_corrupt\.wav could not be embedded.*--skip_bad"):
        extract_embeddings(extraction(str(random2048_dir), "audiofolder", str(tmp_path / "stop"), data_dir=str(bad)))
    result = extract_embeddings(
        extraction(
            str(random2048_dir),
            "audiofolder",
            str(tmp_path / "skip"),
            data_dir=str(bad),
            skip_bad=True,
            shard_size=2,
            batch_size=2,
            frames=True,
        )
    )
    assert result.num_examples == 3
    assert sorted(item["path"].rsplit("/", 1)[-1] for item in result.skipped) == ["a_corrupt.wav", "b_empty.wav"]
    assert "empty" in [item["error"] for item in result.skipped if "b_empty" in item["path"]][0]
    assert json.loads((tmp_path / "skip" / "skipped.json").read_text()) == result.skipped
    # The fix the first error names, in the same folder: the stopped run's folder takes --skip_bad and ends as the
    # run made with it from the start did (it was refused as another run, and only --overwrite_output_dir helped).
    again = extract_embeddings(
        extraction(str(random2048_dir), "audiofolder", str(tmp_path / "stop"), data_dir=str(bad), skip_bad=True)
    )
    assert again.num_examples == 3 and again.skipped == result.skipped


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--shard_size", "0"], "--shard_size must be a whole number >= 1"),
        (["--batch_size", "-1"], "--batch_size must be a whole number >= 1"),
        (["--layers", "0"], "pass --frames"),
        (["--frames", "--layers", "9"], "--layers must be"),
        (["--unit_seconds", "0"], "--unit_seconds must be"),
        (["--device", "nowhere"], "is not a torch device"),
        (["--metadata_csv", "missing.csv"], "Give either --dataset_name"),
    ],
)
def test_user_mistakes_are_one_line(audio_folder, random2048_dir, tmp_path, capsys, arguments, message):
    root, _ = audio_folder
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", str(random2048_dir), "--dataset_name", str(root / "train"), "--output_dir",
              str(output)] + arguments)  # fmt: skip
    stderr = capsys.readouterr().err
    result = subprocess.CompletedProcess([], exit_info.value.code, "", stderr)
    assert one_line_error(result) and message in stderr, stderr
    assert not output.exists()


@slow
def test_two_ranks_write_the_same_dataset_as_one_process(audio_folder, random2048_dir, tmp_path):
    root, _ = audio_folder
    result = run_two_ranks(
        "-m",
        "byola_hf.extract.cli",
        "--model_name_or_path",
        str(random2048_dir),
        "--dataset_name",
        "audiofolder",
        "--data_dir",
        str(root),
        "--output_dir",
        str(tmp_path / "ranks"),
        "--shard_size",
        "2",
        "--num_workers",
        "0",
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = extract_embeddings(
        extraction(str(random2048_dir), "audiofolder", str(tmp_path / "one"), data_dir=str(root), shard_size=2)
    )
    ranks, one = load_embeddings(str(tmp_path / "ranks")), load_embeddings(single.output_dir)
    assert ranks["path"] == one["path"] and ranks["label"] == one["label"]
    np.testing.assert_allclose(np.stack(ranks["embedding"]), np.stack(one["embedding"]), atol=1e-6)


def test_the_documented_random_model_recipe_extracts_every_layer_at_its_width(audio_folder, tmp_path, monkeypatch):
    text = (PROJECT_ROOT / "docs" / "embeddings.md").read_text()
    section = text[text.index("## A random model for smoke tests") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(snippet, {})  # noqa: S102  (the documented recipe, as written)
    root, _ = audio_folder
    result = extract_embeddings(
        extraction(
            str(tmp_path / "byola-v2-random"),
            str(root / "train" / "no"),
            str(tmp_path / "out"),
            frames=True,
            layers="all",
        )
    )
    dataset = load_embeddings(result.output_dir)
    config = AutoModel.from_pretrained(tmp_path / "byola-v2-random").config
    widths = layer_widths(config)
    assert config.variant == "AudioNTT2022" and widths[-1] == config.feature_d == 3072 and len(widths) == 5
    for layer, width in enumerate(widths):
        frames = np.asarray(dataset[0][f"frames_{layer}"])
        assert frames.shape == (len(dataset[0]["timestamps"]), width) and np.isfinite(frames).all()
    assert np.std(dataset[0]["embedding"]) > 0


def test_a_full_disk_is_one_line_and_leaves_no_shard_that_looks_finished(
    audio_folder, random2048_dir, tmp_path, capsys, monkeypatch
):
    import datasets

    def full(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full)
    root, _ = audio_folder
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", str(random2048_dir), "--dataset_name", str(root / "train"), "--output_dir",
              str(output), "--num_workers", "0"])  # fmt: skip
    stderr = capsys.readouterr().err
    assert one_line_error(subprocess.CompletedProcess([], exit_info.value.code, "", stderr)), stderr
    assert "No space left on device" in stderr
    assert not (output / "shards").exists() or not any((output / "shards").iterdir())


EXTRACT_FLAGS = every_flag(build_parser())


@pytest.mark.parametrize("index, name", EXTRACT_FLAGS)
def test_a_rerun_with_any_flag_changed_is_refused_unless_it_may_change(index, name, tmp_path):
    """byola-extract's record holds every flag, read from its dataclass (a flag added later is covered), but its
    may-change list: the shared one, and the clips per forward, the device and the decoding workers, which change
    the float rounding or the speed only. Any other flag changed on a re-run is refused in one line naming it."""
    from byola_hf.extract.extract import MAY_CHANGE, run_record
    from byola_hf.tools.outputs import MAY_CHANGE_ON_RESUME

    (arguments,) = build_parser().parse_args_into_dataclasses(
        args=["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", str(tmp_path / "run")]
    )
    source = {"clips": 3, "fingerprint": "f"}
    assert_rerun_refused_unless_it_may_change(
        lambda args: run_record(args, "model", source), arguments, name, MAY_CHANGE, tmp_path
    )
    assert MAY_CHANGE - MAY_CHANGE_ON_RESUME == {"batch_size", "device", "num_workers", "skip_bad"}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--dataset_name", "{folder}", "--split", "test"], "--split test is not read with --dataset_name"),
        (["--dataset_name", "{folder}", "--dataset_config_name", "x"], "--dataset_config_name x is not read with"),
        (["--metadata_csv", "task.csv", "--split", "test"], "--split test is not read with --metadata_csv"),
        (["--metadata_csv", "task.csv", "--dataset_config_name", "x"], "--dataset_config_name x is not read with"),
    ],
)
def test_a_flag_the_source_does_not_read_is_refused(
    audio_folder, random2048_dir, tmp_path, capsys, arguments, message
):
    """A task CSV is read whole (its split column says the splits) and a folder of audio files as it is: `--split`
    and `--dataset_config_name` beside them were ignored, and the run embedded other clips than the user meant."""
    root, _ = audio_folder
    given = [argument.format(folder=root / "train") for argument in arguments]
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", str(random2048_dir), "--output_dir", str(tmp_path / "out"), *given])
    stderr = capsys.readouterr().err
    assert one_line_error(subprocess.CompletedProcess([], exit_info.value.code, "", stderr)), stderr
    assert message in stderr and not (tmp_path / "out").exists()


def test_embed_clip_batch_refuses_a_model_in_training_mode(random2048_dir):
    """The exported batch function takes the model as the caller left it: in training mode (after Trainer.train(),
    or a parent module's .train()) BatchNorm would normalise each clip with its batch's statistics."""
    from byola_hf.extract.embed import ClipBatch

    model = AutoModel.from_pretrained(random2048_dir)
    fe = BYOLAFeatureExtractor.from_model_config(model.config)
    batch = ClipBatch(clips=[], waveforms=None, lengths=[])
    assert embed_clip_batch(model.eval(), fe, batch, None, torch.device("cpu")) == []
    with pytest.raises(ValueError, match=r"eval mode: call model.eval\(\) first"):
        embed_clip_batch(model.train(), fe, batch, None, torch.device("cpu"))


def test_a_model_folder_without_weights_is_one_line(audio_folder, random2048_dir, tmp_path, capsys):
    """A model folder whose weights file is missing ended byola-extract in transformers' traceback (byola-compute-stats
    said it in one line)."""
    import shutil

    root, _ = audio_folder
    model = tmp_path / "model"
    shutil.copytree(random2048_dir, model)
    (model / "model.safetensors").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", str(model), "--dataset_name", str(root / "train"), "--output_dir",
              str(tmp_path / "out")])  # fmt: skip
    stderr = capsys.readouterr().err
    result = subprocess.CompletedProcess([], exit_info.value.code, "", stderr)
    assert one_line_error(result) and "cannot be loaded (" in stderr and "convert them again" in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_a_run_killed_while_finishing_still_lists_its_skipped_clips(
    audio_folder, random2048_dir, tmp_path, monkeypatch
):
    """`dataset/` marks a run finished, and it was moved into place before skipped.json was written: a run killed
    between the two was read back as finished, saying it skipped nothing (linear evaluation then warned of none)."""
    import byola_hf.extract.extract as extract_module

    _, bad = audio_folder
    arguments = extraction(str(random2048_dir), "audiofolder", str(tmp_path / "out"), data_dir=str(bad), skip_bad=True)
    written = extract_module.write_json_atomic

    def killed_at_the_list(path, value):
        if Path(path).name == "skipped.json":
            raise KeyboardInterrupt
        written(path, value)

    with monkeypatch.context() as patched:
        patched.setattr(extract_module, "write_json_atomic", killed_at_the_list)
        with pytest.raises(KeyboardInterrupt):
            extract_embeddings(arguments)
    result = extract_embeddings(arguments)
    assert len(result.skipped) == 2 and len(json.loads((tmp_path / "out" / "skipped.json").read_text())) == 2
    assert not (tmp_path / "out" / "shards").exists()

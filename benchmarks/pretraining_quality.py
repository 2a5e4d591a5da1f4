"""Does pre-training from scratch beat the same network at random initialisation? A linear evaluation of both on a
keyword task, after `byola-pretrain` on a small in-domain corpus.

The task (made here, with espeak-ng and the recorded prompts of `asterisk-core-sounds-en-wav`): 20 keywords (Speech
Commands' core words), 48 training and 24 test clips each, one second at 16 kHz; each clip is a word at a random
place, spoken by an espeak-ng voice and variant at a random pitch and speed, over a recorded telephone prompt at
5-20 dB SNR. Training and test voices are disjoint. The pre-training corpus is `--corpus_clips` more such clips of
those words and 48 others, spoken by the training voices, plus the task's training clips (without labels).

`byola-pretrain` runs with `--eval_on_start`, so its log has the linear probe of the network before any step (the
random initialisation) and every `--eval_steps`, with the effective rank of the test clips' embeddings; at the end
both encoders, and optionally `--compare` models (a converted official checkpoint, say), are evaluated with
`--seeds` classifier seeds each (the task's statistics are the corpus's, as byola-pretrain computed them). One
classifier seed on one network is noisy (a few points): `--random_inits N` evaluates N random initialisations and
`--checkpoints STEP ...` the online encoders of saved checkpoints, and each group's scores are also pooled.

    python benchmarks/pretraining_quality.py --workdir DIR [--steps 2700] [--batch 64] [--eval_steps 300]
                                             [--corpus_clips 1600] [--learning_rate LR] [--device cpu|cuda]
                                             [--compare MODEL_DIR ...] [--checkpoints STEP ...] [--random_inits N]
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root has byola_hf/

from byola_hf.tools.outputs import claim_output_dir, remove_path, write_json_atomic  # noqa: E402


RATE = 16000
KEYWORDS = "yes no up down left right on off stop go zero one two three four five six seven eight nine".split()
OTHER_WORDS = (
    "house water green paper happy music river window garden yellow morning table little people number city animal "
    "orange summer winter mother father kitchen button rabbit pencil doctor silver market letter bottle forest "
    "island monkey pocket ticket rocket salad tiger violin wagon zipper camera dinner engine"
).split()
TRAIN_BASES = ["en-us", "en-gb", "en-gb-scotland", "en-029"]
TEST_BASES = ["en-gb-x-rp", "en-gb-x-gbcwmd", "en-us-nyc", "en-gb-x-gbclan"]
BACKGROUND_DIR = Path("/usr/share/asterisk/sounds")
# Clips a keyword per split. 16/8 (160 test clips) left a 4-point sampling error on accuracy, as large as the gaps
# measured; 48/24 brings it to about 2 points.
CLIPS_PER_WORD = {"train": 48, "test": 24}


def voice_variants() -> tuple[list[str], list[str]]:
    """espeak-ng's voice variants (`voices/!v` in its data folder), split two thirds for the training voices and
    one third for the test voices."""
    version = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    data = Path(version.split("Data at:")[1].strip())
    variants = sorted(path.name for path in (data / "voices" / "!v").iterdir() if " " not in path.name)
    random.Random(0).shuffle(variants)
    return variants[: len(variants) * 2 // 3], variants[len(variants) * 2 // 3 :]


def speak(text: str, voice: str, speed: int, pitch: int, path: Path) -> np.ndarray:
    """espeak-ng's waveform of `text` at 16 kHz (made at `path` by the mini sets' synthesiser), silence trimmed,
    at most one second."""
    from byola_hf.audio import load_audio
    from byola_hf.superb.mini_sets import Utterance, synthesise

    synthesise(Utterance(text, voice, speed, pitch, {}), path, RATE)
    return np.trim_zeros(load_audio(path, RATE))[:RATE]


def background(rng: random.Random, backgrounds: list[Path]) -> np.ndarray:
    """One second of a random recorded prompt (repeated when shorter), at 16 kHz."""
    from byola_hf.audio import load_audio

    waveform = load_audio(rng.choice(backgrounds), RATE)
    waveform = np.tile(waveform, 1 + RATE // len(waveform))
    start = rng.randint(0, len(waveform) - RATE)
    return waveform[start : start + RATE]


def make_clip(job: tuple) -> None:
    """Write one clip at `path` (the word alone first, then the mix): `job` = (path, word, voice bases, variants,
    seed, background files)."""
    path, word, bases, variants, seed, backgrounds = job
    rng = random.Random(seed)
    voice = f"{rng.choice(bases)}+{rng.choice(variants)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    speech = speak(word, voice, rng.randint(110, 220), rng.randint(10, 90), path)
    clip = np.zeros(RATE, np.float32)
    start = rng.randint(0, RATE - len(speech))
    clip[start : start + len(speech)] = speech
    noise = background(rng, backgrounds)
    snr_db = rng.uniform(5, 20)
    clip += noise * np.sqrt((speech**2).mean() / max((noise**2).mean(), 1e-12) / 10 ** (snr_db / 10))
    sf.write(path, 0.5 * clip / np.abs(clip).max(), RATE)


COMMAND = "pretraining_quality"
# What this script writes in --workdir: the data (data.json, written last, says it is complete) and byola-pretrain's
# run folders (each also claimed by byola-pretrain itself).
OUTPUTS = ("task", "corpus", "data.json", "pretrain_*")


def claim_workdir(workdir: Path, recipe: dict) -> bool:
    """Claim `workdir` for the data of `recipe` as every command claims its folder
    ([`~byola_hf.tools.outputs.claim_output_dir`]); `True` when the data there is complete (reused). A killed run's
    unfinished data is removed to be made again; another recipe's data, or a folder holding files of its own, is
    refused in one line."""
    try:
        claim_output_dir(workdir, COMMAND, {"data": recipe}, OUTPUTS, overwrite=None)
    except ValueError as error:
        sys.exit(f"pretraining_quality: {error}".replace("--output_dir", "--workdir"))
    if (workdir / "data.json").exists():
        return True
    for name in ("task", "corpus"):
        remove_path(workdir / name)
    return False


def make_data(workdir: Path, corpus_clips: int) -> tuple[Path, Path]:
    """The task (`workdir/task/{train,test}/<word>/`) and the pre-training corpus (`workdir/corpus/`), made once;
    a later run reuses them only when they were made with the same sizes."""
    task, corpus = workdir / "task", workdir / "corpus"
    recipe = {"clips_per_word": CLIPS_PER_WORD, "corpus": corpus_clips}
    if not (workdir / "data.json").exists():  # to be made: what it is made with must be there first
        if shutil.which("espeak-ng") is None:
            sys.exit("pretraining_quality: espeak-ng is not installed (apt-get install espeak-ng).")
        if not any(BACKGROUND_DIR.rglob("*.wav")):
            package = "asterisk-core-sounds-en-wav"
            sys.exit(f"pretraining_quality: no recordings in {BACKGROUND_DIR} (apt-get install {package}).")
    if claim_workdir(workdir, recipe):
        return task, corpus
    backgrounds = sorted(BACKGROUND_DIR.rglob("*.wav"))
    train_variants, test_variants = voice_variants()
    jobs = []
    for split, bases, variants in (("train", TRAIN_BASES, train_variants), ("test", TEST_BASES, test_variants)):
        for index, word in enumerate(KEYWORDS):
            for k in range(CLIPS_PER_WORD[split]):
                seed = (0 if split == "train" else 10**6) + 1000 * index + k
                jobs.append((task / split / word / f"{word}_{k}.wav", word, bases, variants, seed, backgrounds))
    words = random.Random(1)
    for k in range(corpus_clips):
        word = words.choice(KEYWORDS + 2 * OTHER_WORDS)
        jobs.append((corpus / f"c{k:05d}.wav", word, TRAIN_BASES, train_variants, 2 * 10**6 + k, backgrounds))
    with Pool(2) as pool:
        pool.map(make_clip, jobs, chunksize=16)
    corpus.mkdir(parents=True, exist_ok=True)  # with --corpus_clips 0 no clip made it
    for path in (task / "train").rglob("*.wav"):  # the task's training clips join the corpus, unlabelled
        shutil.copy(path, corpus / f"task_{path.parent.name}_{path.name}")
    write_json_atomic(workdir / "data.json", recipe)
    return task, corpus


def pretrain(args: argparse.Namespace, task: Path, corpus: Path) -> Path:
    """Run `byola-pretrain` (resuming a run of the same arguments); the output folder."""
    suffix = "" if args.learning_rate is None else f"_lr{args.learning_rate:g}"
    output = args.workdir / f"pretrain_{args.variant}_{args.feature_d}_b{args.batch}{suffix}"
    command = [sys.executable, "-m", "byola_hf.pretraining.cli", "--dataset_name", str(corpus), "--output_dir",
               str(output), "--variant", args.variant, "--feature_d", str(args.feature_d),
               "--per_device_train_batch_size", str(args.batch), "--max_steps", str(args.steps),
               "--save_steps", str(args.eval_steps), "--logging_steps", "25", "--dataloader_num_workers", "1",
               "--eval_dataset_name", "audiofolder", "--eval_data_dir", str(task), "--eval_label_column_name",
               "label", "--eval_steps", str(args.eval_steps), "--eval_on_start", "true",
               "--disable_tqdm", "true"]  # fmt: skip
    if args.learning_rate is not None:
        command += ["--learning_rate", str(args.learning_rate)]
    if args.device == "cpu":
        command.append("--use_cpu")
    subprocess.run(command, check=True)
    return output


def probe_curve(output: Path) -> list[tuple[int, float]]:
    """(step, accuracy) of each linear probe byola-pretrain logged (step 0: the random initialisation)."""
    states = sorted(output.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    history = json.loads(states[-1].read_text())["log_history"]
    # A resumed run probes again at its first step (--eval_on_start): one value a step.
    curve = {entry["step"]: entry["eval_linear_accuracy"] for entry in history if "eval_linear_accuracy" in entry}
    return sorted(curve.items())


def evaluate(models: dict[str, object], task: Path, seeds: int) -> dict[str, object]:
    """Each model's `LinearProbeMetrics` on the task: test accuracy per classifier seed, and the effective rank of
    its test clips' embeddings."""
    from byola_hf import BYOLAFeatureExtractor
    from byola_hf.pretraining.linear_probe import linear_probe_metrics, load_linear_probe_data

    data = load_linear_probe_data("audiofolder", "label", RATE, data_dir=str(task))
    return {
        name: linear_probe_metrics(model, BYOLAFeatureExtractor.from_model_config(model.config), data,
                                   range(42, 42 + seeds))
        for name, model in models.items()
    }  # fmt: skip


def random_encoder(output: Path, seed: int = 42):
    """The pre-trained network (same config and statistics) at a random initialisation (42: byola-pretrain's default
    seed, the run's own)."""
    from transformers import set_seed

    from byola_hf.pretraining import BYOLAForPreTraining, BYOLAPreTrainingConfig

    checkpoint = max(output.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    config = BYOLAPreTrainingConfig.from_pretrained(checkpoint)
    set_seed(seed)
    return BYOLAForPreTraining(config).encoder_model()


def encoders(args: argparse.Namespace, output: Path) -> dict[str, object]:
    """The encoders to evaluate, by name: `--random_inits` random initialisations, the pre-trained network, the
    online encoders of `--checkpoints`, then the `--compare` folders (all with the corpus statistics)."""
    from byola_hf import BYOLAModel
    from byola_hf.pretraining import BYOLAForPreTraining

    models = {
        f"random initialisation, seed {seed}": random_encoder(output, seed)
        for seed in range(42, 42 + args.random_inits)
    }
    models[f"pre-trained, {args.steps} steps"] = BYOLAModel.from_pretrained(output)
    for step in args.checkpoints:
        checkpoint = output / f"checkpoint-{step}"
        if not checkpoint.is_dir():
            raise SystemExit(
                f"--checkpoints {step}: {checkpoint} does not exist (checkpoints come every --eval_steps)."
            )
        models[f"checkpoint {step}"] = BYOLAForPreTraining.from_pretrained(checkpoint).encoder_model()
    config = models[f"pre-trained, {args.steps} steps"].config  # the corpus statistics
    for folder in args.compare:
        models[folder] = BYOLAModel.from_pretrained(folder, mean=config.mean, std=config.std)
    return models


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="Folder for the data and the runs")
    parser.add_argument("--steps", type=int, default=2700, help="Pre-training steps")
    parser.add_argument("--batch", type=int, default=64, help="Clips per step")
    parser.add_argument("--eval_steps", type=int, default=300, help="Steps between linear probes (and checkpoints)")
    parser.add_argument("--corpus_clips", type=int, default=1600, help="Unlabelled clips made for pre-training")
    parser.add_argument("--variant", default="AudioNTT2020", help="AudioNTT2020 (v1) or AudioNTT2022 (v2)")
    parser.add_argument("--feature_d", type=int, default=512, help="Encoder width")
    parser.add_argument("--learning_rate", type=float, help="Adam's learning rate (default: the variant's original)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (pre-training device)")
    parser.add_argument("--seeds", type=int, default=3, help="Classifier seeds per evaluated model")
    parser.add_argument("--compare", nargs="*", default=[], help="More BYOL-A model folders to evaluate")
    parser.add_argument(
        "--checkpoints", type=int, nargs="*", default=[], help="Steps of saved checkpoints to evaluate"
    )
    parser.add_argument("--random_inits", type=int, default=1, help="Random initialisations evaluated (seeds 42, ...)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.random_inits < 1:
        raise SystemExit("--random_inits must be at least 1.")
    task, corpus = make_data(args.workdir, args.corpus_clips)
    output = pretrain(args, task, corpus)
    print("linear probe during pre-training (step, accuracy; step 0 is the random network):", probe_curve(output))
    models = encoders(args, output)
    results = evaluate({name: model.eval() for name, model in models.items()}, task, args.seeds)
    for name, result in results.items():
        accuracies = result.accuracies
        print(f"{name}: {np.mean(accuracies):.3f} +- {np.std(accuracies):.3f} {[round(a, 4) for a in accuracies]}, "
              f"effective rank of the test embeddings {result.effective_rank:.1f}")  # fmt: skip
    for group in ("random initialisation", "checkpoint"):  # every seed of every member
        pooled = [a for name, result in results.items() if name.startswith(group) for a in result.accuracies]
        if len(pooled) > args.seeds:
            print(f"{group}s pooled: {np.mean(pooled):.3f} +- {np.std(pooled):.3f} over {len(pooled)} scores")


if __name__ == "__main__":
    main()

"""Fine-tuning against linear evaluation of the same encoder on the same split: issue 35's goal, on a task whose
linear evaluation is well below 1.0.

The task is `pretraining_quality.py`'s keyword task (its `make_data` with no pre-training corpus): 20 keywords spoken
by espeak-ng voice variants over background recordings at 5-20 dB SNR, 48 training and 24 test clips per word, the
test voices disjoint from the training voices. A random fifth of the training clips (seeded) is the validation
split. Then, as a user would: `byola-compute-stats` on the training clips, `byola-extract` + `byola-linear-eval` (the
frozen encoder) and `byola-finetune` (the whole network), each on the same task CSV and seeds, and the two test
accuracies (mean and std over seeds) with their difference.

    python benchmarks/finetune_quality.py --model_name_or_path BYOLA_DIR --workdir DIR [--seeds 3] [--epochs 30]
        [--learning_rate 5e-2] [--batch 32] [--background_dir /usr/share/asterisk/sounds] [-- FINETUNE_FLAGS...]

The fine-tuning defaults are those measured in docs/finetuning.md (SGD at 5e-2, batch 32, 30 epochs, 3 of warm-up,
no augmentation); flags after `--` go to `byola-finetune` as they are (e.g. `-- --mixup 0.5`).
"""

import argparse
import csv
import json
import random
import subprocess
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root has byola_hf/

from benchmarks import pretraining_quality  # noqa: E402
from byola_hf.tools.outputs import atomic_path, claim_output_dir  # noqa: E402


COMMAND = "finetune_quality"
OUTPUTS = ("data", "task.csv", "model", "embeddings", "linear_eval", "finetune")
VALIDATION_FRACTION = 0.2


def write_task_csv(task: Path, path: Path, seed: int = 0) -> dict[str, int]:
    """The task CSV (`file_name` relative to `task`, `label`, `split`): the test clips as `test`, a random
    `VALIDATION_FRACTION` of the training clips (drawn with `seed`) as `valid`, the rest `train`. Returns the
    counts."""
    draw, rows = random.Random(seed), []
    for folder in ("train", "test"):
        for clip in sorted((task / folder).rglob("*.wav")):
            split = "test" if folder == "test" else ("valid" if draw.random() < VALIDATION_FRACTION else "train")
            rows.append((str(clip.relative_to(task)), clip.parent.name, split))
    with atomic_path(path) as staged, open(staged, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file_name", "label", "split"])
        writer.writerows(rows)
    return {split: sum(1 for row in rows if row[2] == split) for split in ("train", "valid", "test")}


def command(module: str, *arguments: object) -> None:
    """A byola_hf command in a process of its own, as a user runs it; its failure ends this script."""
    result = subprocess.run([sys.executable, "-c", f"from {module} import main; main()", *map(str, arguments)])
    if result.returncode != 0:
        sys.exit(f"{COMMAND}: {module} failed (exit {result.returncode}); its message is above.")


def run_protocols(args: argparse.Namespace, task: Path, csv_path: Path, finetune_flags: list[str]) -> None:
    """Statistics, linear evaluation and fine-tuning, each into its own folder of `--workdir` (a re-run resumes)."""
    work, model = args.workdir, args.workdir / "model"
    command("byola_hf.stats.cli", "--model_name_or_path", args.model_name_or_path, "--dataset_name", "audiofolder",
            "--data_dir", task, "--output_dir", model)  # fmt: skip
    common = ["--metadata_csv", csv_path, "--data_dir", task, "--unit_seconds", "1.0"]
    command("byola_hf.extract.cli", "--model_name_or_path", model, *common, "--output_dir", work / "embeddings")
    command("byola_hf.linear_eval.cli", "--embeddings_dir", work / "embeddings", "--output_dir",
            work / "linear_eval", "--seeds", args.seeds)  # fmt: skip
    recipe = ["--learning_rate", args.learning_rate, "--per_device_train_batch_size", args.batch,
              "--num_train_epochs", args.epochs, "--warmup_epochs", 3, "--mixup", 0, "--freq_mask", 0, "--time_mask",
              0, "--no_resize_crop"]  # fmt: skip
    device = ["--use_cpu"] if args.device == "cpu" else []
    command("byola_hf.finetune.cli", "--model_name_or_path", model, *common, "--output_dir", work / "finetune",
            "--seeds", args.seeds, *recipe, *finetune_flags, *device, "--per_device_eval_batch_size", 64,
            "--report_to", "none", "--disable_tqdm", "true")  # fmt: skip


def report(workdir: Path) -> dict[str, float]:
    """Both protocols' test accuracy (mean, std over seeds) from their `eval_results.json`, and the difference."""
    linear = json.loads((workdir / "linear_eval" / "eval_results.json").read_text())
    finetune = json.loads((workdir / "finetune" / "eval_results.json").read_text())
    row = {
        "linear_eval": linear["test_accuracy"],
        "linear_eval_std": linear["test_accuracy_std"],
        "finetune": finetune["test_accuracy"],
        "finetune_std": finetune["test_accuracy_std"],
    }
    row["difference"] = row["finetune"] - row["linear_eval"]
    print(f"linear evaluation {row['linear_eval']:.3f} ± {row['linear_eval_std']:.3f}, fine-tuning "
          f"{row['finetune']:.3f} ± {row['finetune_std']:.3f}: {row['difference']:+.3f} "
          f"(goal > 0: {'met' if row['difference'] > 0 else 'not met'})")  # fmt: skip
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tuning against linear evaluation on a noisy keyword task.")
    parser.add_argument("--model_name_or_path", required=True, help="A BYOL-A model directory (byola-convert)")
    parser.add_argument("--workdir", type=Path, required=True, help="A new folder (or this script's) for everything")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning_rate", type=float, default=5e-2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, or the GPU byola-finetune finds (cuda)")
    parser.add_argument("--background_dir", type=Path, help="Background recordings (default: pretraining_quality's)")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, finetune_flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(ours)
    if args.background_dir is not None:
        pretraining_quality.BACKGROUND_DIR = args.background_dir
    try:
        record = {"arguments": {**{name: str(value) for name, value in vars(args).items()}, "flags": finetune_flags}}
        claim_output_dir(args.workdir, COMMAND, record, OUTPUTS, overwrite=None)
    except ValueError as error:
        sys.exit(f"{COMMAND}: {error}".replace("--output_dir", "--workdir"))
    task, _ = pretraining_quality.make_data(args.workdir / "data", corpus_clips=0)
    print(f"{COMMAND}: task clips {write_task_csv(task, args.workdir / 'task.csv')}")
    run_protocols(args, task, args.workdir / "task.csv", finetune_flags)
    report(args.workdir)


if __name__ == "__main__":
    main()

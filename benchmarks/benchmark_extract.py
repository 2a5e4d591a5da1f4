"""Throughput of `byola-extract` against a plain loop of pipeline calls over the same files, in the same run.

    python benchmarks/benchmark_extract.py [--clips 200] [--seconds 10] [--device cpu|cuda] [--workdir DIR]

It builds an `audiofolder` of espeak-ng speech (`--clips` clips of `--seconds` s at 16 kHz), converts the shared
random 2048-d checkpoint, then times: the baseline (`pipeline("byola-audio-embedding")` called on each file in a
loop), and `extract_embeddings` on the device with `num_workers` 0 and 2 (decoding in the main process, or in two
DataLoader workers overlapping the model). It prints audio-hours per minute, the ratio to the baseline, and the
largest deviation of the embeddings from the baseline's. Goal: >= 1.0x the loop on 2 CPU cores.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root has benchmarks/

from benchmarks.benchmark_stats import build_dataset  # noqa: E402
from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint
from byola_hf.extract import ExtractArguments, extract_embeddings, load_embeddings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark byola-extract against a loop of pipeline calls.")
    shared = Path(os.environ.get("BYOLA_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--checkpoint", default=str(shared / "reference" / "AudioNTT2020-random-seed123-d2048.pth"))
    parser.add_argument("--clips", type=int, default=200, help="Number of clips")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each clip")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--workdir", default=None, help="Where to build the data (a temporary folder by default)")
    args = parser.parse_args(argv)
    from transformers import pipeline

    import byola_hf  # noqa: F401  (registers the pipeline)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="byola-extract-bench-"))
    data = build_dataset(workdir / "data", args.clips, args.seconds)
    model_dir = workdir / "model"
    convert_byola_checkpoint(args.checkpoint, model_dir, mean=-8.907230, std=4.892486)
    files = sorted(str(path) for path in (data / "train").glob("*.wav"))
    hours = len(files) * args.seconds / 3600

    import datasets  # noqa: F401  (imported once, before either is timed: a fixed cost of the command, not a rate)

    start = time.perf_counter()  # both timings include loading the model
    extractor = pipeline("byola-audio-embedding", model=str(model_dir), device=args.device)
    baseline = {path: extractor(path) for path in files}
    baseline_seconds = time.perf_counter() - start
    rows = [("pipeline loop", baseline_seconds, 0.0)]
    runs = [
        (f"byola-extract num_workers {workers}", {"device": args.device, "num_workers": workers}) for workers in (0, 2)
    ]
    for name, options in runs:
        output = workdir / name.replace(" ", "_")
        start = time.perf_counter()
        extract_embeddings(
            ExtractArguments(str(model_dir), str(output), dataset_name="audiofolder", data_dir=str(data), **options)
        )
        seconds = time.perf_counter() - start
        dataset = load_embeddings(str(output))
        deviation = max(
            float(np.abs(np.asarray(embedding) - baseline[path]).max() / np.abs(baseline[path]).max())
            for path, embedding in zip(dataset["path"], dataset["embedding"])
        )
        rows.append((name, seconds, deviation))
    print(f"{len(files)} clips of {args.seconds:g} s ({hours:.2f} h of audio), device {args.device}")
    print(f"{'method':<26} {'audio-h/min':>11} {'vs loop':>8} {'max rel dev':>12}")
    for name, seconds, deviation in rows:
        print(f"{name:<26} {hours / (seconds / 60):>11.2f} {baseline_seconds / seconds:>7.2f}x {deviation:>12.2e}")


if __name__ == "__main__":
    main()

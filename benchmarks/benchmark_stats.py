"""Throughput and memory of the exact statistics (`byola_hf.stats`) against loading every log-mel, then numpy.

    python benchmarks/benchmark_stats.py [--clips 100,400] [--seconds 10] [--workdir DIR]

It builds `audiofolder` datasets of espeak-ng speech (clips of `--seconds` seconds at 16 kHz, two sizes), then
for each size runs, each in a fresh process with datasets' cache disabled: the naive baseline (decode every clip,
keep every log-mel, concatenate, `np.mean`/`np.std`) and `compute_moments` with `num_proc` 1 and 2. It prints
audio-hours per minute, the ratio to the baseline, real-time factor, peak memory (the process and its workers),
and the deviation from the baseline's statistics.
"""

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root has byola_hf/


METHODS = ("naive", "exact-1", "exact-2")


def build_dataset(directory: Path, clips: int, seconds: float, seed: int = 0) -> Path:
    """An audiofolder of `clips` speech clips of `seconds` seconds, spliced from espeak-ng keyword recordings."""
    from byola_hf.superb.mini_sets import make_ks

    source = directory.parent / "source"
    if not source.exists():
        make_ks(source, repeats=1, seed=seed)
    words = [sf.read(path, dtype="float32")[0] for path in sorted((source / "train").glob("*.wav"))]
    rng = np.random.default_rng(seed)
    split = directory / "train"
    split.mkdir(parents=True, exist_ok=True)
    samples = int(seconds * 16000)
    for index in range(clips):
        pieces, total = [], 0
        while total < samples:
            pieces.append(words[rng.integers(len(words))])
            total += len(pieces[-1])
        sf.write(split / f"{index:05d}.wav", np.concatenate(pieces)[:samples], 16000, subtype="FLOAT")
    return directory


def measure(method: str, data_dir: str) -> dict:
    """One run of `method` on the audiofolder at `data_dir`: seconds, statistics and the peak memory of the process
    and its map workers. Run in a fresh process ([`run_method`]), so nothing is cached or already resident."""
    import datasets

    from byola_hf import BYOLAFeatureExtractor
    from byola_hf.stats import compute_moments, load_audio_dataset

    datasets.disable_caching()
    fe = BYOLAFeatureExtractor()
    dataset = load_audio_dataset("audiofolder", data_dir=data_dir, sampling_rate=fe.sampling_rate)
    start = time.perf_counter()
    if method == "naive":
        values = np.concatenate(
            [
                fe(example["audio"]["array"], sampling_rate=fe.sampling_rate)["input_features"][0].ravel()
                for example in dataset
            ]
        ).astype(np.float64)
        mean, std = float(values.mean()), float(values.std())
    else:
        moments = compute_moments(dataset, fe, "audio", batch_size=16, num_proc=int(method.split("-")[1]))
        mean, std = moments.mean, moments.std
    elapsed = time.perf_counter() - start
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    return {"seconds": elapsed, "mean": mean, "std": std, "peak_mb": peak / 1024}


def run_method(method: str, data_dir: Path) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (method, str(data_dir)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark the exact statistics against a load-everything baseline.")
    parser.add_argument("--clips", default="100,400", help="Dataset sizes (number of clips), comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each clip")
    parser.add_argument("--workdir", default=None, help="Where to build the datasets (a temporary folder by default)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="byola-stats-bench-"))
    print(
        f"{'clips':>6} {'hours':>6} {'method':<8} {'audio-h/min':>11} {'vs naive':>9} {'x real time':>11} "
        f"{'peak MB':>8} {'|mean diff|':>12} {'|std diff|':>11}"
    )
    for clips in (int(value) for value in args.clips.split(",")):
        data_dir = build_dataset(workdir / f"clips{clips}", clips, args.seconds)
        hours = clips * args.seconds / 3600
        results = {method: run_method(method, data_dir) for method in METHODS}
        naive = results["naive"]
        for method, result in results.items():
            per_minute = hours / (result["seconds"] / 60)
            print(
                f"{clips:>6} {hours:>6.2f} {method:<8} {per_minute:>11.1f} "
                f"{naive['seconds'] / result['seconds']:>8.2f}x "
                f"{hours * 3600 / result['seconds']:>11.0f} {result['peak_mb']:>8.0f} "
                f"{abs(result['mean'] - naive['mean']):>12.2e} {abs(result['std'] - naive['std']):>11.2e}",
                flush=True,
            )
    print(
        f"(peak MB: the largest of the main process and its map workers; "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB in this driver)"
    )


if __name__ == "__main__":
    main()

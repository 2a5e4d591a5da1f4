"""Where run_superb should compute its log-mels: cached once by `datasets.map`, or in the collator every epoch.

    python benchmarks/benchmark_superb_features.py [--clips 256] [--seconds 4] [--device cpu|cuda] [--epochs 10]

It builds an `audiofolder` of espeak-ng speech, then measures on `--device`, with datasets' cache disabled:

- `cached` (what run_superb does): `datasets.map` computes every clip's log-mel once (on the device, as
  [`~byola_hf.superb.run.log_mel_device`] picks) and stores it; each epoch reads the stored log-mels and pads them
  with run_superb's `LogMelCollator`.
- `collator`: each epoch decodes the audio again, and the collator computes the padded batch's log-mel on the device.
- `decode only`: the collator without its front end, the least any device can take per epoch that way. The clips
  are float WAV, the cheapest format to decode (FLAC or resampled audio only widen the gap).

Epochs of the three alternate (`--repeats` each; the median is kept). It prints the one-off map time, the seconds per
epoch of each, the totals for `--epochs` epochs and their ratio, and the largest difference between the two ways'
log-mels on the valid frames of the first batch.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root has benchmarks/

from benchmarks.benchmark_stats import build_dataset  # noqa: E402


def epoch_seconds(loader, device: torch.device) -> float:
    """One pass over `loader`, every batch moved to `device` and finished (synchronised on a GPU)."""
    start = time.perf_counter()
    for batch in loader:
        features = batch["input_features"].to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    del features
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Cached log-mels vs log-mels in the collator, per SUPERB epoch.")
    parser.add_argument("--clips", type=int, default=256, help="Number of clips")
    parser.add_argument("--seconds", type=float, default=4.0, help="Length of each clip (KS clips are 1 s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch_size", type=int, default=32, help="Training batch size")
    parser.add_argument("--epochs", type=int, default=10, help="Epochs for the totals")
    parser.add_argument("--repeats", type=int, default=3, help="Timed epochs of each way")
    parser.add_argument("--workdir", default=None, help="Where to build the data (a temporary folder by default)")
    return parser


def cached_log_mels(audio, fe, device: torch.device):
    """run_superb's way: every clip's log-mel computed once by `datasets.map` and stored; with the map's seconds."""
    from byola_hf.superb.run import cache_log_mels, log_mel_device, log_mel_rows

    cache_device = log_mel_device(device, None)

    def prepare(batch):
        arrays = [example["array"] for example in batch["audio"]]
        return {"input_features": log_mel_rows(fe, arrays, device=cache_device), "labels": batch["labels"]}

    start = time.perf_counter()
    cached = cache_log_mels(audio.map(prepare, batched=True, batch_size=16, remove_columns=audio.column_names), 64)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return cached, time.perf_counter() - start


def collators(fe, device: torch.device) -> dict:
    """The three ways' collators: run_superb's over cached log-mels, the front end on waveforms, decoding alone."""
    from byola_hf.superb.recipes import recipe_for
    from byola_hf.superb.run import LogMelCollator
    from byola_hf.superb.tasks import SUPERB_TASKS

    def waveform_collator(examples):
        arrays = [example["audio"]["array"] for example in examples]
        batch = fe(arrays, sampling_rate=fe.sampling_rate, return_tensors="pt", device=device)
        return {**batch, "labels": torch.tensor([example["labels"] for example in examples])}

    def decode_only_collator(examples):  # the collator's floor on any device: decoding and padding, no front end
        arrays = [torch.as_tensor(example["audio"]["array"], dtype=torch.float32) for example in examples]
        return {"input_features": torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True)}

    log_mel_collator = LogMelCollator(fe, recipe_for(SUPERB_TASKS["ks"]), downsampling=8)
    return {"cached": log_mel_collator, "collator": waveform_collator, "decode only": decode_only_collator}


def first_batch_deviation(cached, audio, collate: dict, batch_size: int) -> float:
    """The largest difference between the two ways' log-mels on the valid frames of the first batch."""
    from torch.utils.data import DataLoader

    first = {name: next(iter(DataLoader(data, batch_size=batch_size, collate_fn=collate[name])))
             for name, data in (("cached", cached), ("collator", audio))}  # fmt: skip
    mask = first["cached"]["attention_mask"].bool()
    difference = (first["cached"]["input_features"].cpu() - first["collator"]["input_features"].cpu()).abs()
    return float(difference.transpose(1, 2)[mask.cpu()].max())


def report(args: argparse.Namespace, device: torch.device, map_seconds: float, epoch: dict, deviation: float) -> None:
    cached_total = map_seconds + args.epochs * epoch["cached"]
    collator_total = args.epochs * epoch["collator"]
    hours = args.clips * args.seconds / 3600
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"{args.clips} clips of {args.seconds:g} s ({hours:.2f} h of audio), batch {args.batch_size}, {device}{gpu}")
    print(f"cached:   map once {map_seconds:7.2f} s, then {epoch['cached']:7.3f} s per epoch")
    print(f"collator:                   {epoch['collator']:7.3f} s per epoch")
    print(f"  of which decoding at least {epoch['decode only']:7.3f} s per epoch (no front end: any device's floor)")
    print(
        f"{args.epochs} epochs: cached {cached_total:.2f} s, collator {collator_total:.2f} s "
        f"-> cached is {collator_total / cached_total:.2f}x as fast; per epoch after the map "
        f"{epoch['collator'] / epoch['cached']:.2f}x"
    )
    print(f"max |cached - collator| log-mel on valid frames: {deviation:.2e}")


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)

    import datasets
    from torch.utils.data import DataLoader

    from byola_hf import BYOLAFeatureExtractor
    from byola_hf.stats import load_audio_dataset

    datasets.disable_caching()
    device = torch.device(args.device)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="byola-superb-features-bench-"))
    data = build_dataset(workdir / "data", args.clips, args.seconds)
    fe = BYOLAFeatureExtractor()
    audio = load_audio_dataset("audiofolder", data_dir=str(data), sampling_rate=fe.sampling_rate)
    audio = audio.select_columns(["audio"]).add_column("labels", [0] * len(audio))
    cached, map_seconds = cached_log_mels(audio, fe, device)
    collate = collators(fe, device)
    sources = {"cached": cached, "collator": audio, "decode only": audio}
    loaders = {name: DataLoader(data, batch_size=args.batch_size, shuffle=True, collate_fn=collate[name])
               for name, data in sources.items()}  # fmt: skip
    deviation = first_batch_deviation(cached, audio, collate, args.batch_size)
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(args.repeats):
        for name, loader in loaders.items():
            times[name].append(epoch_seconds(loader, device))
    epoch = {name: statistics.median(values) for name, values in times.items()}
    report(args, device, map_seconds, epoch, deviation)
    return {"map": map_seconds, **epoch, "deviation": deviation}


if __name__ == "__main__":
    main()

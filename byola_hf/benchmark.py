"""Throughput and memory of byola_hf against the original upstream's way of computing the same outputs.

The baseline is built here from the original checkpoint the way the SUPERB/s3prl BYOL-A upstream computes:
nnAudio's conv-based `MelSpectrogram` on the zero-padded batch, `log(mel + eps)`, normalisation, then the layered
`AudioNTT2020Task6X` network block by block (Conv-BN-ReLU-MaxPool as separate modules, every conv feature reshaped,
zero-padded and averaged down in time by repeated pair averaging over the padded batch, the five layers
concatenated and split again). Both run in the same process on the same inputs, and their outputs are compared.

    python scripts/benchmark.py [--cases frontend,last,all,pooled] [--repeats 5] [--bf16] [--memory]
                                [--long_audio_minutes 10]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .convert_byola_checkpoint import convert_byola_checkpoint, load_original_state_dict
from .feature_extraction_byola import BYOLAFeatureExtractor
from .modeling_byola import BYOLAModel


SHAPES = {"8x10s": (8, 10.0), "1x60s": (1, 60.0)}
CASES = ("frontend", "last", "all", "pooled")
Outputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]


class OriginalStyleUpstream(nn.Module):
    """The original upstream's computation (see the module docstring), from original-layout tensors."""

    def __init__(self, state_dict: dict[str, torch.Tensor], mean: float, std: float, sampling_rate: int = 16000):
        super().__init__()
        import nnAudio.features

        self.to_melspec = nnAudio.features.MelSpectrogram(
            sr=sampling_rate, n_fft=1024, win_length=1024, hop_length=160, n_mels=64, fmin=60, fmax=7800,
            center=True, power=2, verbose=False,
        )
        self.mean, self.std = mean, std
        self.feature_d = state_dict["fc.0.weight"].shape[0]
        blocks = []
        for i in range(3):
            conv = nn.Conv2d(1 if i == 0 else 64, 64, 3, padding=1)
            norm = nn.BatchNorm2d(64)
            conv.load_state_dict({k: state_dict[f"features.{4 * i}.{k}"] for k in ("weight", "bias")})
            norm.load_state_dict({k: state_dict[f"features.{4 * i + 1}.{k}"]
                                  for k in ("weight", "bias", "running_mean", "running_var")}, strict=False)
            blocks.append(nn.Sequential(conv, norm, nn.ReLU(), nn.MaxPool2d(2, stride=2)))
        self.blocks = nn.ModuleList(blocks)
        self.fc1 = nn.Sequential(nn.Linear(512, self.feature_d), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Dropout(0.3), nn.Linear(self.feature_d, self.feature_d), nn.ReLU())
        self.fc1[0].load_state_dict({"weight": state_dict["fc.0.weight"], "bias": state_dict["fc.0.bias"]})
        self.fc2[1].load_state_dict({"weight": state_dict["fc.3.weight"], "bias": state_dict["fc.3.bias"]})
        self.eval()

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        return (self.to_melspec(waveforms) + torch.finfo(torch.float).eps).log()

    def _reduce(self, conv_output: torch.Tensor, target: int) -> torch.Tensor:
        batch, channels, mels, time_steps = conv_output.shape
        state = conv_output.permute(0, 3, 1, 2).reshape(batch, time_steps, channels * mels)
        if state.shape[-1] < self.feature_d:
            state = nn.functional.pad(state, (0, self.feature_d - state.shape[-1]))
        while state.shape[1] > target:
            if state.shape[1] % 2 == 1:
                state = torch.cat([state[:, :-2], state[:, -2:].mean(1, keepdim=True)], dim=1)
            state = state.reshape(batch, state.shape[1] // 2, 2, state.shape[-1]).mean(2)
        return state

    def forward(self, waveforms: torch.Tensor, layered: bool = False):
        hidden = ((self.log_mel(waveforms) - self.mean) / self.std).unsqueeze(1)
        target = hidden.shape[-1] // 8
        layers = []
        for block in self.blocks:
            hidden = block(hidden)
            if layered:
                layers.append(self._reduce(hidden, target))
        batch, channels, mels, frames = hidden.shape
        hidden = hidden.permute(0, 3, 2, 1).reshape(batch, frames, mels * channels)
        fc1 = self.fc1(hidden)
        fc2 = self.fc2(fc1)
        if not layered:
            return fc2
        stacked = torch.cat([*layers, fc1, fc2], dim=-1)
        return list(stacked.reshape(batch, frames, 5, self.feature_d).permute(2, 0, 1, 3))


def machine() -> str:
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    extras = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if f" {flag}" in flags]
    return (f"{cpu}, {os.cpu_count()} cores ({', '.join(extras) or 'no AVX-512'}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def load_models(checkpoint: str, mean: float, std: float) -> tuple[BYOLAModel, BYOLAFeatureExtractor, OriginalStyleUpstream]:
    model, feature_extractor, _ = convert_byola_checkpoint(checkpoint, None, mean=mean, std=std)
    return model.eval(), feature_extractor, OriginalStyleUpstream(load_original_state_dict(checkpoint), mean, std)


def case_functions(case: str, model: BYOLAModel, feature_extractor: BYOLAFeatureExtractor,
                   baseline: OriginalStyleUpstream, waveforms: np.ndarray, bf16: bool = False
                   ) -> tuple[Callable[[], Outputs], Callable[[], Outputs]]:
    """`(ours, baseline)` callables computing `case` from the same waveforms: a tensor, or the layers' tensors."""
    rate = feature_extractor.sampling_rate
    tensor = torch.from_numpy(waveforms)

    def features():
        return feature_extractor(list(waveforms), sampling_rate=rate, return_tensors="pt")

    def ours_model(**kwargs):
        inputs = features()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(**inputs, **kwargs)

    if case == "frontend":
        return lambda: features()["input_features"], lambda: baseline.log_mel(tensor)
    if case == "last":
        return lambda: ours_model().last_hidden_state, lambda: baseline(tensor)
    if case == "all":  # a tuple / list of the five layers each; stacked for comparison outside the timing
        return lambda: ours_model(output_hidden_states=True).hidden_states, lambda: baseline(tensor, layered=True)
    if case == "pooled":
        def pooled():
            frames = baseline(tensor)
            return frames.max(1).values + frames.mean(1)
        return lambda: ours_model().pooler_output, pooled
    raise ValueError(f"Unknown case {case!r}; choose from {CASES}.")


def time_pair(
    ours: Callable[[], Outputs], baseline: Callable[[], Outputs], repeats: int
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """
    Median seconds of `ours` and `baseline` and their outputs (stacked when a list of layers). The two calls
    alternate, so a slow spell of a shared machine costs both alike.
    """
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    with torch.inference_mode():
        outputs = {"ours": ours(), "baseline": baseline()}  # warm-up
        for _ in range(repeats):
            for name, function in (("ours", ours), ("baseline", baseline)):
                start = time.perf_counter()
                outputs[name] = function()
                times[name].append(time.perf_counter() - start)
    stacked = {name: torch.stack(out) if isinstance(out, (list, tuple)) else out for name, out in outputs.items()}
    return statistics.median(times["ours"]), statistics.median(times["baseline"]), stacked["ours"], stacked["baseline"]


def run_case(case: str, shape: str, models, repeats: int, bf16: bool = False) -> dict:
    model, feature_extractor, baseline = models
    batch, seconds = SHAPES[shape]
    rng = np.random.default_rng(0)
    samples = int(seconds * feature_extractor.sampling_rate)
    waveforms = (0.1 * rng.standard_normal((batch, samples))).astype(np.float32)
    ours, reference = case_functions(case, model, feature_extractor, baseline, waveforms, bf16)
    ours_time, baseline_time, ours_output, baseline_output = time_pair(ours, reference, repeats)
    audio = batch * seconds
    deviation = float((ours_output.float() - baseline_output).abs().max() / baseline_output.abs().max())
    cosine = float(nn.functional.cosine_similarity(ours_output.double().flatten(), baseline_output.double().flatten(), dim=0))
    return {"case": case, "shape": shape, "bf16": bf16, "ours_xrt": audio / ours_time,
            "baseline_xrt": audio / baseline_time, "speedup": baseline_time / ours_time,
            "max_rel_deviation": deviation, "cosine": cosine}


def memory_status_mb(key: str) -> float:
    """A `/proc/self/status` memory figure of this process (`VmRSS`, `VmHWM`, ...) in MB (Linux)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024


def _run_in_fresh_process(code: str) -> Any:
    """Run `code` in a new Python process and return the JSON value of the last line it prints."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_memory_mb(case: str, shape: str, which: str, checkpoint: str, mean: float, std: float, bf16: bool) -> float:
    """Peak resident memory of one run of `case` in a fresh process, above its size once the models are loaded
    (Linux: the high-water mark is reset through /proc/self/clear_refs just before the run)."""
    return float(_run_in_fresh_process(
        "import json, numpy as np, torch\n"
        "from byola_hf.benchmark import load_models, case_functions, memory_status_mb, SHAPES\n"
        f"models = load_models({checkpoint!r}, {mean}, {std})\n"
        f"batch, seconds = SHAPES[{shape!r}]\n"
        "rate = models[1].sampling_rate\n"
        "w = (0.1 * np.random.default_rng(0).standard_normal((batch, int(seconds * rate)))).astype(np.float32)\n"
        f"fns = case_functions({case!r}, *models, w, {bf16})\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = memory_status_mb('VmRSS')\n"
        f"with torch.inference_mode(): fns[{0 if which == 'ours' else 1}]()\n"
        "print(json.dumps(memory_status_mb('VmHWM') - before))\n"
    ))


def long_audio_memory_mb(checkpoint: str, mean: float, std: float, minutes: float, hidden_states: bool,
                         chunk_frames: int | None = None) -> dict[str, float]:
    """
    Peak resident memory of the whole process (`peak_mb`, Linux VmHWM) when one call turns a `minutes`-long clip
    into features with the public path, `model(**feature_extractor(wav))`, and the process's size with only
    torch and our model loaded (`loaded_mb`). `chunk_frames=0` shows the unchunked network for comparison.
    """
    return _run_in_fresh_process(
        "import json, numpy as np, torch\n"
        "from byola_hf.benchmark import memory_status_mb\n"
        "from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint\n"
        f"model, fe, _ = convert_byola_checkpoint({checkpoint!r}, None, mean={mean}, std={std})\n"
        "model.eval()\n"
        f"wav = (0.1 * np.random.default_rng(0).standard_normal(int({minutes} * 60 * fe.sampling_rate)))"
        ".astype(np.float32)\n"
        "loaded = memory_status_mb('VmRSS')\n"
        "with torch.inference_mode():\n"
        "    out = model(**fe(wav, sampling_rate=fe.sampling_rate, return_tensors='pt'), "
        f"output_hidden_states={hidden_states}, chunk_frames={chunk_frames})\n"
        "print(json.dumps({'loaded_mb': loaded, 'peak_mb': memory_status_mb('VmHWM')}))\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark byola_hf against the original upstream's computation.")
    shared = Path(os.environ.get("BYOLA_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--checkpoint", default=str(shared / "reference" / "AudioNTT2020-random-seed123-d2048.pth"),
                        help="Original-layout checkpoint (default: the shared random 2048-d one, under "
                             "$BYOLA_SHARED_DIR or ../shared)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="Also time our model under bf16 autocast")
    parser.add_argument("--memory", action="store_true", help="Also measure peak memory (one process per run)")
    parser.add_argument("--long_audio_minutes", type=float, default=0.0,
                        help="Also measure the peak memory of one call on a clip this long (the goal: 10 min, 1.5 GB)")
    parser.add_argument("--json", default=None, help="Write the rows to this JSON file")
    args = parser.parse_args(argv)
    mean, std = -8.907230, 4.892486
    models = load_models(args.checkpoint, mean, std)
    print(f"Machine: {machine()}")
    print(f"{'case':<9} {'shape':<6} {'dtype':<5} {'ours xRT':>9} {'orig xRT':>9} {'speedup':>8} {'max rel dev':>12} "
          f"{'cosine':>9}" + (f" {'ours MB':>8} {'orig MB':>8}" if args.memory else ""))
    rows = []
    for shape in args.shapes.split(","):
        for case in args.cases.split(","):
            for bf16 in ([False, True] if args.bf16 and case != "frontend" else [False]):
                row = run_case(case, shape, models, args.repeats, bf16)
                if args.memory:
                    row["ours_mb"] = peak_memory_mb(case, shape, "ours", args.checkpoint, mean, std, bf16)
                    row["baseline_mb"] = peak_memory_mb(case, shape, "baseline", args.checkpoint, mean, std, False)
                rows.append(row)
                print(f"{case:<9} {shape:<6} {'bf16' if bf16 else 'fp32':<5} {row['ours_xrt']:>9.0f} "
                      f"{row['baseline_xrt']:>9.0f} {row['speedup']:>7.2f}x {row['max_rel_deviation']:>12.2e} "
                      f"{row['cosine']:>9.6f}" + (f" {row['ours_mb']:>8.0f} {row['baseline_mb']:>8.0f}"
                                                   if args.memory else ""), flush=True)
    long_audio = []
    if args.long_audio_minutes:
        print(f"\nOne call on a {args.long_audio_minutes:g}-minute clip, peak memory of the whole process:")
        for hidden_states, chunk_frames in ((False, None), (True, None), (True, 0)):
            row = long_audio_memory_mb(args.checkpoint, mean, std, args.long_audio_minutes, hidden_states, chunk_frames)
            row.update(hidden_states=hidden_states, chunked=chunk_frames != 0)
            long_audio.append(row)
            print(f"  {'all hidden states' if hidden_states else 'last hidden state'}"
                  f"{'' if chunk_frames != 0 else ', unchunked (chunk_frames=0)'}: {row['peak_mb']:.0f} MB "
                  f"({row['loaded_mb']:.0f} MB with torch and the model loaded)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows, "long_audio": long_audio}, indent=1))


if __name__ == "__main__":
    main()

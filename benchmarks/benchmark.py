"""Throughput and memory of byola_hf against the original upstream's way of computing the same outputs.

The baseline is the original computation: nnAudio's conv-based `MelSpectrogram` on the zero-padded batch,
`log(mel + eps)`, normalisation, then the network as the original layered upstream runs it
(`byola_hf.reference_network.original_forward`: unfused Conv-BN-ReLU-MaxPool, every conv layer reshaped, zero-padded
and averaged down in time, the five layers concatenated and split again). Both run in the same process on the same
inputs and device, the calls alternating, and their outputs are compared.

    python benchmarks/benchmark.py [--device cpu|cuda] [--cases ...] [--shapes ...] [--repeats 5] [--bf16]
                                   [--memory] [--long_audio_minutes 10] [--json OUT]

Cases (x real time = seconds of audio per second):
    frontend  log-mel alone, waveforms already on the device
    network   the network alone, all hidden states, from log-mels already on the device
    last, all, pooled
              waveforms already on the device -> last hidden state / all hidden states / clip embedding
    readme    the README's path: numpy waveforms -> feature extractor (`device=`) -> model, last hidden state
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root has byola_hf/

from byola_hf.convert_byola_checkpoint import convert_byola_checkpoint, load_original_state_dict  # noqa: E402
from byola_hf.feature_extraction_byola import BYOLAFeatureExtractor  # noqa: E402
from byola_hf.modeling_byola import BYOLAModel  # noqa: E402
from byola_hf.reference_network import num_conv_blocks, original_forward  # noqa: E402


SHAPES = {"64x10s": (64, 10.0), "8x10s": (8, 10.0), "1x60s": (1, 60.0), "1x10s": (1, 10.0)}  # 1x10s: smoke runs
DEFAULT_SHAPES = {"cpu": "8x10s,1x60s", "cuda": "64x10s,8x10s"}
CASES = ("frontend", "network", "last", "all", "pooled", "readme")
# The speed-ups byola_hf aims at against the original's fp32 (issue "GPU"), per device, case and our dtype; bf16
# rows must also keep a cosine of at least 0.999 to the original's fp32 output.
GOALS = {
    "cuda": {
        ("all", False): 3.0,
        ("all", True): 5.0,
        ("network", False): 1.5,
        ("network", True): 3.0,
        ("readme", False): 2.5,
    },
    "cpu": {("all", False): 3.0},
}
# The VoxCeleb1 statistics published with the s3prl upstream; any finite values give the same timings.
MEAN, STD = -8.907230, 4.892486
Outputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]


class OriginalUpstream(nn.Module):
    """The original upstream's computation (see the module docstring), from original-layout tensors."""

    def __init__(self, state_dict: dict[str, torch.Tensor], mean: float, std: float, sampling_rate: int = 16000):
        super().__init__()
        import nnAudio.features

        self.to_melspec = nnAudio.features.MelSpectrogram(
            sr=sampling_rate,
            n_fft=1024,
            win_length=1024,
            hop_length=160,
            n_mels=64,
            fmin=60,
            fmax=7800,
            center=True,
            power=2,
            verbose=False,
        )
        self.keys = list(state_dict)  # kept as buffers, so .to(device) moves them
        for index, key in enumerate(self.keys):
            self.register_buffer(f"tensor_{index}", state_dict[key])
        self.mean, self.std = mean, std
        self.eval()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, f"tensor_{index}") for index, key in enumerate(self.keys)}

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        return (self.to_melspec(waveforms) + torch.finfo(torch.float).eps).log()

    def network(self, log_mel: torch.Tensor, layered: bool = False) -> Outputs:
        return original_forward(self.tensors(), ((log_mel - self.mean) / self.std).unsqueeze(1), layered=layered)

    def forward(self, waveforms: torch.Tensor, layered: bool = False) -> Outputs:
        return self.network(self.log_mel(waveforms), layered=layered)


def machine(device: torch.device) -> str:
    cpu = "unknown CPU"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    for line in flags.splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    extras = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if f" {flag}" in flags]
    text = (
        f"{cpu}, {os.cpu_count()} cores ({', '.join(extras) or 'no AVX-512'}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}"
    )
    if device.type == "cuda":
        text += (
            f"; GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, TF32 convolutions "
            f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}, TF32 matmul "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}"
        )
    return text


def load_models(checkpoint: str, device: str = "cpu") -> tuple[BYOLAModel, BYOLAFeatureExtractor, OriginalUpstream]:
    """Ours and the original upstream from one original-layout checkpoint. The s3prl upstream's layers zero-pad each
    conv layer's features to feature_d, so it takes v1 networks of 2048 or more (64 channels x 32 mel bins)."""
    state_dict = load_original_state_dict(checkpoint)
    if num_conv_blocks(state_dict) != 3 or state_dict["fc.3.weight"].shape[0] < 2048:
        raise ValueError(f"--checkpoint {checkpoint} is not a v1 network of 2048 or more dimensions, as compared here")
    model, feature_extractor, _ = convert_byola_checkpoint(checkpoint, None, mean=MEAN, std=STD)
    baseline = OriginalUpstream(state_dict, MEAN, STD)
    return model.eval().to(device), feature_extractor, baseline.to(device)


def waveforms_for(shape: str, sampling_rate: int) -> np.ndarray:
    batch, seconds = SHAPES[shape]
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((batch, int(seconds * sampling_rate)))).astype(np.float32)


def case_functions(
    case: str,
    model: BYOLAModel,
    feature_extractor: BYOLAFeatureExtractor,
    baseline: OriginalUpstream,
    waveforms: np.ndarray,
    bf16: bool = False,
) -> tuple[Callable[[], Outputs], Callable[[], Outputs]]:
    """`(ours, baseline)` callables computing `case` from the same waveforms: a tensor, or the layers' tensors."""
    device = model.device
    rate = feature_extractor.sampling_rate
    on_device = torch.from_numpy(waveforms).to(device)

    def features(inputs):
        return feature_extractor(inputs, sampling_rate=rate, return_tensors="pt", device=device)

    def ours_model(inputs, **kwargs):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(**inputs, **kwargs)

    if case == "frontend":
        return lambda: features(on_device)["input_features"], lambda: baseline.log_mel(on_device)
    if case == "network":
        ours_inputs = features(on_device)
        log_mel = baseline.log_mel(on_device)
        return (
            lambda: ours_model(ours_inputs, output_hidden_states=True).hidden_states,
            lambda: baseline.network(log_mel, layered=True),
        )
    if case == "last":
        return lambda: ours_model(features(on_device)).last_hidden_state, lambda: baseline(on_device)
    if case == "all":  # five layers each; stacked for comparison outside the timing
        return (
            lambda: ours_model(features(on_device), output_hidden_states=True).hidden_states,
            lambda: baseline(on_device, layered=True),
        )
    if case == "pooled":

        def pooled():
            frames = baseline(on_device)
            return frames.max(1).values + frames.mean(1)

        return lambda: ours_model(features(on_device)).pooler_output, pooled
    if case == "readme":
        return (
            lambda: ours_model(features(list(waveforms))).last_hidden_state,
            lambda: baseline(torch.from_numpy(waveforms).to(device)),
        )
    raise ValueError(f"Unknown case {case!r}; choose from {CASES}.")


def time_pair(
    ours: Callable[[], Outputs], baseline: Callable[[], Outputs], repeats: int, device: torch.device
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """
    Median seconds of `ours` and `baseline` and their outputs (stacked when a list of layers). The calls alternate,
    so a slow spell of a shared machine costs both alike; on a GPU each call is timed to its completion.
    """

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    with torch.inference_mode():
        outputs = {"ours": ours(), "baseline": baseline()}  # warm-up
        for _ in range(repeats):
            for name, function in (("ours", ours), ("baseline", baseline)):
                synchronise()
                start = time.perf_counter()
                outputs[name] = function()
                synchronise()
                times[name].append(time.perf_counter() - start)
    stacked = {name: torch.stack(out) if isinstance(out, (list, tuple)) else out for name, out in outputs.items()}
    return statistics.median(times["ours"]), statistics.median(times["baseline"]), stacked["ours"], stacked["baseline"]


def run_case(case: str, shape: str, models, repeats: int, bf16: bool = False) -> dict:
    model, feature_extractor, baseline = models
    batch, seconds = SHAPES[shape]
    waveforms = waveforms_for(shape, feature_extractor.sampling_rate)
    ours, reference = case_functions(case, model, feature_extractor, baseline, waveforms, bf16)
    ours_time, baseline_time, ours_output, baseline_output = time_pair(ours, reference, repeats, model.device)
    audio = batch * seconds
    ours_output, baseline_output = ours_output.double(), baseline_output.double()
    deviation = float((ours_output - baseline_output).abs().max() / baseline_output.abs().max())
    cosine = float(nn.functional.cosine_similarity(ours_output.flatten(), baseline_output.flatten(), dim=0))
    return {
        "case": case,
        "shape": shape,
        "bf16": bf16,
        "ours_xrt": audio / ours_time,
        "baseline_xrt": audio / baseline_time,
        "speedup": baseline_time / ours_time,
        "max_rel_deviation": deviation,
        "cosine": cosine,
    }


def goal_text(row: dict, device_type: str) -> str:
    """`">=3x met"` / `">=3x BELOW"` for a row with a goal (see `GOALS`), else empty; sets `row["goal_met"]`."""
    goal = GOALS.get(device_type, {}).get((row["case"], row["bf16"]))
    if goal is None:
        return ""
    row["goal"] = goal
    row["goal_met"] = row["speedup"] >= goal and (not row["bf16"] or row["cosine"] >= 0.999)
    return f">={goal:g}x {'met' if row['goal_met'] else 'BELOW'}"


def memory_status_mb(key: str) -> float:
    """A `/proc/self/status` memory figure of this process (`VmRSS`, `VmHWM`, ...) in MB (Linux)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024


def in_fresh_process(function: Callable[..., Any], *arguments: Any) -> Any:
    """`function(*arguments)` in a new Python process (spawned, so nothing of this one's memory is inherited)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, arguments)


def peak_memory_mb(case: str, shape: str, which: str, checkpoint: str, bf16: bool) -> float:
    """Peak resident memory of one run of `case` (CPU) in a fresh process, above its size once the models are loaded
    (Linux: the high-water mark is reset through /proc/self/clear_refs just before the run)."""
    return in_fresh_process(_peak_memory_mb, case, shape, which, checkpoint, bf16)


def _peak_memory_mb(case: str, shape: str, which: str, checkpoint: str, bf16: bool) -> float:
    model, feature_extractor, baseline = load_models(checkpoint)
    functions = case_functions(
        case, model, feature_extractor, baseline, waveforms_for(shape, feature_extractor.sampling_rate), bf16
    )
    Path("/proc/self/clear_refs").write_text("5")
    before = memory_status_mb("VmRSS")
    with torch.inference_mode():
        functions[0 if which == "ours" else 1]()
    return memory_status_mb("VmHWM") - before


def gpu_peak_memory_mb(function: Callable[[], Outputs], device: torch.device) -> float:
    """Peak GPU memory allocated by one call, above what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        function()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def long_audio_memory_mb(
    checkpoint: str, minutes: float, hidden_states: bool, chunk_frames: int | None = None
) -> dict[str, float]:
    """
    Peak resident memory of a whole fresh process (`peak_mb`, Linux VmHWM) when one call turns a `minutes`-long clip
    into features with the public path, `model(**feature_extractor(wav))`, and the process's size with only torch
    and our model loaded (`loaded_mb`). `chunk_frames=0` shows the unchunked network for comparison.
    """
    return in_fresh_process(_long_audio_memory_mb, checkpoint, minutes, hidden_states, chunk_frames)


def _long_audio_memory_mb(checkpoint: str, minutes: float, hidden_states: bool, chunk_frames: int | None) -> dict:
    model, feature_extractor, _ = convert_byola_checkpoint(checkpoint, None, mean=MEAN, std=STD)
    model.eval()
    rate = feature_extractor.sampling_rate
    waveform = (0.1 * np.random.default_rng(0).standard_normal(int(minutes * 60 * rate))).astype(np.float32)
    loaded = memory_status_mb("VmRSS")
    with torch.inference_mode():
        model(
            **feature_extractor(waveform, sampling_rate=rate, return_tensors="pt"),
            output_hidden_states=hidden_states,
            inference_chunk_frames=chunk_frames,
        )
    return {"loaded_mb": loaded, "peak_mb": memory_status_mb("VmHWM")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark byola_hf against the original upstream's computation.")
    shared = Path(os.environ.get("BYOLA_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument(
        "--checkpoint",
        default=str(shared / "reference" / "AudioNTT2020-random-seed123-d2048.pth"),
        help="Original-layout v1 2048-d checkpoint (default: the shared random one, under "
        "$BYOLA_SHARED_DIR or ../shared beside the project)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"Comma-separated, from {', '.join(CASES)}")
    parser.add_argument(
        "--shapes",
        default=None,
        help=f"Comma-separated, from {', '.join(SHAPES)} (default: "
        f"{DEFAULT_SHAPES['cpu']} on CPU, {DEFAULT_SHAPES['cuda']} on GPU)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls of each side (medians are reported)")
    parser.add_argument("--bf16", action="store_true", help="Also time our model under bf16 autocast")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="Also measure peak memory: one fresh process per run on CPU, allocator peaks on GPU",
    )
    parser.add_argument(
        "--long_audio_minutes",
        type=float,
        default=0.0,
        help="CPU: also measure the whole process's peak memory for one call on a clip this long",
    )
    parser.add_argument("--json", default=None, help="Write the rows to this JSON file")
    return parser


def measured_row(case: str, shape: str, bf16: bool, models: tuple, args: argparse.Namespace) -> dict:
    """One case on one shape: speed and deviation, and with `--memory` each side's peak memory."""
    device = torch.device(args.device)
    row = run_case(case, shape, models, args.repeats, bf16)
    if args.memory and device.type == "cuda":
        functions = case_functions(case, *models, waveforms_for(shape, models[1].sampling_rate), bf16)
        row["ours_mb"], row["baseline_mb"] = (gpu_peak_memory_mb(f, device) for f in functions)
    elif args.memory:
        row["ours_mb"] = peak_memory_mb(case, shape, "ours", args.checkpoint, bf16)
        row["baseline_mb"] = peak_memory_mb(case, shape, "baseline", args.checkpoint, False)
    return row


def row_text(row: dict, case: str, shape: str, bf16: bool, memory: bool, device_type: str) -> str:
    return (
        f"{case:<9} {shape:<6} {'bf16' if bf16 else 'fp32':<5} {row['ours_xrt']:>9.0f} "
        f"{row['baseline_xrt']:>9.0f} {row['speedup']:>7.2f}x {row['max_rel_deviation']:>12.2e} "
        f"{row['cosine']:>9.6f}"
        + (f" {row['ours_mb']:>8.0f} {row['baseline_mb']:>8.0f}" if memory else "")
        + f" {goal_text(row, device_type):>11}"
    )


def long_audio_rows(checkpoint: str, minutes: float) -> list[dict]:
    """The whole process's peak memory for one call on a `minutes`-long clip, chunked and not."""
    print(f"\nOne call on a {minutes:g}-minute clip, peak memory of the whole process:")
    rows = []
    for hidden_states, chunk_frames in ((False, None), (True, None), (True, 0)):
        row = long_audio_memory_mb(checkpoint, minutes, hidden_states, chunk_frames)
        row.update(hidden_states=hidden_states, chunked=chunk_frames != 0)
        rows.append(row)
        print(
            f"  {'all hidden states' if hidden_states else 'last hidden state'}"
            f"{'' if chunk_frames != 0 else ', unchunked (chunk_frames=0)'}: {row['peak_mb']:.0f} MB "
            f"({row['loaded_mb']:.0f} MB with torch and the model loaded)",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch build.")
    try:
        models = load_models(args.checkpoint, args.device)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"Machine: {machine(device)}")
    print(
        f"{'case':<9} {'shape':<6} {'dtype':<5} {'ours xRT':>9} {'orig xRT':>9} {'speedup':>8} {'max rel dev':>12} "
        f"{'cosine':>9}" + (f" {'ours MB':>8} {'orig MB':>8}" if args.memory else "") + f" {'goal':>11}"
    )
    rows = []
    for shape in (args.shapes or DEFAULT_SHAPES.get(device.type, DEFAULT_SHAPES["cpu"])).split(","):
        for case in args.cases.split(","):
            for bf16 in [False, True] if args.bf16 and case != "frontend" else [False]:
                rows.append(measured_row(case, shape, bf16, models, args))
                print(row_text(rows[-1], case, shape, bf16, args.memory, device.type), flush=True)
    long_audio = long_audio_rows(args.checkpoint, args.long_audio_minutes) if args.long_audio_minutes else []
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(device), "rows": rows, "long_audio": long_audio}, indent=1)
        )


if __name__ == "__main__":
    main()

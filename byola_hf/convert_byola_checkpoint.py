"""Convert an original BYOL-A `.pth` checkpoint into a `save_pretrained` directory (safetensors)."""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from .configuration_byola import BYOLAConfig, check_statistics, check_statistics_kept
from .feature_extraction_byola import BYOLAFeatureExtractor
from .hub import PushArguments, check_push_arguments, push_to_hub, save_model_card
from .modeling_byola import BYOLAModel
from .reference_network import num_conv_blocks, original_forward
from .tools.cli import make_parser, parse_arguments, run_command
from .tools.outputs import claim_output_dir, holds_claimed_folders, recorded_arguments, save_into


COMMAND = "byola-convert"
# What a conversion writes (removed by --overwrite_output_dir before converting again).
CONVERTED_FILES = ("model.safetensors", "config.json", "preprocessor_config.json", "README.md")


# The original networks keep their layers in `features` (Conv2d, BatchNorm2d, ReLU, MaxPool2d per block: block `i`
# has its conv at `features.{4i}` and its BatchNorm at `features.{4i+1}`) and `fc` (Linear `fc.0`, ReLU, Dropout,
# Linear `fc.3`, ReLU): v1 (`AudioNTT2020Task6`) with three blocks, v2 (`AudioNTT2022Encoder`) with two.
# The layered s3prl variant of v1 (`AudioNTT2020Task6X`) names the same tensors convN.{0,1} / fc1.0 / fc2.1.
_LAYERED_TO_ORIGINAL = {
    **{f"conv{i + 1}.0.": f"features.{4 * i}." for i in range(3)},
    **{f"conv{i + 1}.1.": f"features.{4 * i + 1}." for i in range(3)},
    "fc1.0.": "fc.0.",
    "fc2.1.": "fc.3.",
}
_CONV_NAMES = ("weight", "bias")
_NORM_NAMES = ("weight", "bias", "running_mean", "running_var")
_FC_KEYS = ("fc.0.weight", "fc.0.bias", "fc.3.weight", "fc.3.bias")


def _required_keys(num_conv_layers: int) -> list[str]:
    keys = []
    for i in range(num_conv_layers):
        keys += [f"features.{4 * i}.{name}" for name in _CONV_NAMES]
        keys += [f"features.{4 * i + 1}.{name}" for name in _NORM_NAMES]
    return keys + list(_FC_KEYS)


def _original_to_hf(num_conv_layers: int) -> dict[str, str]:
    return {
        **{f"features.{4 * i}.": f"conv_blocks.{i}.conv." for i in range(num_conv_layers)},
        **{f"features.{4 * i + 1}.": f"conv_blocks.{i}.batch_norm." for i in range(num_conv_layers)},
        "fc.0.": "fc1.",
        "fc.3.": "fc2.",
    }


@dataclass
class ConversionCheck:
    """Result of comparing the converted model with the original network on a test input."""

    max_abs_diff: float
    max_abs_value: float

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_value, 1e-12)


def unpickling_reason(error: BaseException) -> str:
    """Why `torch.load(weights_only=True)` refused a file, without torch's advice to load it with
    `weights_only=False` (which would run its pickled code): the unpickler's own reason, else the error's type and
    first line (a text file ends in a bare `KeyError('101')`, whose text alone, "101", says nothing)."""
    reason = re.search(r"WeightsUnpickler error: (.*?)(\. |\n|$)", str(error))
    if reason:
        return reason.group(1)[:300]
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"[:300]


def load_original_state_dict(checkpoint_path: str | Path) -> dict[str, torch.Tensor]:
    """
    Load an original BYOL-A checkpoint safely (`torch.load(weights_only=True)`, no pickled code runs) and return
    its tensors under the original `features.N.*` / `fc.N.*` keys.

    Accepts what the original v1 and v2 loaders accept: a plain state dict, one wrapped in `{"state_dict": ...}` or
    `{"model": ...}`, keys with any prefix before `features.`/`fc.` (e.g. `model.` from a BYOL training wrapper), the
    layered s3prl key names of v1 (`conv1.0.weight`, ..., `fc2.1.bias`); other keys (projector, predictor,
    `num_batches_tracked`) are dropped. Whether it is v1 or v2 is decided by [`config_from_state_dict`].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a PyTorch checkpoint (truncated, foreign, or pickling arbitrary objects), or
            it does not hold a BYOL-A network.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (UnpicklingError, RuntimeError, OSError, EOFError...)
        raise ValueError(
            f"{path} is not a loadable PyTorch checkpoint of tensors (truncated, corrupt, not a .pth file, or it "
            f"pickles code, which is refused): {unpickling_reason(error)}"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path} does not contain a state dict of tensors, so it is not a BYOL-A checkpoint.")

    state_dict = original_keys(loaded)
    check_original_tensors(path, state_dict, list(loaded))
    return state_dict


def original_keys(loaded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint under the original `features.N.*` / `fc.N.*` keys: s3prl's layered names mapped,
    any prefix before `features.`/`fc.` dropped, every other key left out. Two different tensors under one key (a
    BYOL learner's online and target encoders) are refused: which one to convert is the user's choice."""
    state_dict, sources = {}, {}
    for source, tensor in loaded.items():
        key = source
        if key.endswith("num_batches_tracked"):
            continue
        for layered, original in _LAYERED_TO_ORIGINAL.items():
            match = re.search(rf"(^|\.){re.escape(layered)}", key)
            if match:
                key = original + key[match.end() :]
                break
        match = re.search(r"(^|\.)(features|fc)\.", key)
        if not match:
            continue
        key = key[match.start(2) :]
        # One module saved under two names holds equal tensors; two networks (online, target) do not.
        if key in state_dict and not torch.equal(state_dict[key], tensor):
            raise ValueError(
                f"The checkpoint holds two networks ({sources[key]} and {source} differ), e.g. a BYOL learner's "
                "online and target encoders: save the state dict of the one to convert (BYOL-A's encoder is the "
                "online one) and convert that."
            )
        state_dict[key], sources[key] = tensor, source
    return state_dict


def check_original_tensors(path: Path, state_dict: dict[str, torch.Tensor], keys: list[str]) -> None:
    """A `ValueError` naming the fix unless the network's tensors are float32, finite, and hold every key v1 and v2
    share (`keys`: the checkpoint's own, for the message)."""
    other_types = sorted({str(tensor.dtype).removeprefix("torch.") for tensor in state_dict.values()} - {"float32"})
    if other_types:  # every published BYOL-A network is float32; the original code runs nothing else
        raise ValueError(
            f"{path} holds {', '.join(other_types)} tensors, but BYOL-A checkpoints are float32: save the network's "
            "state dict in float32 (e.g. `{k: v.float() for k, v in state_dict.items()}`) and convert that."
        )
    non_finite = [key for key, tensor in state_dict.items() if not tensor.isfinite().all()]
    if non_finite:
        raise ValueError(
            f"{path} holds NaN or infinite values in {', '.join(non_finite[:4])}: the checkpoint is damaged; "
            "download it again."
        )
    missing = [key for key in _required_keys(1) if key not in state_dict]
    if missing:
        found = ", ".join(keys[:6])
        raise ValueError(
            f"{path} is not a BYOL-A (AudioNTT2020 / AudioNTT2022) checkpoint: missing {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}. Its first keys are: {found}."
        )


def config_from_state_dict(
    state_dict: dict[str, torch.Tensor], mean: float | None = None, std: float | None = None, n_mels: int = 64
) -> BYOLAConfig:
    """Detect the network from the tensors and build its config: v1 (`AudioNTT2020`: three conv blocks, output = the
    MLP) or v2 (`AudioNTT2022`: two conv blocks, output = conv features + MLP); `feature_d`, `conv_channels` and the
    MLP widths are read from the shapes, which must fit `n_mels` mel bins (64 for every published BYOL-A network). A
    checkpoint that fits neither (a block or layer missing, shapes that disagree) is refused, naming what was found."""
    num_conv_layers = num_conv_blocks(state_dict)
    found = (
        f"{num_conv_layers} conv block(s), fc.0 {_shape(state_dict, 'fc.0.weight')}, "
        f"fc.3 {_shape(state_dict, 'fc.3.weight')}"
    )
    if num_conv_layers not in (2, 3):
        raise ValueError(
            f"Not a BYOL-A network: found {found}; v1 (AudioNTT2020) has 3 conv blocks (features.0/4/8), v2 "
            "(AudioNTT2022) has 2 (features.0/4)."
        )
    missing = [key for key in _required_keys(num_conv_layers) if key not in state_dict]
    if missing:
        raise ValueError(f"Incomplete BYOL-A checkpoint ({found}): missing {', '.join(missing[:6])}.")
    variant = "AudioNTT2020" if num_conv_layers == 3 else "AudioNTT2022"
    conv_channels = state_dict["features.0.weight"].shape[0]
    mlp_hidden_size, conv_size = state_dict["fc.0.weight"].shape
    fc_output_size = state_dict["fc.3.weight"].shape[0]
    conv_output = conv_channels * (n_mels >> num_conv_layers)
    if conv_size != conv_output:
        raise ValueError(
            f"The checkpoint's fc.0 takes {conv_size} inputs, but a {variant} network ({num_conv_layers} conv blocks "
            f"of {conv_channels} channels over {n_mels} mel bins) gives it {conv_output} (found {found}). Is it a mix "
            "of v1 and v2 tensors, or a network for another number of mel bins (pass n_mels)?"
        )
    if variant == "AudioNTT2020":
        overrides = {"feature_d": fc_output_size, "mlp_hidden_size": None}
    else:
        overrides = {"feature_d": conv_size + fc_output_size, "mlp_hidden_size": mlp_hidden_size}
    try:
        config = BYOLAConfig.from_variant(
            variant, conv_channels=conv_channels, n_mels=n_mels, mean=mean, std=std, **overrides
        )
    except ValueError as error:
        raise ValueError(f"The checkpoint's shapes ({found}) make no valid {variant} network: {error}") from error
    expected = {"features.0.weight": (conv_channels, 1, 3, 3)}
    for i in range(1, num_conv_layers):
        expected[f"features.{4 * i}.weight"] = (conv_channels, conv_channels, 3, 3)
    expected["fc.0.weight"] = (config.mlp_sizes[0], config.conv_hidden_sizes[-1])
    expected["fc.3.weight"] = (config.mlp_sizes[1], config.mlp_sizes[0])
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(
                f"The checkpoint's {key} has shape {tuple(state_dict[key].shape)}, expected {shape} for a {variant} "
                f"network ({found})."
            )
    return config


def _shape(state_dict: dict[str, torch.Tensor], key: str) -> tuple[int, ...] | str:
    return tuple(state_dict[key].shape) if key in state_dict else "missing"


def to_hf_state_dict(state_dict: dict[str, torch.Tensor], num_conv_layers: int) -> dict[str, torch.Tensor]:
    """Rename original keys to [`BYOLAModel`]'s; keys of no layer of the network are dropped."""
    renamed = {}
    for key, tensor in state_dict.items():
        for original, hf in _original_to_hf(num_conv_layers).items():
            if key.startswith(original):
                renamed[hf + key[len(original) :]] = tensor
                break
    return renamed


def verify_conversion(
    model: BYOLAModel, state_dict: dict[str, torch.Tensor], seconds: float = 3.0, seed: int = 0
) -> ConversionCheck:
    """Compare `model` with [`original_forward`] on a reproducible random log-mel of `seconds` seconds."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    frames = int(seconds * config.sampling_rate) // config.hop_length + 1
    log_mel = torch.randn(1, config.n_mels, frames, generator=generator) * 4.0 - 9.0
    mean, std = (config.mean, config.std) if config.has_statistics else (-9.0, 4.0)
    with torch.no_grad():
        expected = original_forward(state_dict, ((log_mel - mean) / std)[:, None])
        previous = (config.mean, config.std)
        config.mean, config.std = mean, std
        try:
            actual = model.eval()(log_mel).last_hidden_state
        finally:
            config.mean, config.std = previous
    return ConversionCheck(float((actual - expected).abs().max()), float(expected.abs().max()))


def convert_byola_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path | None = None,
    mean: float | None = None,
    std: float | None = None,
    verify: bool = True,
    tolerance: float = 1e-5,
    n_mels: int = 64,
) -> tuple[BYOLAModel, BYOLAFeatureExtractor, ConversionCheck | None]:
    """
    Convert an original BYOL-A checkpoint (v1 512, 1024 or 2048-d; v2 3072-d) into a [`BYOLAModel`] and its
    feature extractor, and save both with `save_pretrained` to `output_dir` (`model.safetensors`, `config.json`,
    `preprocessor_config.json`) when given.

    Args:
        checkpoint_path: the original `.pth` file.
        output_dir: where to save; nothing is saved when `None`.
        mean, std: the task's normalisation statistics, if already known (both or neither).
        n_mels: mel bins the network was trained on (64 for the published weights).
        verify: compare the converted model with the original network on a test input; raise if the largest
            deviation exceeds `tolerance` relative to the output's largest magnitude.

    Returns:
        `(model, feature_extractor, check)`; `check` is `None` when `verify=False`.
    """
    state_dict = load_original_state_dict(checkpoint_path)
    config = config_from_state_dict(state_dict, mean=mean, std=std, n_mels=n_mels)
    # Pushes warn that NTT's licence covers these weights (hub.warn_if_licensed).
    config.converted_from = Path(checkpoint_path).name
    if config.has_statistics:
        config.stats_provenance = {
            "method": "given",
            "source": f"given by hand at conversion (mean={mean}, std={std})",
        }
    model = BYOLAModel(config)
    result = model.load_state_dict(to_hf_state_dict(state_dict, config.num_conv_layers), strict=False)
    not_loaded = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
    if not_loaded:
        raise ValueError(f"The checkpoint left these parameters unset: {not_loaded}.")
    model.eval()
    feature_extractor = BYOLAFeatureExtractor.from_model_config(config)
    check = None
    if verify:
        check = verify_conversion(model, state_dict)
        if not math.isfinite(check.max_abs_value):
            largest = max(state_dict, key=lambda key: float(state_dict[key].abs().max()))
            raise ValueError(
                f"{checkpoint_path}: the network's output overflows to NaN or infinity on a test input (its largest "
                f"weight, in {largest}, is {float(state_dict[largest].abs().max()):.3g}): the checkpoint is damaged; "
                "download it again."
            )
        if not check.relative_diff <= tolerance:  # NaN fails too
            raise RuntimeError(
                f"The converted model differs from the original network by {check.max_abs_diff:.3g} "
                f"({check.relative_diff:.3g} relative), above the tolerance {tolerance:g}."
            )
    if output_dir is not None:
        save_converted(model, feature_extractor, output_dir)
    return model, feature_extractor, check


def save_converted(model: BYOLAModel, feature_extractor: BYOLAFeatureExtractor, output_dir: str | Path) -> None:
    """Save a converted model, its feature extractor and card into `output_dir`, `config.json` last."""

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        feature_extractor.save_pretrained(folder)
        save_model_card(folder, model.config)

    save_into(output_dir, save)


@dataclass
class ConvertArguments:
    mean: float | None = field(default=None, metadata={"help": "Task log-mel mean, if already known"})
    std: float | None = field(default=None, metadata={"help": "Task log-mel std, if already known"})
    no_verify: bool = field(default=False, metadata={"help": "Skip the check against the original network"})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Convert again into a folder that holds another conversion"}
    )


def build_parser() -> HfArgumentParser:
    parser = make_parser(
        COMMAND,
        (ConvertArguments, PushArguments),
        description="Convert an original BYOL-A .pth checkpoint (v1 AudioNTT2020 or v2 AudioNTT2022) into a Hugging "
        "Face model directory (safetensors).",
    )
    parser.add_argument(
        "checkpoint",
        help="Original checkpoint: AudioNTT2020-BYOLA-64x96d{512,1024,2048}.pth (v1) or "
        "AudioNTT2022-BYOLA-64x96d2048.pth (v2)",
    )
    parser.add_argument("output_dir", help="New or empty folder for model.safetensors, config.json and the rest")
    return parser


def main(argv: list[str] | None = None) -> None:
    args, push, paths = parse_arguments(build_parser(), argv)
    run_command(COMMAND, run, args, push, paths.checkpoint, paths.output_dir)


def run_record(args: ConvertArguments, checkpoint: str) -> dict:
    """What makes a conversion: the checkpoint's path and every flag of `args` but the shared may-change list
    ([`~tools.outputs.MAY_CHANGE_ON_RESUME`]; the Hub's flags act after the conversion)."""
    return {"checkpoint": str(Path(checkpoint).resolve()), "arguments": recorded_arguments(args)}


@holds_claimed_folders()
def run(args: ConvertArguments, push: PushArguments, checkpoint: str, output_dir: str) -> None:
    """Convert into a folder this command owns, report, and push (privately unless --public) when asked."""
    if (args.mean is None) != (args.std is None):
        raise ValueError("--mean and --std go together: give both or neither.")
    if args.mean is not None:  # before the checkpoint is read: a NaN would be blamed on its shapes
        try:
            check_statistics(args.mean, args.std)
        except ValueError as error:
            raise ValueError(f"{error} (--mean {args.mean} --std {args.std})") from None
    check_push_arguments(push)
    record = run_record(args, checkpoint)
    model, feature_extractor, check = convert_byola_checkpoint(
        checkpoint, None, mean=args.mean, std=args.std, verify=not args.no_verify
    )
    owned = claim_output_dir(output_dir, COMMAND, record, CONVERTED_FILES, args.overwrite_output_dir)
    if owned.resumed and not args.overwrite_output_dir:
        check_statistics_kept(output_dir, model.config.mean, model.config.std, "it was converted")
    save_converted(model, feature_extractor, output_dir)
    config = model.config
    print(
        f"Converted {checkpoint}: {config.variant}, feature_d={config.feature_d}, "
        f"{config.frames_per_second:g} frames/s, saved to {output_dir}"
    )
    if check is not None:
        print(
            f"Check against the original network: max |diff| = {check.max_abs_diff:.3g} "
            f"({check.relative_diff:.3g} of the largest output {check.max_abs_value:.3g}): OK"
        )
    if config.has_statistics:
        print(f"Normalisation statistics: mean={config.mean}, std={config.std}")
    else:
        print(
            "No normalisation statistics yet: compute them for your task with "
            f"`byola-compute-stats --model_name_or_path {output_dir} ...` before running the model."
        )
    if push.push_to_hub:
        print(f"Pushed to {push_to_hub(output_dir, push.hub_model_id, private=not push.public)}")


if __name__ == "__main__":
    main()

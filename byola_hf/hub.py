"""Sharing BYOL-A models on the Hugging Face Hub: model cards, an early offline check, and pushes."""

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from transformers.utils import logging

from .configuration_byola import (
    BYOLAConfig,
    BYOLAPreTrainingConfig,
    public_repository,
    statistics_source,
    warn_if_licensed,
)
from .modeling_byola import PretrainingCheckpointError


logger = logging.get_logger(__name__)
LICENSE_NOTICE = (
    "The original BYOL-A weights are © NTT and distributed under NTT's *Software License Agreement for Evaluation* "
    "(https://github.com/nttcslab/byol-a/blob/master/LICENSE): a royalty-free, non-transferable licence to use them "
    "internally to test, analyse and evaluate the methods of the BYOL-A papers. It does not allow redistribution to "
    "third parties without NTT's written consent, so keep repositories holding converted official weights private "
    "unless you have that consent. This card's code (byola_hf) does not change those terms."
)
# The card of a model that holds none of NTT's weights (pre-trained from random initialisation).
SCRATCH_NOTICE = (
    "These weights were trained from random initialisation: they hold none of NTT's published BYOL-A weights, so "
    "NTT's evaluation licence does not cover them. Their terms are the trainer's to set (and those of the data they "
    "were trained on); this card's code (byola_hf) adds none."
)
CITATION = """@inproceedings{niizumi2021byol-a,
  title={BYOL for Audio: Self-Supervised Learning for General-Purpose Audio Representation},
  author={Niizumi, Daisuke and Takeuchi, Daiki and Ohishi, Yasunori and Harada, Noboru and Kashino, Kunio},
  booktitle={2021 International Joint Conference on Neural Networks (IJCNN)},
  year={2021},
  doi={10.1109/IJCNN52387.2021.9534474}
}
@article{niizumi2023byol-a,
  title={{BYOL for Audio}: Exploring Pre-trained General-purpose Audio Representations},
  author={Niizumi, Daisuke and Takeuchi, Daiki and Ohishi, Yasunori and Harada, Noboru and Kashino, Kunio},
  journal={IEEE/ACM Transactions on Audio, Speech, and Language Processing},
  volume={31}, pages={137--151}, year={2023},
  doi={10.1109/TASLP.2022.3221007}
}"""


class HubAccessError(ValueError):
    """The Hub cannot be reached (offline mode, no network, or no token): raised before any work is done."""


def check_hub_access(repo_id: str | None = None, token: str | None = None) -> None:
    """Fail early, with one clear message, when a push cannot work: `HF_HUB_OFFLINE` is set, the endpoint does not
    answer, or there is no token (`token`, e.g. `--hub_token`, else the saved one or `HF_TOKEN`). Call it before long
    work whose result is to be pushed."""
    from huggingface_hub import HfApi, constants, get_token

    if repo_id is not None and not repo_id.strip():  # a blank id
        raise HubAccessError("--hub_model_id must be a repository id such as 'user/byola-2048-voxceleb1'.")
    if constants.HF_HUB_OFFLINE:
        raise HubAccessError(
            "Cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE=1). Unset it, check the network, and log in "
            "with `hf auth login`; or drop --push_to_hub and upload the saved directory later."
        )
    token = token or get_token()
    if token is None:
        raise HubAccessError("Cannot push to the Hub: no token. Log in with `hf auth login` or set HF_TOKEN.")
    try:
        HfApi().whoami(token=token)
    except Exception as error:  # httpx / huggingface_hub raise many types; the user needs one message
        raise HubAccessError(
            f"Cannot push to the Hub: {constants.ENDPOINT} is unreachable or refused the token "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else 'no answer'}). Check the "
            "network and `hf auth whoami`, or drop --push_to_hub."
        ) from error


def refuse_public_repository(repo_id: str, token: str | None = None) -> None:
    """A private push (the default) into a repository that already exists and is public would publish the model
    (creating it again changes nothing): refuse it with the ways out."""
    public = public_repository(repo_id, token)
    if public is not None:
        raise HubAccessError(
            f"{public} already exists and is public: pushing there would publish the model. Choose another "
            "--hub_model_id, or pass --public (--hub_private_repo false) to publish it."
        )


@dataclass
class PushArguments:
    """The command-line tools' Hub flags."""

    push_to_hub: bool = field(default=False, metadata={"help": "Also push the result to the Hub"})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repository id for --push_to_hub, e.g. user/byola-2048"}
    )
    public: bool = field(
        default=False, metadata={"help": "Create the Hub repository public (it is private unless this is given)"}
    )


# TrainingArguments' Hub flags the commands' one push reads; every other `hub_*` field (Trainer's own pushes, which
# the commands turn off, and any a new transformers release adds) is refused unless left at its default.
USED_TRAINER_HUB_FLAGS = frozenset({"hub_model_id", "hub_token", "hub_private_repo"})


def trainer_push_arguments(training_args: Any, public: bool) -> PushArguments:
    """The push of a command whose Hub flags are `TrainingArguments`' (`--push_to_hub`, `--hub_model_id`,
    `--hub_private_repo`), checked by [`check_push_arguments`] before any work, as every command's push is: public only
    with `--public` (or `--hub_private_repo false`). Trainer's own pushes are turned off: it would create the
    repository public (transformers passes `hub_private_repo=None`) and upload its checkpoints; the command pushes its
    result once, with [`push_to_hub`]."""
    for flag in dataclasses.fields(training_args):
        value = getattr(training_args, flag.name)
        unused = flag.name.startswith("hub_") and flag.name not in USED_TRAINER_HUB_FLAGS
        if unused and getattr(value, "value", value) != flag.default:  # HubStrategy: an enum of strings
            name = flag.name
            raise HubAccessError(
                f"--{name} is not used: the command pushes its result once, to the repository's main branch, after "
                f"the run (Trainer's own pushes are off): drop --{name}."
            )
    public = public or training_args.hub_private_repo is False
    push = PushArguments(push_to_hub=training_args.push_to_hub, hub_model_id=training_args.hub_model_id, public=public)
    check_push_arguments(push, training_args.hub_token)
    training_args.push_to_hub = False
    return push


def check_push_arguments(push: PushArguments, token: str | None = None) -> None:
    """Before any work: raise [`HubAccessError`] with one clear line when `--push_to_hub` cannot succeed (with
    `token`, `--hub_token`, when given), or when `--hub_model_id` or `--public` is given without it (nothing would
    be pushed)."""
    if not push.push_to_hub:
        for flag, given in (("hub_model_id", push.hub_model_id is not None), ("public", push.public)):
            if given:
                raise HubAccessError(f"--{flag} only applies to --push_to_hub: pass --push_to_hub, or drop --{flag}.")
        return
    if not push.hub_model_id:
        raise HubAccessError("--push_to_hub needs --hub_model_id (the repository to create, e.g. user/byola-2048).")
    check_hub_access(push.hub_model_id, token)
    if not push.public:
        refuse_public_repository(push.hub_model_id, token)


CARD_TEMPLATE = """---
{metadata}
---

# BYOL-A {version} ({variant}, {feature_d}-d){task_title}

BYOL-A (BYOL for Audio, NTT) general-purpose audio representation, ported to transformers by byola_hf: \
`{architecture}` on the `{variant}` encoder with `feature_d={feature_d}`, a {n_mels}-band log-mel front-end at \
{sampling_rate} Hz, {frame_ms:g} ms per output frame ({frames_per_second:g} per second).

## Normalisation statistics

{statistics}
{task}## Usage

{usage}
## Licence

{licence}

## Citation

```bibtex
{citation}
```
"""
CLASSIFIER_USAGE = """```python
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

repo = "THIS_REPO"  # the Hub id or local directory of this model
classifier = pipeline("audio-classification", model=repo, trust_remote_code=True)
print(classifier("speech.wav"))  # [{{"label": ..., "score": ...}}, ...]; batch_size= for many files

# or with the Auto classes
model = AutoModelForAudioClassification.from_pretrained(repo, trust_remote_code=True).eval()
feature_extractor = AutoFeatureExtractor.from_pretrained(repo, trust_remote_code=True)
```
"""
# One file through a model with its Auto class: the CTC head's snippet decodes tokens, the encoder's pools. The
# doubled braces stay for the `sampling_rate` filled in by `model_card`.
FILE_USAGE = """```python
import torch, librosa
from transformers import AutoFeatureExtractor, {imports}

repo = "THIS_REPO"  # the Hub id or local directory of this model
model = {auto_class}.from_pretrained(repo, trust_remote_code=True).eval()
feature_extractor = AutoFeatureExtractor.from_pretrained(repo, trust_remote_code=True)
{loaded}waveform, rate = librosa.load("speech.wav", sr={{sampling_rate}}, mono=True)
with torch.no_grad():
    {outputs} = model(**feature_extractor(waveform, sampling_rate=rate, return_tensors="pt")){attribute}
{result}
```
"""
CTC_USAGE = FILE_USAGE.format(
    imports="AutoModelForCTC, AutoTokenizer",
    auto_class="AutoModelForCTC",
    loaded="tokenizer = AutoTokenizer.from_pretrained(repo)  # the CTC vocabulary saved with the model\n",
    outputs="logits",
    attribute=".logits",
    result="# greedy CTC decoding: best token per frame, repeats merged, blanks dropped\n"
    "print(tokenizer.batch_decode(logits.argmax(-1)))",
)
ENCODER_USAGE = FILE_USAGE.format(
    imports="AutoModel",
    auto_class="AutoModel",
    loaded="",
    outputs="outputs",
    attribute="",
    result="clip_embedding = outputs.pooler_output  # (1, feature_d); frames: outputs.last_hidden_state",
)
HEAD_USAGE = {"BYOLAForSequenceClassification": CLASSIFIER_USAGE, "BYOLAForCTC": CTC_USAGE}


def model_card(config: BYOLAConfig, task_info: dict[str, Any] | None = None, details: str = "") -> ModelCard:
    """A model card (README.md) for a BYOL-A model directory, filled into `CARD_TEMPLATE` from its config: what it is,
    the statistics and their provenance (or a warning that there are none), usage (with the head's own: the
    classification pipeline, CTC decoding), licence notice, citation, and for fine-tuned heads the task, its data and
    the evaluation metric (`task_info`, e.g. `{"task": "ks", "dataset": "mini/ks", "metrics": {...}}`); `details`
    (a command's own Markdown sections) before the usage. The metadata is `huggingface_hub`'s `ModelCardData`;
    `str(card)` is the README's text, signed ([`signed_card`])."""
    architecture = (config.architectures or ["BYOLAModel"])[0]
    licensed = getattr(config, "converted_from", None) is not None
    ntt_licence = {
        "license": "other",
        "license_name": "ntt-software-license-agreement-for-evaluation",
        "license_link": "https://github.com/nttcslab/byol-a/blob/master/LICENSE",
    }
    # A card's front matter names a licence; a model of none of NTT's weights gets no terms from byola_hf.
    unspecified = {"license": "other", "license_name": "unspecified"}
    metadata = ModelCardData(
        library_name="transformers",
        **(ntt_licence if licensed else unspecified),
        tags=["audio", "byol-a", "self-supervised-learning", "byola_hf", config.variant],
        pipeline_tag="audio-classification" if architecture == "BYOLAForSequenceClassification" else None,
    )
    task = (task_info or {}).get("task")
    head_usage = HEAD_USAGE.get(architecture)  # shown before the encoder's
    text = CARD_TEMPLATE.format(
        metadata=metadata.to_yaml(),
        version="v2" if config.concat_conv_features else "v1",
        variant=config.variant,
        feature_d=config.feature_d,
        task_title=f" — {task.upper()}" if task else "",
        architecture=architecture,
        n_mels=config.n_mels,
        sampling_rate=config.sampling_rate,
        frame_ms=1000 / config.frames_per_second,
        frames_per_second=config.frames_per_second,
        statistics=statistics_section(config),
        task=task_section(config, task_info, architecture) + details,
        usage=((head_usage + "\nThe encoder alone:\n\n" if head_usage else "") + ENCODER_USAGE).format(
            sampling_rate=config.sampling_rate
        ),
        licence=LICENSE_NOTICE if licensed else SCRATCH_NOTICE,
        citation=CITATION,
    )
    return ModelCard(signed_card(text))


def statistics_section(config: BYOLAConfig) -> str:
    """The card's statistics lines: values and provenance, or the warning that there are none."""
    if not config.has_statistics:
        return (
            "> **Warning: no statistics yet.** BYOL-A normalises log-mels with the mean and std of the downstream "
            "task's data, and this model refuses to run until they are set. Compute them with\n"
            "> `byola-compute-stats --model_name_or_path THIS_REPO --dataset_name DATASET --output_dir OUT`.\n"
        )
    lines = [f"- mean: `{float(config.mean)}`, std: `{float(config.std)}`"]  # as config.json reads back
    provenance = config.stats_provenance or {}
    if provenance.get("method") == "given":
        lines.append(f"- source: {provenance.get('source', 'given by hand')} (not computed by byola_hf)")
    elif provenance:
        lines += [
            f"- computed on: {statistics_source(provenance)}, split `{provenance.get('split')}`",
            f"- examples: {provenance.get('num_examples')}, frames: {provenance.get('num_frames')}, "
            f"method: {provenance.get('method', 'exact')}",
        ]
    else:
        lines.append("- provenance: not recorded")
    return "\n".join(lines) + "\n"


def task_section(config: BYOLAConfig, task_info: dict[str, Any] | None, architecture: str) -> str:
    """The card's fine-tuned-task lines (empty for an encoder): task, data, labels, metrics."""
    if not task_info:
        return ""
    lines = ["## Fine-tuned task", ""]
    if task_info.get("task"):
        # The description names the benchmark's usual dataset ("speaker identification (VoxCeleb1)"); the card says
        # the kind of task and, separately, the data this model was trained on.
        kind = (task_info.get("description") or "").split(" (")[0]
        lines.append(f"- task: {task_info['task']}" + (f" ({kind})" if kind else ""))
        lines.append(f"- trained on: {task_info.get('dataset') or 'not recorded'}")
    if config.id2label and architecture != "BYOLAForCTC" and len(config.id2label) <= 50:
        lines.append(f"- labels: {', '.join(str(v) for v in config.id2label.values())}")
    for key, value in (task_info.get("metrics") or {}).items():
        lines.append(f"- {key}: {value:.4g}" if isinstance(value, float) else f"- {key}: {value}")
    if task_info.get("metrics"):
        lines.append(f"- evaluated on: {task_info.get('eval_split') or 'not recorded'}")
        if task_info.get("test_split"):
            lines.append(f"- tested on: {task_info['test_split']} (the test_* metrics)")
    elif "eval_split" in task_info:
        lines.append("- not evaluated (no evaluation split)")
    return "\n".join(lines) + "\n\n"


def save_model_card(save_directory: str | Path, config: BYOLAConfig, task_info: dict[str, Any] | None = None) -> Path:
    """Write [`model_card`] to `save_directory/README.md`."""
    path = Path(save_directory) / "README.md"
    model_card(config, task_info).save(path)
    return path


def push_to_hub(
    save_directory: str | Path,
    repo_id: str,
    private: bool = True,
    token: str | None = None,
    commit_message: str = "Upload BYOL-A model with byola_hf",
    task_info: dict[str, Any] | None = None,
) -> str:
    """Upload a saved BYOL-A directory (weights, configs, the remote code files, and its `README.md`: the card the
    commands wrote, or the caller's own; a folder without one gets a card generated from its config, uploaded and not
    written into the folder; byola_hf's card never replaces another's, see [`sends_card`]) to `repo_id`, creating
    the repository if needed: private unless `private=False`. Weights converted from NTT's files
    (`config.converted_from`) are pushed with a warning that their licence allows internal evaluation only. Returns
    the commit URL."""
    from huggingface_hub import HfApi
    from transformers import AutoConfig

    if not repo_id:
        raise HubAccessError("Pushing needs a repository id: pass --hub_model_id user/name.")
    directory = Path(save_directory)
    config = AutoConfig.from_pretrained(directory)
    if isinstance(config, BYOLAPreTrainingConfig):  # the learner, optimizer and RNG states under an encoder's card
        raise PretrainingCheckpointError(directory)
    local = directory / "README.md"
    check_utf8_card(local)
    card = read_card(local) if local.is_file() else str(model_card(config, task_info))
    check_card_states(card, config, local)
    check_hub_access(repo_id, token)
    if private:
        refuse_public_repository(repo_id, token)
    warn_if_licensed(config, private)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    sent = sends_card(api, repo_id, card)
    # One commit: a failure part-way must not leave a new card over the old weights, or new weights under the old card.
    commit = api.create_commit(
        repo_id,
        folder_operations(directory, (local if local.is_file() else card.encode("utf-8")) if sent else None),
        commit_message=commit_message,
    )
    return str(getattr(commit, "commit_url", commit))


def folder_operations(directory: Path, readme: Path | bytes | None) -> list[Any]:
    """The files of a saved folder to upload, as one commit's operations: not checkpoints, TensorBoard logs, pickled
    `.bin` files or dotfiles (the commands' markers, staging); with `readme` as README.md (the folder's own file, or
    a generated card, never written into the caller's folder), or no README.md when `None`."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    names = sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file())
    # huggingface_hub's own (.git and its upload metadata at any depth, which a commit may not hold), as upload_folder
    ignored = ["checkpoint-*", "runs/*", "*.bin", ".*", "README.md", *DEFAULT_IGNORE_PATTERNS]
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(directory / name))
        for name in filter_repo_objects(names, ignore_patterns=ignored)
    ]
    if readme is not None:
        readme = str(readme) if isinstance(readme, Path) else readme
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme))
    return operations


def signed_card(text: str) -> str:
    """`text` with a last line that marks it as byola_hf's card, unedited: a hash of the text before it."""
    text = text.rstrip("\n") + "\n"
    return f"{text}\n<!-- byola_hf card {hashlib.sha256(text.encode()).hexdigest()[:16]} -->\n"


def is_unedited_card(text: str) -> bool:
    """Whether `text` is a card byola_hf wrote ([`signed_card`]) that nobody has edited since."""
    return signed_card(text.rstrip("\n").rpartition("\n\n")[0]) == text.rstrip("\n") + "\n"


def check_utf8_card(path: Path) -> None:
    """Refuse a README.md that is not UTF-8 text, before anything is created: the Hub reads a card as UTF-8 (the
    commit failed on it with a codec error that named no file)."""
    if not path.is_file():
        return
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {error.start}), which the Hub requires of a model card: save it as "
            "UTF-8, or remove it to push byola_hf's card."
        ) from None


def read_card(path: Path) -> str:
    """A README.md's text; bytes that are not UTF-8 (a card of the user's own in another encoding: never one of
    byola_hf's) are replaced, not an error."""
    return path.read_text(encoding="utf-8", errors="replace")


def check_card_states(card: str, config: BYOLAConfig, path: Path) -> None:
    """Refuse to push byola_hf's card, unedited, that states other statistics or another licence than `config` (it
    was written before they changed: `save_pretrained` writes no card)."""
    licensed = getattr(config, "converted_from", None) is not None
    statistics = statistics_section(config).splitlines()[0]  # the values, or the warning that there are none
    if is_unedited_card(card) and (statistics not in card or licensed != (LICENSE_NOTICE in card)):
        raise ValueError(
            f"{path} states other statistics or another licence than the folder's config.json (it was written before "
            "they changed): write it again (byola_hf.hub.save_model_card(folder, config)), or remove it."
        )


def sends_card(api: Any, repo_id: str, card: str) -> bool:
    """Whether a push sends `card` as `repo_id`'s README.md. A card of the caller's own (not byola_hf's as it wrote it)
    is sent, as asked; byola_hf's replaces no README.md or one byola_hf wrote unedited (it may state earlier weights
    or statistics), and keeps any other (the user's, an edited one, transformers' template), as transformers' pushes
    keep it, with a warning."""
    if not is_unedited_card(card) or not api.file_exists(repo_id, "README.md"):
        return True
    with tempfile.TemporaryDirectory() as folder:  # not into the user's cache, which may be read-only or full
        kept = read_card(Path(api.hf_hub_download(repo_id, "README.md", local_dir=folder)))
    if is_unedited_card(kept):
        return True
    unlicensed = "ntt-software" in card and "ntt-software" not in kept  # NTT's weights under another's card
    logger.warning(
        f"{repo_id} has a README.md that byola_hf did not write (or that was edited since), kept"
        + (": it does not state NTT's licence of these weights" if unlicensed else "")
        + ". To have byola_hf's card there, delete it on the Hub and push again, or push a README.md of your own."
    )
    return False

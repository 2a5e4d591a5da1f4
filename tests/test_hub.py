"""Sharing: trust_remote_code loading without byola_hf, pushes through huggingface_hub to a loopback Hub, cards (a
CTC card's usage runs as written; a fine-tuned card names its task kind and training data)."""

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor, AutoModel, Wav2Vec2CTCTokenizer

from byola_hf import BYOLAConfig, BYOLAFeatureExtractor, BYOLAForCTC, BYOLAForSequenceClassification
from byola_hf.hub import LICENSE_NOTICE, model_card

from conftest import console_script, slow


BLOCK_BYOLA_HF = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "byola_hf" or name.startswith("byola_hf."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _Block())
try:
    import byola_hf
    raise SystemExit("byola_hf is importable: the test would prove nothing")
except ModuleNotFoundError:
    pass
"""


def test_trust_remote_code_without_byola_hf(tmp_path, random2048_dir, golden):
    """Saved directories carry the code; a process that cannot import byola_hf loads and reproduces them exactly."""
    base = AutoModel.from_pretrained(random2048_dir).eval()
    fe = AutoFeatureExtractor.from_pretrained(random2048_dir)
    head = BYOLAForSequenceClassification.from_pretrained(random2048_dir, num_labels=3).eval()
    base.save_pretrained(tmp_path / "base")
    fe.save_pretrained(tmp_path / "base")
    head.save_pretrained(tmp_path / "head")
    fe.save_pretrained(tmp_path / "head")
    for directory in ("base", "head"):
        files = {p.name for p in (tmp_path / directory).iterdir()}
        assert {"configuration_byola.py", "modeling_byola.py", "feature_extraction_byola.py"} <= files
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_byola.BYOLAForSequenceClassification"
    assert json.loads((tmp_path / "base" / "preprocessor_config.json").read_text())["auto_map"] == {
        "AutoFeatureExtractor": "feature_extraction_byola.BYOLAFeatureExtractor"
    }

    waveform = golden["arrays"]["espeak_command/waveform"]
    np.save(tmp_path / "waveform.npy", waveform)
    with torch.no_grad():
        inputs = fe(waveform, sampling_rate=16000, return_tensors="pt")
        np.save(tmp_path / "expected_hidden.npy", base(**inputs).last_hidden_state.numpy())
        np.save(tmp_path / "expected_logits.npy", head(**inputs).logits.numpy())
        np.save(tmp_path / "expected_pooled.npy", base(**inputs).pooler_output[0].numpy())
    script = BLOCK_BYOLA_HF + textwrap.dedent(f"""
        import numpy as np, torch
        from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification
        root = {str(tmp_path)!r}
        fe = AutoFeatureExtractor.from_pretrained(root + "/base", trust_remote_code=True)
        model = AutoModel.from_pretrained(root + "/base", trust_remote_code=True).eval()
        head = AutoModelForAudioClassification.from_pretrained(root + "/head", trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        inputs = fe(np.load(root + "/waveform.npy"), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            assert np.array_equal(model(**inputs).last_hidden_state.numpy(), np.load(root + "/expected_hidden.npy"))
            assert np.array_equal(head(**inputs).logits.numpy(), np.load(root + "/expected_logits.npy"))
        # Every head class loads from the base directory through its Auto class.
        from transformers import AutoModelForAudioFrameClassification, AutoModelForCTC, pipeline
        for auto, kwargs in ((AutoModelForAudioClassification, {{"num_labels": 2}}),
                             (AutoModelForCTC, {{"vocab_size": 5}}),
                             (AutoModelForAudioFrameClassification, {{"num_labels": 2}})):
            loaded = auto.from_pretrained(root + "/base", trust_remote_code=True, **kwargs)
            assert type(loaded).__module__.startswith("transformers_modules"), type(loaded)
        # The directory carries the embedding pipeline; batches of mixed lengths work there too.
        extractor = pipeline("byola-audio-embedding", model=root + "/base", trust_remote_code=True)
        waveform = np.load(root + "/waveform.npy")
        embeddings = extractor([waveform, waveform[:20000]], sampling_rate=16000, batch_size=2)
        assert np.allclose(embeddings[0], np.load(root + "/expected_pooled.npy"), atol=1e-6)
        # The classifier's directory carries BYOL-A's audio-classification pipeline, not transformers' stock one
        # (which would take an array at another rate as 16 kHz): rates are checked and resampled.
        classifier = pipeline("audio-classification", model=root + "/head", trust_remote_code=True)
        assert type(classifier).__name__ == "BYOLAAudioClassificationPipeline", type(classifier)
        scores = classifier(waveform, sampling_rate=16000, top_k=3)
        probabilities = torch.tensor(np.load(root + "/expected_logits.npy"))[0].softmax(-1)
        assert abs(max(s["score"] for s in scores) - float(probabilities.max())) < 1e-5
        try:
            classifier(waveform, sampling_rate=0)
            raise SystemExit("a rate of 0 was accepted")
        except ValueError as error:
            assert "positive whole number" in str(error), error
        print("remote code reproduced the installed package exactly")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reproduced the installed package exactly" in result.stdout


class FakeHub(BaseHTTPRequestHandler):
    """The few endpoints huggingface_hub's create_repo / create_commit use (regular, non-LFS uploads)."""

    commits: list[dict] = []
    creates: list[dict] = []  # the create-repo requests, with their "visibility"
    public_repos: set[str] = set()  # repositories that exist, public; any other does not exist
    readmes: dict[str, bytes] = {}  # repositories that hold a README.md, and its text

    def log_message(self, *args):
        pass

    def _json(self, payload, status=200, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self):
        if "/resolve/main/" in self.path:
            return self._readme(send_body=True)
        if self.path.startswith("/api/whoami"):
            return self._json({"type": "user", "name": "tester", "auth": {"accessToken": {"role": "write"}}})
        if self.path.startswith("/api/models/"):
            repo = "/".join(self.path.split("?")[0].split("/")[3:5])
            if repo in FakeHub.public_repos:
                return self._json({"id": repo, "private": False, "sha": "0" * 40})
            return self._json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
        self._json({"error": f"not faked: GET {self.path}"}, 404)

    def _readme(self, send_body: bool):  # a repository's README.md: file_exists' HEAD, hf_hub_download's GET
        repo, name = "/".join(self.path.split("/")[1:3]), self.path.split("?")[0].split("/resolve/main/")[-1]
        text = FakeHub.readmes.get(repo) if name == "README.md" else None
        self.send_response(200 if text is not None else 404)
        headers = {"X-Repo-Commit": "0" * 40, "ETag": f'"{len(text)}"'} if text is not None else {}
        for header, value in {
            **headers,
            "Content-Length": str(len(text or b"")),
            "X-Error-Code": "EntryNotFound",
        }.items():
            if text is None or header != "X-Error-Code":
                self.send_header(header, value)
        self.end_headers()
        if send_body and text:
            self.wfile.write(text)

    def do_HEAD(self):
        self._readme(send_body=False)

    def do_POST(self):
        body = self._body()
        if self.path == "/api/repos/create":
            request = json.loads(body)
            FakeHub.creates.append(request)
            owner = request.get("organization") or "tester"
            return self._json({"url": f"http://{self.headers['Host']}/{owner}/{request['name']}"})
        if self.path == "/api/validate-yaml":  # the card's front matter must parse as YAML with a licence
            import yaml

            content = json.loads(body)["content"]
            metadata = yaml.safe_load(content.split("---")[1])
            if not isinstance(metadata, dict) or "license" not in metadata:
                return self._json({"errors": [{"message": "no license"}]}, 400)
            return self._json({"warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._json(
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if "/commit/" in self.path:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            files = {
                line["value"]["path"]: base64.b64decode(line["value"]["content"])
                for line in lines
                if line["key"] == "file"
            }
            FakeHub.commits.append({"path": self.path, "files": files})
            return self._json(
                {
                    "success": True,
                    "commitOid": "0" * 40,
                    "commitUrl": f"http://{self.headers['Host']}/tester/x/commit/{'0' * 40}",
                }
            )
        self._json({"error": f"not faked: POST {self.path}"}, 404)


@pytest.fixture
def fake_hub():
    FakeHub.commits, FakeHub.creates, FakeHub.public_repos, FakeHub.readmes = [], [], set(), {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def hub_env(endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": "hf_test_token",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


@slow
def test_converter_pushes_through_huggingface_hub(fake_hub, real512_checkpoint, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            console_script("byola-convert"),
            str(real512_checkpoint),
            str(tmp_path / "model"),
            "--mean",
            "-8.907230",
            "--std",
            "4.892486",
            "--push_to_hub",
            "--hub_model_id",
            "tester/byola-512",
            "--public",
        ],
        capture_output=True,
        text=True,
        env=hub_env(fake_hub),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [create.get("visibility") for create in FakeHub.creates] == ["public"]  # --public was given
    assert "NTT's licence allows internal evaluation only" in result.stderr and "PUBLIC" in result.stderr
    assert len(FakeHub.commits) == 1 and "/api/models/tester/byola-512/commit/main" in FakeHub.commits[0]["path"]
    files = FakeHub.commits[0]["files"]
    assert set(files) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "configuration_byola.py",
        "modeling_byola.py",
        "feature_extraction_byola.py",
        "inference_byola.py",
        "reference_network.py",
        "pipelines.py",
        "extras.py",
        "audio.py",
    }
    assert files["model.safetensors"] == (tmp_path / "model" / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "mean: `-8.90723`, std: `4.892486`" in card and LICENSE_NOTICE in card
    assert "niizumi2021byol-a" in card and "trust_remote_code=True" in card


@slow
def test_statistics_cli_pushes(fake_hub, random2048_dir, tmp_path):
    from byola_hf.superb.mini_sets import make_ks

    data = make_ks(tmp_path / "ks", repeats=1)
    result = subprocess.run(
        [
            sys.executable,
            console_script("byola-compute-stats"),
            "--model_name_or_path",
            str(random2048_dir),
            "--dataset_name",
            "audiofolder",
            "--data_dir",
            str(data),
            "--output_dir",
            str(tmp_path / "with-stats"),
            "--push_to_hub",
            "--hub_model_id",
            "tester/byola-ks",
        ],
        capture_output=True,
        text=True,
        env=hub_env(fake_hub),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    card = FakeHub.commits[0]["files"]["README.md"].decode()
    config = json.loads(FakeHub.commits[0]["files"]["config.json"])
    assert f"mean: `{config['mean']}`" in card and "split `train`" in card and "examples: 60" in card


@slow
@pytest.mark.parametrize(
    "script, arguments",
    [
        ("byola-convert", ["CHECKPOINT", "OUT", "--push_to_hub", "--hub_model_id", "tester/x"]),
        (
            "byola-compute-stats",
            [
                "--model_name_or_path",
                "MODEL",
                "--dataset_name",
                "audiofolder",
                "--data_dir",
                "OUT",
                "--output_dir",
                "OUT",
                "--push_to_hub",
                "--hub_model_id",
                "tester/x",
            ],
        ),
        (
            "byola-run-superb",
            [
                "--task",
                "ks",
                "--model_name_or_path",
                "MODEL",
                "--data_dir",
                "OUT",
                "--output_dir",
                "OUT",
                "--push_to_hub",
                "--hub_model_id",
                "tester/x",
                "--report_to",
                "none",
            ],
        ),
    ],
)
def test_offline_push_fails_early_and_clearly(script, arguments, real512_checkpoint, random2048_dir, tmp_path):
    substitutions = {"CHECKPOINT": str(real512_checkpoint), "MODEL": str(random2048_dir), "OUT": str(tmp_path)}
    arguments = [substitutions.get(a, a) for a in arguments]
    result = subprocess.run(
        [sys.executable, console_script(script), *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert "Cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE=1)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model.safetensors").exists()  # failed before doing the work


def test_pushes_are_private_unless_public_is_given(fake_hub, real512_checkpoint, tmp_path):
    """No visibility flag: the repository is created private, and the licence of converted NTT weights is said."""
    result = subprocess.run(
        [
            console_script("byola-convert"),
            str(real512_checkpoint),
            str(tmp_path / "model"),
            "--no_verify",
            "--push_to_hub",
            "--hub_model_id",
            "tester/byola-512",
        ],
        capture_output=True,
        text=True,
        env=hub_env(fake_hub),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [create.get("visibility") for create in FakeHub.creates] == ["private"]
    assert "to a private repository: NTT's licence allows internal evaluation only" in result.stderr


def test_byola_objects_own_pushes_are_private_unless_asked(fake_hub, small_model, tmp_path):
    """transformers' `push_to_hub(repo_id)` and `save_pretrained(..., push_to_hub=True)` create the repository public
    (private=None): converted NTT weights were published by the one call a transformers user knows. Every BYOL-A
    object (model, config, feature extractor, processor) pushes private unless `private=False` is passed."""
    script = f"""
import contextlib, byola_hf
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
from byola_hf.superb.recipes import build_ctc_tokenizer
feature_extractor = AutoFeatureExtractor.from_pretrained({str(small_model)!r})
tokenizer = build_ctc_tokenizer(["a b"], phonemes=True)
objects = {{
    "model": AutoModel.from_pretrained({str(small_model)!r}),
    "config": AutoConfig.from_pretrained({str(small_model)!r}),
    "fe": feature_extractor,
    "processor": byola_hf.BYOLAProcessor(feature_extractor, tokenizer),
}}
for name, item in objects.items():
    with contextlib.suppress(Exception):  # the fake Hub refuses transformers' card (no licence): after the create
        item.push_to_hub(f"tester/{{name}}")
    with contextlib.suppress(Exception):
        item.save_pretrained({str(tmp_path)!r} + "/" + name, push_to_hub=True, repo_id=f"tester/{{name}}-saved")
    with contextlib.suppress(Exception):
        item.push_to_hub(f"tester/{{name}}-open", private=False)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=hub_env(fake_hub))
    assert result.returncode == 0, result.stderr[-3000:]
    created = {create["name"]: create.get("visibility", "public") for create in FakeHub.creates}
    for name in ("model", "config", "fe", "processor"):
        assert (created[name], created[f"{name}-saved"], created[f"{name}-open"]) == ("private", "private", "public")


@slow
def test_byola_objects_own_private_pushes_into_a_public_repository_are_refused(fake_hub, small_model, tmp_path):
    """`model.push_to_hub(repo)` (private by default) into a repository that exists and is public uploaded the weights
    there: creating it again does not make it private. Refused before anything is created or sent, for the
    objects' `push_to_hub` and `save_pretrained(push_to_hub=True)`, a bare name (the token's namespace) included;
    `private=False` publishes as asked."""
    FakeHub.public_repos.update({"tester/shared", "tester/mine"})
    script = f"""
import byola_hf
from transformers import AutoFeatureExtractor, AutoModel
model = AutoModel.from_pretrained({str(small_model)!r})
feature_extractor = AutoFeatureExtractor.from_pretrained({str(small_model)!r})
for call in (lambda: model.push_to_hub("tester/shared"), lambda: feature_extractor.push_to_hub("mine"),
             lambda: model.save_pretrained({str(tmp_path / "saved")!r}, push_to_hub=True, repo_id="tester/shared"),
             lambda: model.config.save_pretrained({str(tmp_path / "mine")!r}, push_to_hub=True)):
    try:
        call()
    except ValueError as error:
        print("refused:", error)
try:
    model.push_to_hub("tester/shared", private=False)
except ValueError as error:  # the fake Hub refuses transformers' card (no licence): after the create
    print("sent:", error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=hub_env(fake_hub))
    assert result.returncode == 0, result.stderr[-3000:]
    refusals = [line for line in result.stdout.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 4, result.stdout
    for refusal, repo in zip(refusals, ("tester/shared", "tester/mine", "tester/shared", "tester/mine")):
        assert f"{repo} already exists and is public" in refusal and "private=False" in refusal, refusal
    assert [create.get("visibility", "public") for create in FakeHub.creates] == ["public"]


@slow
def test_byola_objects_own_pushes_of_converted_weights_warn_of_the_licence(fake_hub, small_model, tmp_path):
    """docs/hub.md: pushing weights converted from NTT's files warns that their licence allows internal evaluation
    only. `model.push_to_hub` and `save_pretrained(push_to_hub=True)` of such a model said nothing."""
    script = f"""
import contextlib, byola_hf
from transformers import AutoModel
model = AutoModel.from_pretrained({str(small_model)!r})
model.config.converted_from = "AudioNTT2020-BYOLA-64x96d512.pth"
for call in (lambda: model.push_to_hub("tester/a"), lambda: model.config.push_to_hub("tester/b", private=False),
             lambda: model.save_pretrained({str(tmp_path / "c")!r}, push_to_hub=True, repo_id="tester/c")):
    with contextlib.suppress(ValueError):  # the fake Hub refuses transformers' card (no licence): after the create
        call()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=hub_env(fake_hub))
    assert result.returncode == 0, result.stderr[-3000:]
    warning = "repository: NTT's licence allows internal evaluation only"
    warned = [line for line in result.stderr.splitlines() if warning in line]
    assert len(warned) == 3, result.stderr[-3000:]
    assert ["to a private" in warned[0], "to a PUBLIC" in warned[1], "to a private" in warned[2]] == [True] * 3


@slow
def test_byola_hfs_card_replaces_only_its_own_on_the_hub(fake_hub, small_model, tmp_path):
    """A saved folder without a README.md pushed with byola_hf.hub.push_to_hub got a card generated from its config,
    uploaded over the repository's README.md, a card the user wrote on the Hub included, and so did a command's push
    of its folder's card. byola_hf's card replaces one byola_hf wrote (unedited: it may state earlier statistics) and
    keeps any other, with a warning, which says when the kept card does not state NTT's licence of converted
    weights."""
    import shutil

    from byola_hf import BYOLAConfig
    from byola_hf.hub import model_card, save_model_card

    folder = tmp_path / "saved"
    shutil.copytree(small_model, folder)
    (folder / "README.md").unlink(missing_ok=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "converted_from": "AudioNTT2020-BYOLA-64x96d512.pth"}))
    ours = str(model_card(BYOLAConfig(feature_d=512, mean=-1.0, std=2.0))).encode()
    users = b"# The user's card\n"
    FakeHub.readmes.update({"tester/users": users, "tester/ours": ours, "tester/edited": ours + b"x"})
    FakeHub.readmes["tester/licensed"] = b"# Mine, license_name: ntt-software-license-agreement-for-evaluation\n"
    FakeHub.readmes["tester/own"] = ours  # the folder's README.md of the user's own replaces it, as asked
    owned = tmp_path / "owned"
    shutil.copytree(folder, owned)
    (owned / "README.md").write_text("---\nlicense: mit\n---\n# My card\n")
    FakeHub.readmes["tester/command"] = users  # a command's folder holds byola_hf's card: it keeps the user's too
    commanded = tmp_path / "command"
    shutil.copytree(folder, commanded)
    save_model_card(commanded, BYOLAConfig.from_pretrained(commanded))
    script = f"""
from byola_hf.hub import push_to_hub
for repo in ("tester/fresh", "tester/users", "tester/ours", "tester/edited"):
    push_to_hub({str(folder)!r}, repo)
push_to_hub({str(commanded)!r}, "tester/command")
push_to_hub({str(folder)!r}, "tester/licensed")
push_to_hub({str(owned)!r}, "tester/own")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=hub_env(fake_hub))
    assert result.returncode == 0, result.stderr[-3000:]
    carded = ["/".join(c["path"].split("/")[3:5]) for c in FakeHub.commits if "README.md" in c["files"]]
    assert carded == ["tester/fresh", "tester/ours", "tester/own"], carded
    replaced = next(
        c["files"]["README.md"] for c in FakeHub.commits if "tester/ours" in c["path"] and "README.md" in c["files"]
    )
    assert b"ntt-software-license" in replaced and b"ntt-software-license" not in ours  # this model's card
    kept = "has a README.md that byola_hf did not write (or that was edited since), kept"
    for repo in ("tester/users", "tester/edited", "tester/command"):
        assert f"{repo} {kept}: it does not state NTT's licence" in result.stderr, result.stderr[-2000:]
    assert f"tester/licensed {kept}. To have" in result.stderr  # its card states NTT's licence: no such note
    # one commit a push: a failure between a card's commit and the folder's would leave the card over old weights
    uploads = {"/".join(commit["path"].split("/")[3:5]): commit["files"] for commit in FakeHub.commits}
    assert len(FakeHub.commits) == len(uploads) == 7 and all("config.json" in files for files in uploads.values())
    assert "README.md" not in uploads["tester/command"] and uploads["tester/own"]["README.md"].endswith(b"# My card\n")


@slow
def test_a_private_push_into_an_existing_public_repository_is_refused(fake_hub, real512_checkpoint, tmp_path):
    """Creating a repository that exists changes nothing, so a private push (the default) into a public one would
    publish the converted weights: refused before any work, in one line; --public pushes there."""
    FakeHub.public_repos.add("tester/shared")
    command = [console_script("byola-convert"), str(real512_checkpoint), str(tmp_path / "model"), "--no_verify",
               "--push_to_hub", "--hub_model_id", "tester/shared"]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, env=hub_env(fake_hub))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "tester/shared already exists and is public: pushing there would publish the model. Choose another "
            "--hub_model_id, or pass --public (--hub_private_repo false) to publish it."
        )
    )
    assert FakeHub.creates == [] and FakeHub.commits == [] and not (tmp_path / "model").exists()
    published = subprocess.run([*command, "--public"], capture_output=True, text=True, env=hub_env(fake_hub))
    assert published.returncode == 0, published.stderr[-3000:]
    assert len(FakeHub.commits) == 1


@slow
def test_unreachable_hub_fails_early(real512_checkpoint, tmp_path):
    env = {**hub_env("http://127.0.0.1:9"), "HF_HUB_ETAG_TIMEOUT": "2"}
    result = subprocess.run(
        [
            sys.executable,
            console_script("byola-convert"),
            str(real512_checkpoint),
            str(tmp_path / "out"),
            "--push_to_hub",
            "--hub_model_id",
            "tester/x",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2 and "is unreachable or refused the token" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_card_without_statistics_warns():
    converted = "AudioNTT2020-BYOLA-64x96d512.pth"  # NTT's weights: their licence
    card = str(model_card(BYOLAConfig(feature_d=512, converted_from=converted)))
    assert "no statistics yet" in card and "byola-compute-stats" in card
    assert LICENSE_NOTICE in card and "# BYOL-A v1 (AudioNTT2020, 512-d)" in card
    fine_tuned = model_card(
        BYOLAConfig(
            feature_d=512,
            mean=-9.0,
            std=4.0,
            id2label={0: "yes", 1: "no"},
            architectures=["BYOLAForSequenceClassification"],
            converted_from=converted,
        ),
        {"task": "ks", "description": "keyword spotting", "metrics": {"eval_accuracy": 0.9}},
    )
    assert fine_tuned.data.license == "other" and fine_tuned.data.pipeline_tag == "audio-classification"
    fine_tuned = str(fine_tuned)
    assert "task: ks (keyword spotting)" in fine_tuned and "eval_accuracy: 0.9" in fine_tuned
    ctc = str(
        model_card(
            BYOLAConfig(feature_d=512, mean=-9.0, std=4.0, vocab_size=5, architectures=["BYOLAForCTC"]),
            {"task": "pr", "description": "phoneme recognition", "dataset": "LibriSpeech test-clean"},
        )
    )
    assert "tokenizer.batch_decode(logits.argmax(-1))" in ctc and "- trained on: LibriSpeech test-clean" in ctc
    assert "\n\n\n" not in ctc
    assert "labels: yes, no" in fine_tuned


@slow
def test_run_superb_pushes_the_fine_tuned_head(fake_hub, random2048_dir, tmp_path):
    from byola_hf.superb.mini_sets import make_ks

    data = make_ks(tmp_path / "ks", repeats=1)
    result = subprocess.run(
        [
            sys.executable,
            console_script("byola-run-superb"),
            "--task",
            "ks",
            "--model_name_or_path",
            str(random2048_dir),
            "--data_dir",
            str(data),
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "1",
            "--report_to",
            "none",
            "--use_cpu",
            "--save_strategy",
            "no",
            "--push_to_hub",
            "--hub_model_id",
            "tester/byola-ks",
            "--hub_private_repo",
            "true",
        ],
        capture_output=True,
        text=True,
        env=hub_env(fake_hub),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(FakeHub.commits) == 1  # one push at the end, not one per checkpoint
    files = FakeHub.commits[0]["files"]
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "modeling_byola.py",
        "eval_results.json",
        "layer_weights.png",
        "confusion_matrix.png",
    } <= set(files)
    card = files["README.md"].decode()
    assert "task: ks (keyword spotting" in card and "eval_accuracy" in card and LICENSE_NOTICE in card


def test_ctc_card_usage_runs_as_written(random2048_dir, tmp_path, monkeypatch):
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), pad_token="<pad>", unk_token="<unk>")
    model = BYOLAForCTC.from_pretrained(random2048_dir, vocab_size=len(tokenizer), ctc_blank_id=0)
    repo = tmp_path / "pr-model"
    model.save_pretrained(repo)
    tokenizer.save_pretrained(repo)
    BYOLAFeatureExtractor.from_model_config(model.config).save_pretrained(repo)
    sf.write(
        tmp_path / "speech.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000
    )
    card = str(model_card(model.config))
    assert "AutoModelForCTC" in card and "batch_decode" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("THIS_REPO", str(repo))
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(snippet, {"print": printed.append})  # noqa: S102  (the card's own text)
    assert len(printed) == 1 and isinstance(printed[0], list) and isinstance(printed[0][0], str)


def test_fine_tuned_card_names_the_task_kind_and_the_training_data():
    config = BYOLAConfig(feature_d=512, mean=-8.0, std=4.0, architectures=["BYOLAForSequenceClassification"])
    info = {"task": "sid", "description": "speaker identification (VoxCeleb1)", "dataset": "my-speakers"}
    card = str(model_card(config, info))
    assert "task: sid (speaker identification)" in card and "trained on: my-speakers" in card
    assert "VoxCeleb1" not in card
    assert "trained on: not recorded" in str(model_card(config, {"task": "sid", "description": "x (VoxCeleb1)"}))


def test_card_names_the_folder_the_statistics_were_computed_on():
    """A model trained on one audiofolder task with statistics computed on another said "computed on: audiofolder",
    the task's own data as far as its reader could tell: the card names the statistics' folder (and the pre-training
    card the data's), as config.stats_provenance records it."""
    from byola_hf.pretraining.model_card import pretraining_card

    provenance = {"dataset": "audiofolder", "data_dir": "tasks/sid", "split": "train", "method": "exact"}
    config = BYOLAConfig(feature_d=512, mean=-8.0, std=4.0, stats_provenance=provenance)
    info = {"task": "ks", "description": "keyword spotting", "dataset": "audiofolder (tasks/ks)"}
    card = str(model_card(config, info))
    assert "- computed on: audiofolder (tasks/sid), split `train`" in card
    assert "trained on: audiofolder (tasks/ks)" in card
    config.stats_provenance = {**provenance, "dataset": "hub/corpus", "config": "clean", "data_dir": None}
    assert "- computed on: hub/corpus (clean), split `train`" in str(model_card(config))
    config.stats_provenance = {**provenance, "num_examples": 3}
    info = {"audio_hours": 0.5, "epochs": 1.0, "init_from": None, "steps": 2, "batch_size": 2}
    card = str(pretraining_card(config, {**info, "learning_rate": 1e-3, "logged_losses": []}))
    assert "- data: audiofolder (tasks/sid), split `train`, 3 clips" in card


def test_trainer_commands_push_privately_unless_told_to_publish(monkeypatch, tmp_path):
    """Trainer's `hub_private_repo` is `None` unless given: a push of byola-run-superb, byola-finetune or
    byola-pretrain is private then, and public only with --public or --hub_private_repo false (reading `None` as
    false published every such push by default and survived the slow-tier pushes)."""
    from transformers import TrainingArguments

    from byola_hf import hub

    monkeypatch.setattr(hub, "check_hub_access", lambda repo_id=None, token=None: None)
    monkeypatch.setattr(hub, "refuse_public_repository", lambda repo_id, token=None: None)
    cases = [({}, False, False), ({"hub_private_repo": True}, False, False), ({}, True, True)]
    cases.append(({"hub_private_repo": False}, False, True))
    for flags, public, expected in cases:
        training_args = TrainingArguments(
            output_dir=str(tmp_path), report_to="none", push_to_hub=True, hub_model_id="user/model", **flags
        )
        push = hub.trainer_push_arguments(training_args, public)
        assert (push.push_to_hub, push.hub_model_id, push.public) == (True, "user/model", expected), flags
        assert training_args.push_to_hub is False  # Trainer's own (public) pushes are off


def test_a_trainer_commands_hub_token_is_the_token_its_checks_use(monkeypatch, tmp_path):
    """--hub_token without a saved token (a CI job's usual way) was refused before any work as 'no token': the early
    checks read the saved token only, though the push itself used --hub_token."""
    import huggingface_hub
    from transformers import TrainingArguments

    from byola_hf import hub

    used = []

    class Api:
        def __init__(self, token=None):
            used.append(("api", token))

        def whoami(self, token=None):
            used.append(("whoami", token))
            return {"name": "tester"}

        def model_info(self, repo_id):
            return type("Info", (), {"private": True})  # exists, private: the push may go there

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    training_args = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", push_to_hub=True, hub_model_id="tester/m", hub_token="hf_given"
    )
    assert hub.trainer_push_arguments(training_args, public=False).hub_model_id == "tester/m"
    assert ("whoami", "hf_given") in used and ("api", "hf_given") in used
    training_args = TrainingArguments(output_dir=str(tmp_path), report_to="none", push_to_hub=True, hub_model_id="x/m")
    with pytest.raises(hub.HubAccessError, match="no token"):
        hub.trainer_push_arguments(training_args, public=False)


@pytest.mark.parametrize("flag, value", [("hub_revision", "dev"), ("hub_strategy", "end"), ("hub_always_push", True)])
def test_trainer_hub_flags_the_commands_do_not_use_are_refused(flag, value, tmp_path):
    """--hub_revision dev was accepted and the push went to main (its card decided by main's README.md);
    --hub_strategy and --hub_always_push shape Trainer's own pushes, which the commands turn off."""
    from transformers import TrainingArguments

    from byola_hf import hub

    training_args = TrainingArguments(output_dir=str(tmp_path), report_to="none", **{flag: value})
    with pytest.raises(hub.HubAccessError, match=f"--{flag} is not used: .* drop --{flag}"):
        hub.trainer_push_arguments(training_args, public=False)


def test_a_hub_flag_a_newer_transformers_adds_is_refused_until_used(tmp_path):
    """The unused Hub flags are read from TrainingArguments' fields: one a new release adds is refused when given."""
    import dataclasses

    from transformers import TrainingArguments

    from byola_hf import hub

    @dataclasses.dataclass
    class NewerTrainingArguments(TrainingArguments):
        hub_new_option: bool = False

    default = NewerTrainingArguments(output_dir=str(tmp_path), report_to="none")
    assert not hub.trainer_push_arguments(default, public=False).push_to_hub
    given = NewerTrainingArguments(output_dir=str(tmp_path), report_to="none", hub_new_option=True)
    with pytest.raises(hub.HubAccessError, match="--hub_new_option is not used"):
        hub.trainer_push_arguments(given, public=False)


def test_a_card_older_than_its_folders_statistics_is_not_pushed(small_model, tmp_path, monkeypatch):
    """byola-convert wrote a card saying 'no statistics yet'; statistics set in Python and saved with
    save_pretrained (which writes no card) were pushed under it, and it could replace a newer card on the Hub.
    Refused before anything is created, naming the fix; a README.md of the user's own passes the check (read
    tolerantly: a card not in UTF-8 is refused by the push's own check)."""
    import shutil

    from byola_hf import BYOLAModel, hub

    folder = tmp_path / "model"
    shutil.copytree(small_model, folder)
    model = BYOLAModel.from_pretrained(folder)
    hub.save_model_card(folder, model.config)
    model.config.mean, model.config.std = -5.0, 4.0
    model.save_pretrained(folder)
    monkeypatch.setattr(hub, "check_hub_access", lambda repo_id=None, token=None: pytest.fail("checked the Hub first"))
    with pytest.raises(ValueError, match=r"README.md states other statistics .*save_model_card\(folder, config\)"):
        hub.push_to_hub(folder, "me/model")
    (folder / "README.md").write_bytes("# Modèle\n".encode("latin-1"))
    assert hub.read_card(folder / "README.md") == "# Mod\ufffdle\n"
    hub.check_card_states(hub.read_card(folder / "README.md"), model.config, folder / "README.md")
    model.config.mean, model.config.std = -5, 4  # whole numbers: config.json reads them back as -5.0 and 4.0
    hub.save_model_card(folder, model.config)
    model.save_pretrained(folder)
    saved = BYOLAModel.from_pretrained(folder).config
    hub.check_card_states(hub.read_card(folder / "README.md"), saved, folder / "README.md")  # the fix it names works


def test_a_push_sends_the_folder_without_hub_metadata_and_refuses_a_card_not_in_utf8(
    small_model, tmp_path, monkeypatch
):
    """One commit's files: huggingface_hub's upload metadata and .git folders at any depth are left out, as
    upload_folder leaves them (the commit refused the whole push over them); the folder's README.md is sent as its
    file, a generated card as given, or none. A card that is not UTF-8 ended the push in a codec error naming no file
    (after a command's training): refused first, in one line."""
    import shutil

    from byola_hf import hub

    folder = tmp_path / "model"
    shutil.copytree(small_model, folder)
    for name in ("sub/.cache/huggingface/x.metadata", "sub/.git/HEAD", "sub/extra.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    (folder / "README.md").write_text("# Modèle\n", encoding="utf-8")

    def sent(readme):
        return {op.path_in_repo: op.path_or_fileobj for op in hub.folder_operations(folder, readme)}

    assert sorted(sent(None)) == sorted({path.name for path in small_model.iterdir()} | {"sub/extra.json"})
    assert (
        sent(folder / "README.md")["README.md"] == str(folder / "README.md")
        and sent(b"# Mine")["README.md"] == b"# Mine"
    )
    (folder / "README.md").write_bytes("# Modèle\n".encode("latin-1"))
    monkeypatch.setattr(hub, "check_hub_access", lambda repo_id=None, token=None: pytest.fail("checked the Hub first"))
    with pytest.raises(ValueError, match=r"README.md is not UTF-8 text \(byte 5\), which the Hub requires"):
        hub.push_to_hub(folder, "me/model")


def test_model_card_states_the_statistics_their_provenance_and_the_licence_of_the_weights():
    """The card's statistics, counts and licence are what the config holds (a card with mean and std swapped,
    examples and frames swapped, or NTT's weights under an unspecified licence survived the fast tier)."""
    provenance = {"dataset": "mini/ks", "split": "train", "num_examples": 3, "num_frames": 70, "method": "exact"}
    config = BYOLAConfig(
        feature_d=512,
        mean=-9.5,
        std=4.25,
        stats_provenance=provenance,
        converted_from="AudioNTT2020-BYOLA-64x96d512.pth",
    )
    card = model_card(config)
    assert (card.data.license, card.data.license_name) == ("other", "ntt-software-license-agreement-for-evaluation")
    assert card.data.license_link == "https://github.com/nttcslab/byol-a/blob/master/LICENSE"
    text = str(card)
    assert "- mean: `-9.5`, std: `4.25`" in text and "- examples: 3, frames: 70, method: exact" in text
    assert "- computed on: mini/ks, split `train`" in text and LICENSE_NOTICE in text
    config.converted_from = None  # weights trained here: no terms of NTT's
    card = model_card(config)
    assert (card.data.license, card.data.license_name) == ("other", "unspecified")
    assert LICENSE_NOTICE not in str(card)


def test_a_card_byola_hf_wrote_is_told_from_an_edited_one(tmp_path):
    """A push replaces the repository's card only when byola_hf wrote it as it is (its last line hashes the rest),
    saved into a folder and read back too."""
    from byola_hf.hub import is_unedited_card, save_model_card

    card = (save_model_card(tmp_path, BYOLAConfig(feature_d=512))).read_text(encoding="utf-8")
    assert is_unedited_card(card) and is_unedited_card(card + "\n")
    edited = [card.replace("BYOL-A", "BYOL-B", 1), card.replace("<!-- byola_hf card ", "<!-- byola_hf card 0"), ""]
    assert not any(is_unedited_card(text) for text in [*edited, "# My card\n", card.rstrip("\n").rpartition("\n")[0]])


def test_a_push_uploads_the_model_not_the_runs_checkpoints_logs_or_markers(small_model, tmp_path, monkeypatch):
    """A command's output folder also holds its Trainer checkpoints (learner, optimizer and RNG states), TensorBoard
    logs and byola_hf's markers: the push uploads the model directory only (uploading the checkpoints too survived
    the fast tier), in one commit."""
    import shutil

    import huggingface_hub

    from byola_hf import hub

    folder = tmp_path / "run"
    shutil.copytree(small_model, folder)
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out").write_bytes(b"log")
    (folder / ".byola_hf_output.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"old format")
    uploads = []

    class RecordingApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private, exist_ok):
            assert private

        def file_exists(self, repo_id, filename):
            return False

        def create_commit(self, repo_id, operations, commit_message):
            uploads.extend(operation.path_in_repo for operation in operations)

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.setattr(hub, "check_hub_access", lambda repo_id=None, token=None: None)
    monkeypatch.setattr(hub, "refuse_public_repository", lambda repo_id, token=None: None)
    hub.push_to_hub(folder, "tester/run")
    assert sorted(uploads) == sorted({path.name for path in small_model.iterdir()} | {"README.md"})

"""
transformers' own common test files (`tests/test_*_common.py`), taken at test time from the PyPI sdist of the
installed transformers version: downloaded once through the package index, checked against the index's sha256,
unpacked atomically into a per-version cache folder with a manifest of each file's sha256, and imported as the
package `transformers_release_tests`. Nothing of it is copied into this repository.

The sdist ships `tests/*.py` but not the sub-packages three of them import (`tests/exporters`, `tests/generation`,
`tests/utils`); [`load_common_tests`] provides those three names (see `stand_ins`).
"""

import hashlib
import importlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import types
import urllib.parse
import urllib.request
from pathlib import Path

import transformers


PACKAGE = "transformers_release_tests"
# Seconds per network operation (connect, each read): a blocked network ends in a skip, not a hang.
TIMEOUT_S = 30
MANIFEST = "MANIFEST.json"


class ReleaseUnavailable(RuntimeError):
    """The release's test files could not be downloaded (no network, no index, no sdist)."""


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/byola_hf/transformers-tests` (default `~/.cache/byola_hf/transformers-tests`)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "byola_hf" / "transformers-tests"


def index_url() -> str:
    """The simple index pip is configured with (`PIP_INDEX_URL`), PyPI's by default."""
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def sdist_location(version: str) -> tuple[str, str]:
    """The URL and sha256 of `transformers-<version>.tar.gz` on the index's project page (PEP 691 JSON, or the
    PEP 503 HTML page of an index that only serves that)."""
    name = f"transformers-{version}.tar.gz"
    page = f"{index_url()}/transformers/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(page, headers={"Accept": accept}), timeout=TIMEOUT_S
        ) as response:
            body = response.read().decode("utf-8", errors="replace")
            is_json = "json" in response.headers.get("Content-Type", "")
        if is_json:
            files = [
                (entry["url"], entry.get("hashes", {}).get("sha256"), entry["filename"])
                for entry in json.loads(body)["files"]
            ]
        else:
            files = re.findall(r'<a[^>]*href="([^"#]*)#sha256=([0-9a-f]{64})"[^>]*>\s*([^<\s]*)\s*</a>', body)
    except (OSError, ValueError, KeyError) as error:
        raise ReleaseUnavailable(f"cannot read the package index page {page}: {error}") from error
    for url, digest, filename in files:
        if filename == name and digest:
            return urllib.parse.urljoin(page, url), digest
    raise ReleaseUnavailable(f"the package index page {page} lists no {name} with a sha256")


def download_sdist(version: str) -> bytes:
    """The sdist's bytes, checked against the index's sha256."""
    url, expected = sdist_location(version)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            data = response.read()
    except OSError as error:
        raise ReleaseUnavailable(f"cannot download {url}: {error}") from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ReleaseUnavailable(f"{url} has sha256 {digest}, the index says {expected}")
    return data


def unpack_tests(data: bytes, version: str, target: Path) -> None:
    """Write the sdist's top-level `tests/*.py` and a manifest (sdist and file sha256) into `target` atomically."""
    prefix = f"transformers-{version}/tests/"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        files = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name[len(prefix) :] if member.name.startswith(prefix) else ""
                if member.isfile() and name.endswith(".py") and "/" not in name:
                    content = archive.extractfile(member).read()
                    (staging / name).write_bytes(content)
                    files[name] = hashlib.sha256(content).hexdigest()
        # The repository's tests/ is a package (an empty __init__.py, which test_configuration_common.py executes);
        # the sdist leaves that file out.
        if "__init__.py" not in files:
            (staging / "__init__.py").write_bytes(b"")
            files["__init__.py"] = hashlib.sha256(b"").hexdigest()
        if "test_modeling_common.py" not in files:
            raise ReleaseUnavailable(f"the transformers {version} sdist has no tests/test_modeling_common.py")
        manifest = {"transformers": version, "sdist_sha256": hashlib.sha256(data).hexdigest(), "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / MANIFEST).exists():  # not another process that unpacked it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_cache(folder: Path, version: str) -> None:
    """Refuse a cache folder whose files are not the ones its manifest recorded for `version`."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as error:
        raise RuntimeError(
            f"{folder} is not a cache this module wrote ({error}); remove it to download again"
        ) from error
    changed = [
        name
        for name, digest in files.items()
        if not (folder / name).is_file() or hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest
    ]
    if manifest.get("transformers") != version or changed:
        raise RuntimeError(
            f"{folder} does not hold transformers {version}'s test files as downloaded (changed: "
            f"{changed or manifest.get('transformers')}); remove the folder to download them again"
        )


def release_tests_dir(version: str = transformers.__version__) -> Path:
    """The cached, checked folder of transformers `version`'s `tests/*.py`, downloaded on first use."""
    folder = cache_root() / version
    if not folder.exists():
        data = download_sdist(version)
        unpack_tests(data, version, folder)
    check_cache(folder, version)
    return folder


def stand_ins() -> dict[str, dict[str, object]]:
    """
    The three names the common files import from sub-packages the sdist does not ship:
    - `generation.test_utils.GenerationTesterMixin`: BYOL-A cannot `generate`; only the check that a tester of a model
      that cannot generate does *not* inherit it uses the class, so an empty class is the exact stand-in.
    - `exporters.test_export.ExportTesterMixin`: the base of `ModelTesterMixin`; its export tests are replaced by
      this project's own (`test_torch_export` in tests/test_transformers_common.py, every head, outputs compared).
    - `utils.test_configuration_utils.config_common_kwargs`: non-default values of `PreTrainedConfig`'s own
      arguments, for `ConfigTester.check_config_arguments_init`.
    """

    class GenerationTesterMixin:
        pass

    class ExportTesterMixin:
        pass

    config_common_kwargs = {
        "return_dict": False,
        "output_hidden_states": True,
        "output_attentions": True,
        "dtype": "float16",
        "chunk_size_feed_forward": 5,
        "architectures": ["BYOLAModel"],
        "id2label": {0: "label"},
        "label2id": {"label": "0"},
        "problem_type": "regression",
    }
    return {
        "generation.test_utils": {"GenerationTesterMixin": GenerationTesterMixin},
        "exporters.test_export": {"ExportTesterMixin": ExportTesterMixin},
        "utils.test_configuration_utils": {"config_common_kwargs": config_common_kwargs},
    }


def load_common_tests(version: str = transformers.__version__) -> types.SimpleNamespace:
    """Import the release's `test_modeling_common`, `test_configuration_common` and
    `test_sequence_feature_extraction_common` as modules of the package `transformers_release_tests`."""
    folder = release_tests_dir(version)
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(folder)]
        sys.modules[PACKAGE] = package
        for dotted, names in stand_ins().items():
            parent = PACKAGE
            for part in dotted.split("."):
                name = f"{parent}.{part}"
                module = sys.modules.setdefault(name, types.ModuleType(name))
                module.__path__ = []
                setattr(sys.modules[parent], part, module)
                parent = name
            vars(sys.modules[parent]).update(names)
    return types.SimpleNamespace(
        modeling=importlib.import_module(f"{PACKAGE}.test_modeling_common"),
        configuration=importlib.import_module(f"{PACKAGE}.test_configuration_common"),
        sequence_feature_extraction=importlib.import_module(f"{PACKAGE}.test_sequence_feature_extraction_common"),
        folder=folder,
    )

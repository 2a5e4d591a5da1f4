"""The cache of transformers' release test files (tests/transformers_release.py), without the network."""

import io
import json
import tarfile

import pytest
from transformers_release import ReleaseUnavailable, check_cache, sdist_location, unpack_tests


def fake_sdist(version: str, files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"transformers-{version}/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_unpacks_top_level_test_files_with_a_manifest_and_refuses_changes(tmp_path):
    data = fake_sdist(
        "9.9.9",
        {
            "tests/test_modeling_common.py": b"X = 1\n",
            "tests/models/bert/test_modeling_bert.py": b"",
            "src/transformers/__init__.py": b"",
        },
    )
    folder = tmp_path / "9.9.9"
    unpack_tests(data, "9.9.9", folder)
    assert sorted(path.name for path in folder.iterdir()) == [
        "MANIFEST.json",
        "__init__.py",
        "test_modeling_common.py",
    ]
    assert json.loads((folder / "MANIFEST.json").read_text())["transformers"] == "9.9.9"
    check_cache(folder, "9.9.9")
    with pytest.raises(RuntimeError, match="does not hold transformers 9.9.8"):
        check_cache(folder, "9.9.8")
    (folder / "test_modeling_common.py").write_text("X = 2\n")
    with pytest.raises(RuntimeError, match=r"changed: \['test_modeling_common.py'\].*remove the folder"):
        check_cache(folder, "9.9.9")
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no staging folder left


def test_an_sdist_without_the_common_tests_is_refused(tmp_path):
    with pytest.raises(ReleaseUnavailable, match="no tests/test_modeling_common.py"):
        unpack_tests(fake_sdist("9.9.9", {"tests/test_other.py": b""}), "9.9.9", tmp_path / "9.9.9")
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_index_is_a_clear_error_not_a_hang(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    with pytest.raises(ReleaseUnavailable, match=r"cannot read the package index page http://127.0.0.1:9/simple"):
        sdist_location("5.24.0")

"""The model library stays lean: what install_requires holds, and from_pretrained + a forward without the extras."""

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap

from conftest import PROJECT_ROOT


# Makes the BLOCKED packages missing in a fresh interpreter: `importlib.util.find_spec` returns None for them (so
# transformers' availability probes say "not installed") and importing one raises ImportError.
BLOCK = textwrap.dedent("""
    import sys
    for name in BLOCKED:
        sys.modules[name] = None
""")
OPTIONAL = ("datasets", "evaluate", "accelerate", "matplotlib", "pandas", "librosa", "soundfile", "nnAudio")


def test_install_requires_is_the_model_library():
    requirements = importlib.metadata.requires("byola_hf")
    core = {
        re.split(r"[<>=!; \[]", requirement)[0].lower()
        for requirement in requirements
        if "extra ==" not in requirement
    }
    assert core == {"torch", "transformers", "huggingface_hub", "safetensors", "numpy"}
    extras = set(importlib.metadata.metadata("byola_hf").get_all("Provides-Extra"))
    assert {"audio", "stats", "superb", "test"} <= extras


def test_from_pretrained_and_forward_without_the_extras(random2048_dir):
    """A process that cannot import any optional package loads, runs and batches the model, and a tool that needs an
    extra says which in one line."""
    script = (
        textwrap.dedent(f"""
        BLOCKED = {OPTIONAL!r}
    """)
        + BLOCK
        + textwrap.dedent(f"""
        import numpy as np, torch, byola_hf
        from transformers import AutoFeatureExtractor, AutoModel, pipeline
        model = AutoModel.from_pretrained({str(random2048_dir)!r}).eval()
        fe = AutoFeatureExtractor.from_pretrained({str(random2048_dir)!r})
        with torch.no_grad():
            inputs = fe(np.zeros(16000, np.float32), sampling_rate=16000, return_tensors="pt")
            print(tuple(model(**inputs).pooler_output.shape))
        extractor = pipeline("byola-audio-embedding", model={str(random2048_dir)!r})
        clips = [np.zeros(16000, np.float32), np.zeros(9000, np.float32)]
        print(len(extractor(clips, sampling_rate=16000, batch_size=2)))
        try:
            extractor("speech.wav")
        except ImportError as error:
            print("ImportError:", error)
        loaded = sorted(name for name in BLOCKED if sys.modules.get(name) is not None)
        print("optional modules loaded:", loaded)
    """)
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[:2] == ["(1, 2048)", "2"]
    assert "soundfile is not installed: it is part of byola_hf's [audio] extra" in lines[2]
    assert "pip install 'byola_hf[audio]'" in lines[2]
    assert lines[3] == "optional modules loaded: []"


def test_tools_name_their_extra(tmp_path):
    script = (
        textwrap.dedent("""
        BLOCKED = ("datasets", "evaluate")
    """)
        + BLOCK
        + textwrap.dedent("""
        from byola_hf.superb.run import main
        main(["--task", "ks"])
    """)
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "byola-run-superb: error: datasets is not installed: it is part of byola_hf's [superb] extra (the "
        "SUPERB recipe (datasets, evaluate, accelerate, matplotlib, soundfile, librosa)). "
        "Install it with `pip install 'byola_hf[superb]'`."
    )


TOOL_PACKAGES = {"tools", "stats", "superb", "extract", "linear_eval", "pretraining", "finetune"}


def _imports(path):
    """(module, names) of every `from X import names` in a file, with relative modules resolved to byola_hf.*."""
    import ast

    package = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            yield module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_model_library_imports_none_of_the_tools():
    """What from_pretrained needs (the top-level modules) never imports the command-line tools' packages. The
    converter sits beside the model files, as transformers' convert_*.py scripts do, and is a command."""
    for path in sorted((PROJECT_ROOT / "byola_hf").glob("*.py")):
        if path.name.startswith("convert_"):
            continue
        for module, _ in _imports(path):
            parts = module.split(".")
            assert not (parts[0] == "byola_hf" and len(parts) > 1 and parts[1] in TOOL_PACKAGES), (path.name, module)


def test_no_module_imports_a_private_name():
    for path in sorted((PROJECT_ROOT / "byola_hf").rglob("*.py")):
        for module, names in _imports(path):
            if module.startswith("byola_hf"):
                private = [name for name in names if name.startswith("_") and not name.startswith("__")]
                assert not private, (str(path.relative_to(PROJECT_ROOT)), module, private)


def _module_name(path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle():
    """No two byola_hf modules import each other, directly or through others, counting imports inside functions
    (a lazy import that only breaks a cycle at load time still ties the two modules into one)."""
    paths = sorted((PROJECT_ROOT / "byola_hf").rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    graph = {}
    for path in paths:
        imported = set()
        for module, names in _imports(path):
            imported |= {name for name in (module, *(f"{module}.{alias}" for alias in names)) if name in modules}
        graph[_module_name(path)] = imported - {_module_name(path)}

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            module = stack.pop()
            if module == goal:
                return True
            if module not in seen:
                seen.add(module)
                stack.extend(graph[module])
        return False

    # A package's __init__ importing its own submodules is how a package exposes them, not a cycle.
    cycles = [
        (module, other)
        for module, imported in graph.items()
        for other in imported
        if not other.startswith(module + ".") and reaches(other, module) and not module.startswith(other + ".")
    ]
    assert not cycles, cycles


def test_no_function_over_60_lines():
    """Small functions, as the style asks: none in the package, the benchmarks or the scripts runs over 60 lines
    (its docstring counted)."""
    import ast

    long = []
    for folder in ("byola_hf", "benchmarks", "scripts"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60:
                    long.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.name}")
    assert not long, long

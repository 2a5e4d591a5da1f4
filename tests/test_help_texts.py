"""`--help` of every command says each default once: never `(default: None)` or `(default: False)`, and not beside a
help text that already says what happens by default."""

import configparser
import importlib
import re

import pytest

from byola_hf.pretraining.cli import main as pretrain_main
from byola_hf.superb.run import main as superb_main

from conftest import PROJECT_ROOT


def console_scripts() -> dict[str, str]:
    """setup.cfg's console_scripts, `{name: "module:function"}`: a new command is checked without a change here."""
    parser = configparser.ConfigParser()
    parser.read(PROJECT_ROOT / "setup.cfg")
    entries = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in entry.split("=", 1)) for entry in entries)


def entry_point(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def test_every_console_script_is_checked():
    """A parsing mistake cannot empty the test below: today's seven commands are among those read."""
    assert {"byola-convert", "byola-compute-stats", "byola-extract", "byola-linear-eval", "byola-make-mini-superb",
            "byola-run-superb", "byola-pretrain"} <= set(console_scripts())  # fmt: skip


@pytest.mark.parametrize("target", console_scripts().values(), ids=console_scripts().keys())
def test_help_says_each_default_once(target, capsys):
    with pytest.raises(SystemExit) as exit_info:
        entry_point(target)(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    for help_text in re.split(r"\s--?[a-z]", text):
        said, _, appended = help_text.lower().partition("(default:")
        assert not appended or ("default" not in said and "(default:" not in appended), help_text


def test_superb_learning_rate_help_names_the_task_defaults_only(capsys):
    with pytest.raises(SystemExit):
        superb_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the task's SUPERB default is used" in text and "(default: 5e-05)" not in text


def test_pretrain_help_shows_the_original_training_setup(capsys):
    """The defaults byola-pretrain applies, not TrainingArguments' own (5e-05, linear, clipping at 1.0)."""
    with pytest.raises(SystemExit):
        pretrain_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = {"max_grad_norm": "0.0", "weight_decay": "0.0", "seed": "42",
                "per_device_train_batch_size": "256", "num_train_epochs": "100"}  # fmt: skip
    for flag, default in defaults.items():
        said = re.search(rf"--{flag} [A-Z_]+(?:, --[\w-]+ [A-Z_]+)? ([^(]*)\(default: ([^)]*)\)", text)
        assert said and said.group(2) == default, (flag, said and said.group(2))
    assert "Adam's learning rate (default: 0.0003 AudioNTT2020, 0.0001 AudioNTT2022)" in text

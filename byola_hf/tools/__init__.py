"""What byola_hf's commands share, beside the model library (which imports nothing from here):

- [`cli`]: one runner for every console script: parse with `HfArgumentParser`, turn expected failures into one
  line on stderr and exit code 2, report on rank 0 only;
- [`outputs`]: output folders a command owns (a marker with the fingerprint of what made them), atomic writes;
- [`data`]: loading an audio dataset split and a model's front-end;
- [`distributed`]: torchrun's process group, each rank's device;
- [`plots`]: confusion matrices and layer weights.

A new command is a module with its argument dataclasses and a `run` function, plus a `main` that calls
[`cli.run_command`], and an entry in setup.cfg's `console_scripts`.
"""

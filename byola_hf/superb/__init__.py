"""The SUPERB recipe for BYOL-A (`byola-run-superb`, `byola-make-mini-superb`).

- [`tasks`]: one `SuperbTask` preset per task (head class, learning rate, metric, default columns). A new task on a
  head kind that exists is one entry in `SUPERB_TASKS`.
- [`recipes`]: one `TaskRecipe` per head kind (classification, CTC, frame) owning its head arguments, label
  encoding, collation and metric. A new head kind is a recipe class registered in `RECIPES`.
- [`run`]: the Trainer script, which reads as the recipe's steps and never branches on a task's name.
- [`corpora`]: SUPERB corpora in their native layouts; [`metrics`]: local `evaluate` modules, offline;
  [`mini_sets`]: small espeak-ng task sets. Confusion matrices and layer weights are drawn by `byola_hf.tools.plots`.

Needs the `[superb]` extra (`pip install 'byola_hf[superb]'`): datasets, evaluate, accelerate, matplotlib.
"""

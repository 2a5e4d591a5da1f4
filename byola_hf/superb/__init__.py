"""The SUPERB recipe for BYOL-A: task presets, the Trainer script, metrics, pictures and small espeak-ng task sets.

Needs the `[superb]` extra (`pip install 'byola_hf[superb]'`): datasets, evaluate, accelerate, matplotlib.
"""

"""Local `evaluate` metric modules, loadable offline: `evaluate.load(metric_path("accuracy"))`."""

from pathlib import Path


METRICS = ("accuracy", "error_rate", "der")


def metric_path(name: str) -> str:
    """Directory of one of this package's metric modules, for `evaluate.load`."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; the package has {list(METRICS)}.")
    return str(Path(__file__).parent / name)


def edit_distance(reference: list, hypothesis: list) -> int:
    """Levenshtein distance between two token sequences (substitutions, insertions, deletions cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_token in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_token in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_token != hyp_token))
        previous = current
    return previous[-1]

"""Local `evaluate` metric modules, loadable offline: `evaluate.load(metric_path("accuracy"))`."""

from pathlib import Path


def metric_path(name: str) -> str:
    """Directory of one of this package's metric modules (`accuracy`, `error_rate`, `der`), for `evaluate.load`."""
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

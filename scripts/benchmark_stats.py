#!/usr/bin/env python
"""Benchmark the exact statistics against loading everything: python scripts/benchmark_stats.py [--clips 100,400]"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ lives beside the package

from benchmarks.benchmark_stats import main  # noqa: E402


if __name__ == "__main__":
    main()

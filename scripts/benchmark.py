#!/usr/bin/env python
"""Benchmark byola_hf against the original computation: python scripts/benchmark.py [--device cuda] [--bf16]"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ lives beside the package

from benchmarks.benchmark import main  # noqa: E402


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark the exact statistics against loading everything: python scripts/benchmark_stats.py [--clips 100,400]"""

from byola_hf.benchmark_stats import main


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark byola_hf against the original upstream computation: python scripts/benchmark.py [--bf16] [--memory]"""

from byola_hf.benchmark import main


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Build mini-SUPERB speech sets with espeak-ng: python scripts/make_mini_superb.py --task all --output_dir mini"""

from byola_hf.superb.mini_sets import main


if __name__ == "__main__":
    main()

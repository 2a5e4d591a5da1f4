#!/usr/bin/env python
"""Convert an original BYOL-A .pth checkpoint into a Hugging Face model directory.

python scripts/convert_byola_checkpoint.py CHECKPOINT OUTPUT_DIR [--mean M --std S]
"""

from byola_hf.convert_byola_checkpoint import main


if __name__ == "__main__":
    main()

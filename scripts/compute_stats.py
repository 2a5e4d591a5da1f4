#!/usr/bin/env python
"""Compute a task's exact BYOL-A log-mel statistics and save them into the model config.

python scripts/compute_stats.py --model_name_or_path DIR_OR_ID --dataset_name NAME [--dataset_config_name C]
    [--data_dir D] [--split train] [--audio_column_name audio] [--num_proc N] --output_dir OUT
"""

from byola_hf.stats.cli import main


if __name__ == "__main__":
    main()

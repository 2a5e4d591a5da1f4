#!/usr/bin/env python
"""Fine-tune and evaluate BYOL-A on a SUPERB task with Trainer (all TrainingArguments flags work).

python scripts/run_superb.py --task ks --model_name_or_path MODEL_WITH_STATS --data_dir mini/ks --output_dir out
"""

from byola_hf.superb.run import main


if __name__ == "__main__":
    main()

"""Text-to-video over a text file of prompts, one per line (LongLive's `inference.py`).

One process:
    python inference.py --config_path configs/tiny_t2v.yaml
N GPUs:
    torchrun --nproc_per_node=N inference.py --config_path configs/tiny_t2v.yaml
"""

import sys

from longlive.cli import job_entry

if __name__ == "__main__":
    sys.exit(job_entry("t2v"))

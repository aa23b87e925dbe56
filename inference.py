"""Text-to-video over a text file of prompts, one per line (LongLive's `inference.py`).

python inference.py --config_path configs/longlive_inference.yaml
"""

import sys

from longlive.cli import job_entry

if __name__ == "__main__":
    sys.exit(job_entry("t2v"))

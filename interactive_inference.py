"""Interactive generation over a JSONL of {"prompts": [p0, p1, ...]} lines, switching prompts at
`switch_frame_indices` with KV-recache (LongLive's interactive_inference.py).

One process (one GPU, or the CPU):
    python interactive_inference.py --config_path configs/tiny_interactive.yaml
    python interactive_inference.py --config_path configs/longlive_interactive_inference.yaml
N GPUs (each sample runs on one rank; rerunning skips finished samples; see README, "Interactive sessions"):
    torchrun --nproc_per_node=N interactive_inference.py \
        --config_path configs/longlive_interactive_inference.yaml
"""

import sys

from longlive.cli import job_entry

if __name__ == "__main__":
    sys.exit(job_entry("interactive"))

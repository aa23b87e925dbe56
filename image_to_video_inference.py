"""Image-to-video over a JSONL of {"image_path", "prompt"} lines (the image is the first frame).

One process:
    python image_to_video_inference.py --config_path configs/tiny_i2v.yaml
N GPUs:
    torchrun --nproc_per_node=N image_to_video_inference.py --config_path configs/tiny_i2v.yaml
"""

import sys

from longlive.cli import job_entry

if __name__ == "__main__":
    sys.exit(job_entry("i2v"))

"""Video-conditional generation over a JSONL of {"video_path", "prompt1", "prompt2"} lines.

One process (one GPU, or the CPU):
    python video_conditional_inference.py --config_path configs/tiny_video_conditional.yaml
    python video_conditional_inference.py \
        --config_path configs/longlive_video_conditional_inference.yaml num_output_frames=120
N GPUs (each sample runs on one rank; rerunning skips finished samples; see README, "Batch jobs"):
    torchrun --nproc_per_node=N video_conditional_inference.py \
        --config_path configs/longlive_video_conditional_inference.yaml
"""

import sys

from longlive.cli import job_entry

if __name__ == "__main__":
    sys.exit(job_entry("video-conditional"))

"""Video-conditional generation over a JSONL of {"video_path", "prompt1", "prompt2"} lines.

One process:
    python video_conditional_inference.py --config_path configs/tiny_video_conditional.yaml
    python video_conditional_inference.py \
        --config_path configs/longlive_video_conditional_inference.yaml num_output_frames=120
"""

import sys

from longlive.cli import job_entry

if __name__ == "__main__":
    sys.exit(job_entry("video-conditional"))

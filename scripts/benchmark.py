"""Speed at a config's geometry with random weights; prints one JSON line (see longlive/benchmark.py).

    python scripts/benchmark.py --config_path configs/longlive_video_conditional_inference.yaml \
        wan_model_dir=null generator_ckpt=null lora_ckpt=null num_output_frames=30 num_conditioning_frames=0
"""

import sys

from longlive.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

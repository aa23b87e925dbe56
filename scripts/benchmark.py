"""Benchmark entry point; see `longlive/benchmark.py`.

    python scripts/benchmark.py --config_path configs/longlive_video_conditional_inference.yaml \
        generator_ckpt=null lora_ckpt=null num_output_frames=30
"""

from longlive.benchmark import main

if __name__ == "__main__":
    main()

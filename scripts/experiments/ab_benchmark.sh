#!/bin/bash
# A/B of `scripts/benchmark.py` runs on one machine, each a fresh process (BENCHMARKS.md, 2026-11-24).
#
#   bash scripts/experiments/ab_benchmark.sh "LABEL DIR [override ...]" ...
#
# DIR is a checkout of the code to time: `.` for the working tree, or an exported older commit
# (`mkdir -p /tmp/old && git archive COMMIT longlive scripts configs | tar -x -C /tmp/old`). Every run
# takes the published geometry with random weights and the five exact speed switches; overrides add to
# them. Prints each run's JSON line prefixed by its label, then its wall time (compilation included).
set -u
CONFIG=configs/longlive_video_conditional_inference.yaml
BASE="wan_model_dir=null generator_ckpt=null lora_ckpt=null num_conditioning_frames=0 \
compile_generator=true cuda_graphs=true fold_vae_convs=true fuse_vae_norms=true compile_vae=true"

run() {
  local label=$1 dir=$2
  shift 2
  local start
  start=$(date +%s)
  # shellcheck disable=SC2086  # BASE is a list of overrides
  (cd "$dir" && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 scripts/benchmark.py --config_path "$CONFIG" \
    $BASE "$@" 2>/dev/null | tail -1 | sed "s/^/$label /")
  echo "$label wall $(($(date +%s) - start)) s"
}

for spec in "$@"; do
  # shellcheck disable=SC2086  # each spec is "LABEL DIR overrides..."
  run $spec
done

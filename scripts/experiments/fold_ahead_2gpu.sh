#!/bin/bash
# Issue 18 on nvidia-h200-x2: `fold_vae_ahead` (the folded VAE weights made before the call, so the compiled
# decoder is one graph per cache shape) against the folded convolutions as shipped (a graph break at each).
# One call per side, each under the device tool's 600 s (each run stops itself before a 560 s budget):
#
#   bash scripts/experiments/fold_ahead_2gpu.sh break    # fold_vae_ahead=false: the reference side
#   bash scripts/experiments/fold_ahead_2gpu.sh ahead    # fold_vae_ahead=true
#
# Each call: (1) `longlive bench` over both GPUs, one stream (`parallel.sequence=2`, split decode), 60
# latent frames, all switches; the cold compile on a fresh machine takes 2-3 minutes, hence 330 s; its JSON
# holds frames/s, decode ms/block and peak memory (Dynamo's graph breaks are counted from its log); (2) the decoder alone on
# GPU 0 (`decoder_kernels.py`), the rows of one of 2 parts through the compiled stages, as rank 0 decodes
# them: steady ms per block, memory after the video and at its peak (one graph must not keep more alive:
# the 1.14 GiB of BENCHMARKS.md, 2026-11-24), the top kernels of 2 blocks; (3) the same for the whole
# frame if the budget is left. Compile caches in /tmp/llcc: the second call on the same warm machine reuses
# the generator's. Logs go to a work folder packed into ONE file, $OUT/fold_ahead_<side>.tgz. From the repo
# root, with .whl carried (diffusers, omegaconf, imageio-ffmpeg; installed to /tmp/site when missing).
MODE=${1:?usage: fold_ahead_2gpu.sh break|ahead}
case $MODE in break) AHEAD=false; DK="" ;; ahead) AHEAD=true; DK="--ahead" ;; *) echo "side must be break or ahead, not $MODE"; exit 2 ;; esac
OUT=${OUT:-videos/fold_ahead_2gpu}; mkdir -p "$OUT"; W=$(mktemp -d)/fold_ahead_$MODE; mkdir -p "$W"
T0=$(date +%s); left() { echo $((560 - ($(date +%s) - T0))); }
if [ -d .whl ] && ! python3 -c "import diffusers, omegaconf, imageio_ffmpeg" 2>/dev/null; then
    pip install -q --no-deps --no-index --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$W/gpus.txt"; git log --oneline -1 | tee "$W/commit.txt"
SW="compile_generator=true cuda_graphs=true fold_vae_convs=true fuse_vae_norms=true compile_vae=true fuse_ffn_gelu=true compile_cache_dir=/tmp/llcc"
S="wan_model_dir=null generator_ckpt=null lora_ckpt=null num_output_frames=60 num_conditioning_frames=0 $SW fold_vae_ahead=$AHEAD"
C=configs/longlive_video_conditional_inference.yaml
run() {  # run LIMIT NAME COMMAND...: at most LIMIT seconds, fewer if the budget is short; skipped under 20
    local limit=$1 name=$2; shift 2; local rest; rest=$(left); [ "$rest" -lt "$limit" ] && limit=$rest
    [ "$limit" -lt 20 ] && { echo "== $name: skipped (budget)"; return; }
    echo "== $name"; timeout "$limit" "$@" > "$W/$name.log" 2>&1; echo "rc=$? $(date -u +%T)"
}
TORCH_LOGS=graph_breaks run 330 bench torchrun --nproc_per_node=2 -m longlive.cli bench --config_path $C $S parallel.sequence=2
grep '^{' "$W/bench.log" | tail -1 | tee "$W/bench.json" | cut -c1-400
echo "recompile-limit warnings: $(grep -c recompile_limit "$W/bench.log"), graph breaks logged (both ranks): $(grep -c 'Graph break' "$W/bench.log")"
CUDA_VISIBLE_DEVICES=0 run 150 decoder_split python3 scripts/experiments/decoder_kernels.py $DK --split 2 --rows 12
grep -E "^(compiling|ms per|allocated|peak|graph breaks|kernels)" "$W/decoder_split.log"
CUDA_VISIBLE_DEVICES=0 run 150 decoder_whole python3 scripts/experiments/decoder_kernels.py $DK --rows 12
grep -E "^(compiling|ms per|allocated|peak|graph breaks|kernels)" "$W/decoder_whole.log"
tar czf "$OUT/fold_ahead_$MODE.tgz" -C "$(dirname "$W")" "fold_ahead_$MODE" && ls -la "$OUT"

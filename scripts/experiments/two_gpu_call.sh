# Sourced (not run) by the one-call 2-GPU experiments (split_decode_2gpu.sh, stream_timeline_2gpu.sh) with
# NAME set: a work folder $W packed by the caller into $OUT, a 560 s budget for the device tool's 600 s call
# (`left`), NCCL without NVLink multicast, this tree's longlive first on the path, the published-size stream
# every speed switch on ($C, $S, $SW), and `run LIMIT NAME COMMAND...`, which gives a command at most LIMIT
# seconds (fewer if the budget is short; skipped under 20), logs it to $W/NAME.log and keeps its JSON lines in
# $W/NAME.json.
OUT=${OUT:-videos/$NAME}; mkdir -p "$OUT"; W=$(mktemp -d)/$NAME; mkdir -p "$W"
T0=$(date +%s); left() { echo $((560 - ($(date +%s) - T0))); }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # this tree's longlive, whatever is installed
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$W/gpus.txt"
SW="compile_generator=true cuda_graphs=true fold_vae_convs=true fuse_vae_norms=true compile_vae=true fuse_ffn_gelu=true compile_cache_dir=/tmp/llcc"
S="wan_model_dir=null generator_ckpt=null lora_ckpt=null num_output_frames=60 num_conditioning_frames=0 $SW"
C=configs/longlive_video_conditional_inference.yaml
run() {
    local limit=$1 name=$2; shift 2; local rest; rest=$(left); [ "$rest" -lt "$limit" ] && limit=$rest
    [ "$limit" -lt 20 ] && { echo "== $name: skipped (budget)"; return; }
    echo "== $name"; timeout "$limit" "$@" > "$W/$name.log" 2>&1; echo "rc=$? $(date -u +%T)"
    grep '^{' "$W/$name.log" | tee "$W/$name.json" | cut -c1-400
}

#!/bin/bash
# Issue 18 on nvidia-h200-x2: one stream on 2 GPUs with the decode on one rank against split by rows
# (`parallel.split_decode`), same machine, same call (`bash scripts/experiments/split_decode_2gpu.sh`, under
# 600 s); `... split_decode_2gpu.sh job`: the frames of a 2-GPU job split and not split, compared.
# Writes logs and JSON lines under $OUT (default: videos/split_decode_2gpu). Run from the repo root.
OUT=${OUT:-videos/split_decode_2gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader
SW="compile_generator=true cuda_graphs=true fold_vae_convs=true fuse_vae_norms=true compile_vae=true fuse_ffn_gelu=true compile_cache_dir=/tmp/llcc"
S="wan_model_dir=null generator_ckpt=null lora_ckpt=null num_output_frames=30 num_conditioning_frames=0 $SW"
C=configs/longlive_video_conditional_inference.yaml
TR="torchrun --nproc_per_node=2 -m longlive.cli"
run() { local name=$1; shift; echo "== $name"; timeout 200 "$@" > $OUT/$name.log 2>&1; echo "rc=$?"; grep '^{' $OUT/$name.log | tail -1 | tee $OUT/$name.json; }
if [ "$1" != job ]; then
run bench_one_rank $TR bench --config_path $C $S parallel.sequence=2 parallel.split_decode=false
run bench_split $TR bench --config_path $C $S parallel.sequence=2 parallel.split_decode=true
run bench_split_overlap $TR bench --config_path $C $S parallel.sequence=2 parallel.split_decode=true parallel.overlap_decode=true
exit 0
fi
J="wan_model_dir=null generator_ckpt=null lora_ckpt=null inference_iter=1 num_output_frames=21 switch_frame_indices=9,15 $SW"
I=configs/longlive_interactive_inference.yaml
run job_one_rank $TR interactive --config_path $I $J output_folder=/tmp/sd1 parallel.sequence=2 parallel.split_decode=false
run job_split $TR interactive --config_path $I $J output_folder=/tmp/sd2 parallel.sequence=2 parallel.split_decode=true
ls /tmp/sd1 /tmp/sd2
timeout 60 python3 -m longlive.cli compare /tmp/sd1 /tmp/sd2 --out /tmp/sd_compare 2>&1 | tail -3 | tee $OUT/compare.txt

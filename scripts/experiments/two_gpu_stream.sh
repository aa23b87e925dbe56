#!/bin/bash
# Issue 18 on nvidia-h200-x2: one stream on 1 and 2 GPUs, same machine, same call; then 1-GPU vs 2-GPU outputs.
# Writes logs and JSON lines under $OUT (default: videos/two_gpu_stream). Run from the repo root on a 2-GPU machine.
OUT=${OUT:-videos/two_gpu_stream}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader
nvidia-smi topo -m | head -4
SW="compile_generator=true cuda_graphs=true fold_vae_convs=true fuse_vae_norms=true compile_vae=true fuse_ffn_gelu=true compile_cache_dir=/tmp/llcc"
S="wan_model_dir=null generator_ckpt=null lora_ckpt=null num_output_frames=30 num_conditioning_frames=0 $SW"
C=configs/longlive_video_conditional_inference.yaml
run() { local name=$1; shift; echo "== $name"; timeout 200 "$@" > $OUT/$name.log 2>&1; echo "rc=$?"; grep '^{' $OUT/$name.log | tail -1 | tee $OUT/$name.json; }
run bench_1gpu python3 -m longlive.cli bench --config_path $C $S
run bench_2gpu_overlap torchrun --nproc_per_node=2 -m longlive.cli bench --config_path $C $S parallel.sequence=2 parallel.overlap_decode=true
run bench_2gpu torchrun --nproc_per_node=2 -m longlive.cli bench --config_path $C $S parallel.sequence=2
J="wan_model_dir=null generator_ckpt=null lora_ckpt=null inference_iter=1 num_output_frames=60 switch_frame_indices=20,40 save_latents=true $SW"
I=configs/longlive_interactive_inference.yaml
run job_1gpu python3 -m longlive.cli interactive --config_path $I $J output_folder=/tmp/sp1
run job_2gpu torchrun --nproc_per_node=2 -m longlive.cli interactive --config_path $I $J output_folder=/tmp/sp2 parallel.sequence=2
ls /tmp/sp1 /tmp/sp2
timeout 60 python3 -m longlive.cli compare /tmp/sp1 /tmp/sp2 --out /tmp/sp_compare 2>&1 | tail -5 | tee $OUT/compare.txt
python3 - <<'PY' | tee -a $OUT/compare.txt
import glob, torch
a, b = (torch.load(sorted(glob.glob(f"/tmp/{d}/*.pt"))[0]).float() for d in ("sp1", "sp2"))
print("latents rel", ((a - b).norm() / b.norm()).item(), "cos", torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0).item())
PY

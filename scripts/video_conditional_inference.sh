#!/usr/bin/env bash
# Video-conditional LongLive inference over a JSONL of {"video_path", "prompt1", "prompt2"} lines.
#
#   bash scripts/video_conditional_inference.sh                 # one GPU (or the CPU)
#   NPROC=8 bash scripts/video_conditional_inference.sh         # 8 GPUs of this node, one rank each
#   CONFIG=configs/tiny_video_conditional.yaml bash scripts/video_conditional_inference.sh   # tiny, CPU
#
# Extra arguments are dotted config overrides, e.g. num_output_frames=120 overwrite=true low_vram=true.
# Rerunning the same command resumes: samples whose mp4 is already in output_folder are skipped.
# Each sample runs on exactly one rank; results.jsonl in output_folder lists every sample's outcome.
#
# Several nodes: run on every node, with the rendezvous of your cluster, e.g.
#   torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
#       video_conditional_inference.py --config_path configs/longlive_video_conditional_inference.yaml
# (output_folder on a shared file system, so that resume sees every node's videos).
#
# NCCL: the ranks exchange nothing while they generate; the only collectives are one gather of the
# per-sample records and one barrier at the end, so no NCCL tuning matters for speed. Where NCCL fails
# to start, NCCL_DEBUG=INFO says why; NCCL_P2P_DISABLE=1 helps on GPUs without peer-to-peer access,
# NCCL_IB_DISABLE=1 on one node without InfiniBand, NCCL_SOCKET_IFNAME=<interface> across nodes. Keep
# NVLink multicast off (NCCL_NVLS_ENABLE=0, the default below): nothing here uses it, and on shared
# NVSwitch hosts a program that does can take the GPUs out of service.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-configs/longlive_video_conditional_inference.yaml}
NPROC=${NPROC:-1}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}

if [[ "$NPROC" == 1 ]]; then
    python video_conditional_inference.py --config_path "$CONFIG" "$@"
else
    torchrun --nproc_per_node="$NPROC" video_conditional_inference.py --config_path "$CONFIG" "$@"
fi

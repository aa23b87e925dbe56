#!/bin/bash
# Issue 16 on nvidia-h200, in one 600 s call: cold and warm start of a job by phase, then host memory and
# job frames/s at 240 and 1050 latent frames. Each run is its own process (peak RSS is per process) and
# prints `longlive bench --job`'s JSON line: `startup` (phases, compile split into Dynamo and backend,
# first block), `sample_s`, `first_block_s`, `second_half_fps` (the steady rate of a one-sample job),
# `peak_rss_gib`. All runs share the switches and window-relative RoPE (past 1024 frames absolute RoPE
# warns), so the 240 and 1050 runs start warm from the cache the first two fill.
#
# From the repo root, with .whl carried (diffusers, omegaconf, imageio-ffmpeg; installed to /tmp/site):
#     bash scripts/experiments/job_memory.sh
# Logs and JSON lines under $OUT (default videos/job_memory), a summary table at the end.
OUT=${OUT:-videos/job_memory}
mkdir -p "$OUT"
START=$SECONDS
BUDGET=${BUDGET:-580}  # seconds for everything; the last run gets what is left
if [ -d .whl ] && ! python3 -c "import diffusers, omegaconf, imageio_ffmpeg" 2>/dev/null; then
    pip install -q --no-deps --no-index --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"

CC=/tmp/llcc_job_memory
SW="compile_generator=true cuda_graphs=true fold_vae_convs=true fuse_vae_norms=true compile_vae=true fuse_ffn_gelu=true"
J="--job t2v --config_path configs/longlive_video_conditional_inference.yaml wan_model_dir=null generator_ckpt=null \
lora_ckpt=null num_conditioning_frames=0 data_path=example/prompts.txt inference_iter=1 overwrite=true \
model_kwargs.use_infinite_attention=true compile_cache_dir=$CC $SW"

TIMER=$(command -v /usr/bin/time > /dev/null && echo "/usr/bin/time -v")  # max RSS even of a killed run

# run NAME CAP_S OVERRIDES...: one process, at most CAP_S seconds and never past the budget.
run() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    local limit=$((cap < left ? cap : left))
    echo "== $name (timeout ${limit} s)"
    $TIMER timeout "$limit" python3 scripts/benchmark.py $J "$@" output_folder=/tmp/jm_$name \
        > "$OUT/$name.log" 2> "$OUT/$name.err"
    echo "rc=$? wall $((SECONDS - START)) s since start"
    grep -E "startup:|Maximum resident" "$OUT/$name.err" | tail -20
    grep '^{' "$OUT/$name.log" | tail -1 | tee "$OUT/$name.json"
}

rm -rf "$CC"
run cold 170 num_output_frames=30  # empty compile cache
run warm 80 num_output_frames=30   # the cache filled by the cold run
run f240 120 num_output_frames=240
run f1050 260 num_output_frames=1050

python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
keys = ("sample_s", "first_block_s", "second_half_fps", "fps_job", "peak_rss_gib", "rss_gib_at_end", "peak_vram_gib")
for name in ("cold", "warm", "f240", "f1050"):
    path = out / f"{name}.json"
    text = path.read_text().strip() if path.exists() else ""
    if not text:
        print(name, "no result")
        continue
    report = json.loads(text)
    print(name, {key: report[key] for key in keys})
    print(name, "startup", report["startup"])
PY

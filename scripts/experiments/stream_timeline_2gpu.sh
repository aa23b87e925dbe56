#!/bin/bash
# Issue 18 on nvidia-h200-x2: where a 2-GPU stream's idle GPU time goes (`stream_timeline.py`), one call (about
# 8 minutes on a fresh machine; each run stops itself before a 560 s budget is spent):
#   1. 4 steady blocks (after 4) of the published size, split decode, every speed switch, no Python stacks:
#      gaps, host waits, labels with the host at its own speed (the first run compiles cold: its larger share);
#   2. the same with --with_stack: who issued each host wait (a slower host: read its issuers, not its times);
#   3. the same as 1 with `parallel.overlap_decode`.
# Per run and rank a compact JSON (rank0.json, rank1.json) and the logs, packed into ONE file,
# $OUT/stream_timeline_2gpu.tgz; run 1's raw traces (Perfetto) apart, $OUT/rank{0,1}.trace.json.gz, so that
# traces too large for the trip back leave the summaries alone. Run from the repo root:
#   bash scripts/experiments/stream_timeline_2gpu.sh
NAME=stream_timeline_2gpu; source "$(dirname "$0")/two_gpu_call.sh"
TL="torchrun --nproc_per_node=2 scripts/experiments/stream_timeline.py --config_path $C"
run 300 split $TL --out "$W/split" --keep_trace -- $S parallel.sequence=2 parallel.split_decode=true
mv "$W"/split/*.trace.json.gz "$OUT"/ 2>/dev/null
run 150 split_stack $TL --out "$W/split_stack" --with_stack -- $S parallel.sequence=2 parallel.split_decode=true
run 110 split_overlap $TL --out "$W/split_overlap" -- $S parallel.sequence=2 parallel.split_decode=true \
    parallel.overlap_decode=true
grep -c recompile_limit "$W"/*.log
tar czf "$OUT/stream_timeline_2gpu.tgz" -C "$(dirname "$W")" stream_timeline_2gpu && ls -la "$OUT"

#!/bin/bash
# Quiet-box measurements of issues 14 and 15 (session 10). Run from a built worktree:
#   OUT=benchmarks/results/s10-quiet bash /work/wt/quiet10.sh
set -u
OUT=${OUT:-benchmarks/results/s10-quiet}
mkdir -p "$OUT"
PY=.venv/bin/python
run() {  # name, command...
  local name=$1; shift
  { echo "# $(date -u +%H:%M:%S) $(uptime)"; echo "# $*"; "$@"; echo "# rc=$? end $(date -u +%H:%M:%S) $(uptime)"; } > "$OUT/$name.txt" 2>&1
  echo "$name done $(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)"
}
run dispatch-batch $PY benchmarks/bench_dispatch.py --rates 8000,10000,12000,14000,16000 --seconds 5 --mode batch --json "$OUT/dispatch-batch.json"
run dispatch-single $PY benchmarks/bench_dispatch.py --rates 8000,10000,12000,14000,16000 --seconds 5 --mode single --json "$OUT/dispatch-single.json"
run dispatch-batch-10k $PY benchmarks/bench_dispatch.py --rates 10000 --seconds 5 --mode batch --json "$OUT/dispatch-batch-10k.json"
run dispatch-single-10k $PY benchmarks/bench_dispatch.py --rates 10000 --seconds 5 --mode single --json "$OUT/dispatch-single-10k.json"
run gateway $PY benchmarks/bench_gateway.py --connections 10000 --rates 1000,3000,5000 --seconds 5 --only picows,gateway
run gateway-2 $PY benchmarks/bench_gateway.py --connections 10000 --rates 5000 --seconds 5 --only gateway
for i in 1 2 3; do run ai-a-$i $PY benchmarks/bench_ai.py --only a --n 3000 --burst 40000; done
run ai-worker $PY benchmarks/bench_ai_worker.py --rates 1000,3000 --seconds 5 --workers 512
run ai-path $PY benchmarks/bench_ai_path.py --rates 1000,5000,8000,10000 --seconds 5 --conns 100
run ai-c $PY benchmarks/bench_ai.py --only c --model-n 20
touch "$OUT/DONE"

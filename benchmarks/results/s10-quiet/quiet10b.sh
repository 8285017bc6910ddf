set -u
OUT=benchmarks/results/s10-quiet
PY=.venv/bin/python
run() { local name=$1; shift; { echo "# $(date -u +%H:%M:%S) $(uptime)"; echo "# $*"; "$@"; echo "# rc=$? end $(date -u +%H:%M:%S) $(uptime)"; } > "$OUT/$name.txt" 2>&1; echo "$name done $(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)"; }
run dispatch-batch-10k-2 $PY benchmarks/bench_dispatch.py --rates 10000 --seconds 5 --mode batch --json "$OUT/dispatch-batch-10k-2.json"
run dispatch-single-10k-2 $PY benchmarks/bench_dispatch.py --rates 10000 --seconds 5 --mode single --json "$OUT/dispatch-single-10k-2.json"
run gateway-3 $PY benchmarks/bench_gateway.py --connections 10000 --rates 5000 --seconds 5 --only picows,gateway
run ai-path-2 $PY benchmarks/bench_ai_path.py --rates 1000,5000,10000 --seconds 5 --conns 100
run ai-path-3 $PY benchmarks/bench_ai_path.py --rates 10000,12000 --seconds 5 --conns 100

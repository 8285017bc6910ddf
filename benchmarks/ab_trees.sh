#!/bin/bash
# A/B of two source trees with the same benchmark scripts, run alternately in one session.
#
#   benchmarks/ab_trees.sh OLD_TREE NEW_TREE OUT_DIR [PAIRS] [MODE]
#
# Each tree is a checkout (e.g. `git archive <commit> | tar -x -C DIR`) whose python/meetq
# holds the built extensions (copy the .so files; rust/ and native/ must be the same).
# The scripts are this checkout's (benchmarks/ and tests/support/), so both trees run the
# very same measurement code; only `import meetq` differs (PYTHONPATH). The order within a
# pair alternates (old first in odd pairs, new first in even ones). MODE "full" (default):
# bench_queue_self.py, latency_breakdown.py and test_bench_queue.py; "quick":
# latency_breakdown.py --repeats 1 and test_bench_queue.py, for more pairs in the same time.
# Raw outputs land in OUT_DIR as <script>-<old|new>-<pair>.txt (and .json).
set -euo pipefail
OLD=$1 NEW=$2 OUT=$3 PAIRS=${4:-3} MODE=${5:-full}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
mkdir -p "$OUT"
run() {  # tree label pair
  local tree=$1 label=$2 pair=$3
  export PYTHONPATH=$tree/python MEETQ_BACKEND=native
  $PY -c "import meetq; assert meetq.__file__.startswith('$tree'), meetq.__file__"
  if [ "$MODE" = full ]; then
    $PY "$HERE/benchmarks/bench_queue_self.py" --json "$OUT/bench_queue_self-$label-$pair.json" \
      > "$OUT/bench_queue_self-$label-$pair.txt" 2>&1
    $PY "$HERE/benchmarks/latency_breakdown.py" > "$OUT/latency_breakdown-$label-$pair.txt" 2>&1
  else
    $PY "$HERE/benchmarks/latency_breakdown.py" --repeats 1 \
      > "$OUT/latency_breakdown-$label-$pair.txt" 2>&1
  fi
  (cd "$HERE" && $PY -m pytest -q -p no:cacheprovider benchmarks/test_bench_queue.py \
    --benchmark-only --benchmark-json="$OUT/test_bench_queue-$label-$pair.json" \
    > "$OUT/test_bench_queue-$label-$pair.txt" 2>&1)
}
for pair in $(seq 1 "$PAIRS"); do
  if (( pair % 2 )); then run "$OLD" old "$pair"; run "$NEW" new "$pair"
  else run "$NEW" new "$pair"; run "$OLD" old "$pair"; fi
  echo "pair $pair done $(date -u +%H:%M:%S)"
done

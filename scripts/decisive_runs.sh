#!/bin/bash
# Run (or resume) a registered decisive test in the background: WORKERS processes of one torch thread each, the
# config's seeds split between them (every cell is its own hash-keyed folder, so a killed run resumes where it
# stopped), then one report_only pass writes the report over every seed.
#   usage: nohup scripts/decisive_runs.sh configs/toyworld/decisive/skull_default.yaml 2 [KEY=VALUE ...] > log 2>&1 &
# Further arguments are overrides for the runs (not the rule): e.g. a core_points list that computes the points a
# pending contrast needs first, "core_points=[two-stage:0, sequential:50, sequential:100, sequential:200]".
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=$1
workers=${2:-1}
extra=("${@:3}")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
py=.venv/bin/python
read -r out seeds < <($py - "$cfg" <<'PY'
import sys
from prunefit.config.load import load_config
from prunefit.experiments.pareto.config import ParetoConfig
c = load_config(ParetoConfig, [sys.argv[1]], [])
print(c.output_dir, ",".join(map(str, c.seeds)))
PY
)
IFS=, read -r -a all <<< "$seeds"
run() {  # one worker: its share of the seeds
    local mine=("${all[@]:0:0}")
    for ((j = $1; j < ${#all[@]}; j += workers)); do mine+=("${all[$j]}"); done
    local list
    list=$(IFS=,; echo "${mine[*]}")
    echo "[decisive] worker $1: seeds [$list]"
    .venv/bin/prunefit experiment pareto -c "$cfg" "seeds=[$list]" "${extra[@]}"
}
run 0 &
pids=($!)
for ((w = 1; w < workers; w++)); do  # the others start once the shared start expert exists
    until [ -f "$out/start/prune_summary.json" ] || ! kill -0 "${pids[0]}" 2> /dev/null; do sleep 10; done
    run "$w" &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
.venv/bin/prunefit experiment pareto -c "$cfg" report_only=true
echo "[decisive] done (workers' status $status)"
exit $status

#!/usr/bin/env bash
# The issue-23 figures of the reference detail stage: `refrestore eval` on the held-out people of
# shared/data/refbench at 512 (every photo) and shared/data/faces at 256 (one photo each), top-3
# references, severe at the default fidelity, at 1 and at 0, and moderate. JSON reports go to
# ${1:-/tmp/detail_eval}; each run prints its table. On one thread:
#     OMP_NUM_THREADS=1 bash benchmarks/eval_detail.sh /tmp/detail_eval
set -euo pipefail
out=${1:-/tmp/detail_eval}
shared="$(cd "$(dirname "$0")/.." && pwd)/../shared/data"
[ -d "$shared/refbench" ] && [ -d "$shared/faces" ] || { echo "shared data not found under $shared" >&2; exit 2; }
mkdir -p "$out"
run() {  # name, then eval's options
  local name=$1; shift
  echo "== $name"
  refrestore eval --split held-out --top-k 3 --device cpu --json "$out/$name.json" "$@"
}
for set in "refbench 512" "faces 256"; do
  read -r data size <<<"$set"
  limit=(); [ "$data" = faces ] && limit=(--limit 1)
  common=(--data "$shared/$data" --size "$size" "${limit[@]}")
  run "${data}${size}_severe" "${common[@]}" --preset severe
  run "${data}${size}_severe_f1" "${common[@]}" --preset severe --fidelity 1
  run "${data}${size}_severe_f0" "${common[@]}" --preset severe --fidelity 0
  run "${data}${size}_moderate" "${common[@]}" --preset moderate
done
python "$(dirname "$0")/detail_table.py" "$out"

#!/usr/bin/env bash
# The one GPU check: on a bare GPU machine (one H100 or H200) within about 9 minutes it runs
#   1. the GPU tests (tests/test_gpu.py: CUDA graph vs eager steps, resume with graphs, probe numerics),
#   2. the bench on the device (engine vs plain loop, step times with share of peak, every tier's GPU-hours),
#   3. the quick tier with --device cuda, its verdicts compared with a CPU run's claims.json,
#   4. the medium tier of all four papers,
# and writes OUT/summary.md (each part's exit code and seconds, the bench's lines, every verdict with n
# and 95% interval, the quick verdicts against the CPU's) and OUT.tar.gz (logs, results, reports).
#
#   bash ci/gpu-check.sh [--cpu-claims FILE] [--out DIR] [--paper P ...] [--dry-run]
#
# --cpu-claims: the CPU's quick claims.json (default results/quick/claims.json, a CPU run's report in
# this checkout). --paper: only these papers (default all four). --dry-run: everything but the GPU steps,
# on the CPU at test size (the GPU tests skip, saying so; the bench times the quick step workloads; the
# quick tier only prints its plan; the medium tier trains shrunk, REPRODUCE_SHRINK=1), to check the
# script itself on any machine. Each part has its own time limit; a part cut off shows exit code 124,
# and running the check again resumes (the results store keeps finished runs and training states).
# With the device bundle (.device/, made by the project's device-bundle tool: wheels for netCDF4,
# cftime, submitit and Fashion-MNIST's files) the script sources .device/env.sh first.
# Exit code: 0 when every part passed and every quick verdict equals the CPU's, 1 otherwise (with --dry-run the
# GPU tests exit 5, nothing collected, and the shrunk medium may exit 1: its verdicts are not the tier's).
set -uo pipefail
cd "$(dirname "$0")/.."

cpu_claims=results/quick/claims.json
out=""
dry=0
papers=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-claims) cpu_claims=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --paper) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do papers+=("$1"); shift; done ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see bash ci/gpu-check.sh --help)" >&2; exit 2 ;;
  esac
done
[ -f .device/env.sh ] && { source .device/env.sh || { echo "gpu-check: .device/env.sh failed" >&2; exit 2; }; }
python=${PYTHON:-python3}
out=${out:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
results="$out/results"
paper_args=()
[ ${#papers[@]} -gt 0 ] && paper_args=(--paper "${papers[@]}")
: > "$out/parts.txt"

part() {  # part NAME SECONDS CMD...: run CMD with a time limit, log to OUT/NAME.log, record `NAME RC SECONDS`
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "gpu-check: $name (at most ${limit} s): $*"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  echo "$name $rc $(( $(date +%s) - start ))" >> "$out/parts.txt"
  tail -n 3 "$out/$name.log"
}

if [ "$dry" = 1 ]; then
  device=cpu
  part gpu-tests 120 "$python" -m pytest tests/test_gpu.py -q -rs -p no:cacheprovider
  part bench 300 "$python" -m reproduce bench --device cpu --quick --only steps --results "$results" --out "$out/bench"
  part quick 120 "$python" -m reproduce --tier quick --device cpu --threads 1 --dry-run "${paper_args[@]}"
  part medium 600 env REPRODUCE_SHRINK=1 "$python" -m reproduce --tier medium --device cpu --threads 1 \
    --results "$results" "${paper_args[@]}"
else
  device=cuda
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
  part gpu-tests 60 "$python" -m pytest tests/test_gpu.py -q -rs -p no:cacheprovider
  part bench 90 "$python" -m reproduce bench --device cuda --only plain steps tiers --results "$results" --out "$out/bench"
  part quick 150 "$python" -m reproduce --tier quick --device cuda --threads 4 --results "$results" "${paper_args[@]}"
  part medium 210 "$python" -m reproduce --tier medium --device cuda --threads 4 --results "$results" "${paper_args[@]}"
fi
echo "device $device" >> "$out/gpu.txt"

"$python" ci/gpu_summary.py "$out" --cpu-claims "$cpu_claims" > "$out/summary.md"
rc=$?
tar czf "$out.tar.gz" -C "$(dirname "$out")" "$(basename "$out")"
cat "$out/summary.md"
echo "gpu-check: summary $out/summary.md, archive $out.tar.gz (exit $rc)"
exit $rc

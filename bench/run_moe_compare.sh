#!/usr/bin/env bash
# The MoE layer against the PyTorch peer, in one run on one machine: bench_moe_layer (moegrad's
# layer, its module path and its dense FFN of equal FLOPs) and shared/reference/torch/moe_layer.py
# (the peer's sorted, naive and dense), alternated ROUNDS times so that drift of the machine's
# speed hits both sides alike. Prints every JSON line (each tagged with "round" and "side"), then
# the target ratios per round and their median, and whether each target is met:
#   moegrad / peer sorted:  E=4 <= 1.0, E=16 <= 0.9, E=64 <= 0.6
#   moegrad E=64 / E=4 <= 1.2 (the peer's own ratio is printed beside it)
#   moegrad E=4 / moegrad dense <= 1.15
# The peer runs in its strongest configuration (reference README): OpenMP OpenBLAS, one pool.
#
# Usage: bench/run_moe_compare.sh [BUILD_DIR]      (default: build; the bench must be built)
# Environment: THREADS=2 ROUNDS=2 REPEATS=7 WARMUP=2 EXPERTS="4 16 64" OUT=file.jsonl
#              IMPLS="moegrad modules dense" (moegrad's side; the peer's is always sorted naive dense)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
bench=$build/bench/bench_moe_layer
peer_dir=${PEER_DIR:-$root/../shared/reference/torch}
THREADS=${THREADS:-2} ROUNDS=${ROUNDS:-2} REPEATS=${REPEATS:-7} WARMUP=${WARMUP:-2}
EXPERTS=${EXPERTS:-"4 16 64"} IMPLS=${IMPLS:-"moegrad modules dense"}
out=${OUT:-$(mktemp /tmp/moe_compare.XXXXXX.jsonl)}

[[ -x $bench ]] || { echo "no $bench: cmake --build $build --target bench_moe_layer" >&2; exit 1; }
[[ -f $peer_dir/moe_layer.py ]] || { echo "no peer script in $peer_dir (set PEER_DIR)" >&2; exit 1; }
: > "$out"

# Tags each JSON line with the round, the side and the 1-minute load when it was printed (a load
# well above the bench's own thread count means another job shared the machine: discard that round).
tag() {
  while IFS= read -r line; do
    [[ $line == \{* ]] || { echo "$line"; continue; }
    echo "{\"round\":$1,\"side\":\"$2\",\"load1_seen\":$(cut -d' ' -f1 /proc/loadavg),${line#\{}" | tee -a "$out"
  done
}
for round in $(seq "$ROUNDS"); do
  echo "# round $round: moegrad  (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  # shellcheck disable=SC2086
  "$bench" --threads "$THREADS" --experts $EXPERTS --impls $IMPLS --repeats "$REPEATS" --warmup "$WARMUP" |
    tag "$round" moegrad
  echo "# round $round: peer  (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  # shellcheck disable=SC2086
  (cd "$peer_dir" && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
     LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp /usr/bin/python3 moe_layer.py \
     --threads "$THREADS" --experts $EXPERTS --impls sorted naive dense --repeats "$REPEATS" \
     --warmup "$WARMUP") | tag "$round" peer
done

/usr/bin/python3 - "$out" "$EXPERTS" <<'EOF'
import json, statistics, sys
path, experts = sys.argv[1], [int(e) for e in sys.argv[2].split()]
rows = [json.loads(l) for l in open(path) if l.strip()]
ms = {}  # (round, side, impl, E) -> ms_median
for r in rows:
    if r.get("bench") == "moe_layer":
        ms[(r["round"], r["side"], r["impl"], r["E"])] = r["ms_median"]
rounds = sorted({k[0] for k in ms})
def per_round(num, den):
    vals = [ms[(r,) + num] / ms[(r,) + den] for r in rounds if (r,) + num in ms and (r,) + den in ms]
    return vals, (statistics.median(vals) if vals else None)
targets = []
for E, limit in ((4, 1.0), (16, 0.9), (64, 0.6)):
    if E in experts:
        targets.append((f"moegrad/peer_sorted E={E}", ("moegrad", "moegrad", E), ("peer", "sorted", E), limit))
lo, hi = experts[0], experts[-1]
if hi != lo:
    targets.append((f"moegrad E={hi}/E={lo}", ("moegrad", "moegrad", hi), ("moegrad", "moegrad", lo), 1.2))
    targets.append((f"peer sorted E={hi}/E={lo} (info)", ("peer", "sorted", hi), ("peer", "sorted", lo), None))
targets.append((f"moegrad E={lo}/moegrad dense", ("moegrad", "moegrad", lo), ("moegrad", "dense", None), 1.15))
targets.append((f"moegrad dense/peer dense (info)", ("moegrad", "dense", None), ("peer", "dense", None), None))
for E in experts:
    targets.append((f"peer naive/moegrad E={E} (info)", ("peer", "naive", E), ("moegrad", "moegrad", E), None))
summary = {"bench": "moe_compare_summary", "rounds": len(rounds)}
print("\n# target ratios (per round; median)", file=sys.stderr)
for name, num, den, limit in targets:
    vals, med = per_round(num, den)
    if med is None:
        continue
    met = None if limit is None else med <= limit
    summary[name] = {"per_round": [round(v, 3) for v in vals], "median": round(med, 3),
                     "limit": limit, "met": met}
    verdict = "" if limit is None else ("  <= %.2f: %s" % (limit, "met" if met else "NOT met"))
    print("  %-36s %s  median %.3f%s" % (name, " ".join("%.3f" % v for v in vals), med, verdict),
          file=sys.stderr)
print(json.dumps(summary))
EOF
echo "# all lines in $out" >&2

#!/usr/bin/env bash
# Runs moegrad's training-step benches and the PyTorch peer's scripts on the same workloads in
# one invocation, and prints every JSON line plus one ratio line per workload (ours / peer,
# < 1 when moegrad is faster). Absolute times drift between runs on this machine; ratios are
# only meaningful between lines of the same invocation.
#
#   bench/run_peer_compare.sh [--threads N] [--build DIR] [--only cnn|attn]
#
# The peer is the reference setup of shared/reference/README.md: Debian's PyTorch 1.13 with the
# OpenMP build of OpenBLAS (libopenblas0-openmp), OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed.
# cnn_step is compared with the faster of the peer's NCHW and channels-last runs (target 0.75),
# attn with the peer at the same need_weights (target 1.0). A dev tool: it needs the reference
# scripts (MG_PEER_DIR, default ../shared/reference/torch); the bench binaries do not.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
threads=2
build="$root/build-perf"
only="cnn attn"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--build DIR] [--only cnn|attn]" >&2; exit 2 ;;
  esac
done
peer_dir=${MG_PEER_DIR:-$root/../shared/reference/torch}
for f in "$peer_dir/cnn_step.py" "$peer_dir/attn.py"; do
  [ -f "$f" ] || { echo "peer script not found: $f (set MG_PEER_DIR)" >&2; exit 1; }
done
for b in bench_cnn_step bench_attn; do
  [ -x "$build/bench/$b" ] || { echo "not built: $build/bench/$b (cmake --build $build)" >&2; exit 1; }
done

peer() {
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp /usr/bin/python3 "$@"
}
ours() { OMP_NUM_THREADS=$threads "$@"; }
load() { printf '{"bench":"load","when":"%s","loadavg":"%s"}\n' "$1" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
{
  load start
  for w in $only; do
    case $w in
      cnn)
        ours "$build/bench/bench_cnn_step" --threads "$threads"
        peer "$peer_dir/cnn_step.py" --threads "$threads"
        peer "$peer_dir/cnn_step.py" --threads "$threads" --channels-last
        ;;
      attn)
        ours "$build/bench/bench_attn" --threads "$threads"
        peer "$peer_dir/attn.py" --threads "$threads"
        ;;
      *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
  done
  load end
} | tee "$out"

/usr/bin/python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ours = [r for r in rows if r.get("impl") == "moegrad"]
peer = [r for r in rows if r.get("bench") in ("cnn_step", "attn") and r.get("impl") != "moegrad"]

def ratio(workload, mine, theirs, target, peer_config, note=None):
    d = {"bench": "ratio", "workload": workload, "peer_config": peer_config,
         "ours_ms_median": mine["ms_median"], "peer_ms_median": theirs["ms_median"],
         "ratio_median": round(mine["ms_median"] / theirs["ms_median"], 3),
         "ours_ms_min": mine["ms_min"], "peer_ms_min": theirs["ms_min"],
         "ratio_min": round(mine["ms_min"] / theirs["ms_min"], 3),
         "target": target, "met": mine["ms_median"] / theirs["ms_median"] <= target}
    if "peak_rss_mb" in mine:
        d["ours_peak_rss_mb"] = mine["peak_rss_mb"]
    if note:
        d.update(note)
    print(json.dumps(d))

for m in ours:
    if m["bench"] == "cnn_step":
        cands = [p for p in peer if p["bench"] == "cnn_step" and p["threads"] == m["threads"]]
        if not cands:
            continue
        best = min(cands, key=lambda p: p["ms_median"])
        cfg = "channels_last" if best.get("channels_last") else "nchw"
        ratio("cnn_step", m, best, 0.75, "best of nchw/channels_last: " + cfg,
              {"rss_target_mb": 300, "rss_met": m["peak_rss_mb"] < 300})
        for p in cands:
            if p is not best:
                ratio("cnn_step", m, p, 0.75, "channels_last" if p.get("channels_last") else "nchw")
    elif m["bench"] == "attn":
        for p in peer:
            if p["bench"] == "attn" and p["need_weights"] == m["need_weights"] and p["threads"] == m["threads"]:
                ratio("attn", m, p, 1.0, "need_weights=%s" % str(p["need_weights"]).lower())
EOF

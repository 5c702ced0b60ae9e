#!/usr/bin/env bash
# The side-by-side GPU benchmark: hair-jax against the reference PyTorch HAIR on
# the same device. Res-HAIR train steps at per-device batch 4 and 32 (128 px),
# inference at 512 and 1024 px, float32 and bfloat16; images/s, peak device
# memory and (ours) the cold compile time. Writes every row, the ratios and
# the versions to one JSON file.
#
#   benchmarks/gpu_run.sh [--ref DIR] [--out FILE] [--dry-run]
#
#   --ref DIR   a checkout of toummHus/HAIR (see benchmarks/ref_torch.py);
#               without it only ours is measured.
#   --out FILE  where the JSON goes (default runs/gpu_run.json).
#   --dry-run   tiny sizes and the tiny model, to check the script on a CPU
#               (the reference, if given, still runs the full HAIR, small).
#
# Runs from the repository root with PYTHONPATH=. and needs only jax, flax,
# optax, einops (and torch for --ref): nothing it imports pulls in grain or
# tensorflow-datasets. Each of our rows runs in a fresh process
# (bench_model.py); every command is bounded by STEP_TIMEOUT seconds so that
# one slow compile cannot eat the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."

REF=""
OUT="runs/gpu_run.json"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --ref) REF="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "error: unknown argument $1 (expected --ref DIR, --out FILE, --dry-run)" >&2; exit 2 ;;
  esac
done
if [ -n "$REF" ] && [ ! -f "$REF/net/HAIR.py" ]; then
  echo "error: --ref $REF has no net/HAIR.py (a checkout of toummHus/HAIR expected)" >&2
  exit 2
fi

if [ "$DRY" = 1 ]; then
  VARIANT=tiny INFER="64" TRAIN="2" SIZE=32 REPEATS=1
  # Only the plumbing is checked: compile fast, as the tests do.
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
else
  VARIANT=res_hair INFER="512 1024" TRAIN="4 32" SIZE=128 REPEATS=2
fi
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}."
ROWS="$(mktemp)"
trap 'rm -f "$ROWS"' EXIT
mkdir -p "$(dirname "$OUT")"

for DTYPE in float32 bfloat16; do
  echo "hair-jax $VARIANT $DTYPE ..." >&2
  timeout "$STEP_TIMEOUT" python benchmarks/bench_model.py --variants "$VARIANT" \
    --infer $INFER --train $TRAIN --train_size "$SIZE" --repeats "$REPEATS" \
    --settings "{\"dtype\": \"$DTYPE\"}" >> "$ROWS" || echo "  (ours, $DTYPE: exit $?)" >&2
  if [ -n "$REF" ]; then
    echo "reference $DTYPE ..." >&2
    timeout "$STEP_TIMEOUT" python benchmarks/ref_torch.py "$REF" --dtype "$DTYPE" \
      --sizes $INFER --train_batches $TRAIN --train_size "$SIZE" \
      --repeats "$REPEATS" >> "$ROWS" || echo "  (reference, $DTYPE: exit $?)" >&2
  fi
done

python - "$ROWS" "$OUT" <<'EOF'
"""Pairs our rows with the reference's (same measurement, same dtype)."""
import json, platform, sys

import jax

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ours = {(r["what"], r.get("dtype")): r for r in rows if r["peer"] == "hair-jax" and "s" in r}
ref = {(r["what"], r.get("dtype")): r for r in rows if r["peer"] == "torch-ref"}
ratios = []
for key, r in ours.items():
    if key in ref and r.get("variant") == "res_hair":
        q = ref[key]
        ratio = {"what": key[0], "dtype": key[1], "speedup": round(q["s"] / r["s"], 2)}
        if r.get("peak_gpu_gb") and q.get("peak_gpu_gb"):
            ratio["mem_ratio"] = round(r["peak_gpu_gb"] / q["peak_gpu_gb"], 2)
        ratios.append(ratio)
try:
    import torch
    torch_version = torch.__version__
except ImportError:
    torch_version = None
result = {
    "device": jax.devices()[0].device_kind,
    "jax": jax.__version__,
    "torch": torch_version,
    "python": platform.python_version(),
    "rows": rows,
    "ratios": ratios,
}
with open(sys.argv[2], "w") as f:
    json.dump(result, f, indent=1)
errors = [r for r in rows if "error" in r]
print(f"wrote {sys.argv[2]}: {len(rows)} rows, {len(ratios)} ratios, {len(errors)} errors")
EOF

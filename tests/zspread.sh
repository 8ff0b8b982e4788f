#!/usr/bin/env bash
# The spread a statistical bound is set from: run test binaries at THERMOFLOW_TEST_SEED = 1 … N
# and print, per test, the largest |z| (value − exact over its standard error, as printed by
# tests/common::within) at each seed, and the seeds where it failed.
#   tests/zspread.sh 5 physics mcmc smc          # fast-tier binaries, 5 seeds
#   tests/zspread.sh 3 trust -- --ignored        # verification tier
set -euo pipefail
n=$1; shift
bins=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  bins+=("$1"); shift
done
out=$(mktemp)
for s in $(seq 1 "$n"); do
  for b in "${bins[@]}"; do
    THERMOFLOW_TEST_SEED=$s cargo test --release --test "$b" -- --nocapture "${extra[@]}" 2>&1 \
      | grep -oE '\[z\] .*|^test [^ ]+ \.\.\. FAILED' | sed "s/^/$s $b /" >> "$out" || true
  done
done
python3 - "$out" "$n" <<'PY'
import sys, collections
worst = collections.defaultdict(dict)
failed = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[2] == "test":
        failed[f"{parts[1]}::{parts[3]}"].append(int(parts[0]))
        continue
    seed, binary, test, z = parts[0], parts[1], parts[3], parts[-1]
    key = f"{binary}::{test}"
    worst[key][int(seed)] = max(worst[key].get(int(seed), 0.0), abs(float(z)))
n = int(sys.argv[2])
print(f"{'test':70s} " + " ".join(f"s{s:<5d}" for s in range(1, n + 1)) + "  max")
for key in sorted(worst):
    row = [worst[key].get(s, float('nan')) for s in range(1, n + 1)]
    fails = f"  FAILED at seeds {failed[key]}" if failed[key] else ""
    print(f"{key:70s} " + " ".join(f"{v:6.2f}" for v in row) + f"  {max(row):.2f}{fails}")
PY
rm -f "$out"

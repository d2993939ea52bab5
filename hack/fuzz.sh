#!/usr/bin/env bash
# Fuzzes every Go fuzz target of the tree (func FuzzXxx in a *_test.go) for FUZZTIME each, one
# target at a time (go test fuzzes one target per run). The seed corpora (testdata/fuzz/) also
# run as ordinary tests in every go test. Fails on the first input that breaks a target; the
# input is then saved under the package's testdata/fuzz/ for a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
targets=$(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+' . | grep -v '^./_output/' | sort -u || true)
if [ -z "$targets" ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
# A duration budget races Go's fuzz coordinator at its deadline (go.dev/issue/75804, fixed in
# Go 1.27): the run can fail with a bare "context deadline exceeded" and no failing input. Such
# a run is retried once; any run that writes a failing input or fails otherwise fails here.
# An execution budget (FUZZTIME=5000x, as make test uses) has no deadline to race.
fuzz_one() {
  local pkg=$1 name=$2 out rc=0
  out=$(mktemp)
  for attempt in 1 2; do
    rc=0
    go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out" || rc=$?
    [ "$rc" -eq 0 ] && break
    if [ "$attempt" -eq 1 ] && grep -q 'context deadline exceeded' "$out" \
        && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$out"; then
      echo "fuzz: $name stopped at its time budget without a failing input (go.dev/issue/75804); retrying once"
      continue
    fi
    break
  done
  rm -f "$out"
  return "$rc"
}
n=0
while IFS= read -r line; do
  file=${line%%:*}
  name=${line#*func }
  pkg=./$(dirname "${file#./}")
  echo "fuzz: $pkg $name for $fuzztime"
  fuzz_one "$pkg" "$name"
  n=$((n + 1))
done <<< "$targets"
echo "fuzz: $n targets, $fuzztime each: no failure"

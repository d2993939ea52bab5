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
n=0
while IFS= read -r line; do
  file=${line%%:*}
  name=${line#*func }
  pkg=./$(dirname "${file#./}")
  echo "fuzz: $pkg $name for $fuzztime"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
  n=$((n + 1))
done <<< "$targets"
echo "fuzz: $n targets, $fuzztime each: no failure"

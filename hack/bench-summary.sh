#!/usr/bin/env bash
# Gathers the tables the benchmarks wrote into bench/results/ into one page,
# bench/results/README.md, and prints it.
set -euo pipefail
cd "$(dirname "$0")/../bench/results"
{
  echo "# slimvirt benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) on this machine: $(nproc) cores,"
  echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), KVM $( (grep -qwE 'vmx|svm' /proc/cpuinfo && echo available) || echo 'not usable (QEMU TCG)')."
  for f in start-latency.md overhead.md control-plane.md density.md runtime.txt cni.txt csi.txt; do
    [ -f "$f" ] || continue
    echo
    echo "## ${f%.*} ($(date -u -r "$f" +%Y-%m-%d\ %H:%M) UTC)"
    echo
    case $f in
      *.md) cat "$f" ;;
      # A Go benchmark's own report, without go test's lines.
      *) echo '```'
         grep -vE '^(=== |--- |PASS$|FAIL|ok |goos:|goarch:|pkg:|cpu:|Benchmark|\s*$)' "$f" || true
         echo '```' ;;
    esac
  done
} >README.md
cat README.md

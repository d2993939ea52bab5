#!/usr/bin/env bash
# Draws the benchmarks' results in bench/results/ as SVG plots (bench/cmd/benchplot), gathers
# the tables the benchmarks wrote there into one page, bench/results/README.md, with each plot
# under the table it goes with (an SVG's name starts with its table's), and prints the page.
set -euo pipefail
cd "$(dirname "$0")/.."
# A plot whose data file is missing is skipped; one that does not parse fails this script,
# after the page is written with the plots that were drawn.
rc=0
plots=$(go run ./bench/cmd/benchplot -results bench/results) || rc=$?
cd bench/results
{
  echo "# slimvirt benchmarks"
  echo
  echo "Gathered by \`make bench\` on $(date -u +%Y-%m-%d) on this machine (each section says when its benchmark ran): $(nproc) cores,"
  echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), KVM $( (grep -qwE 'vmx|svm' /proc/cpuinfo && echo available) || echo 'not usable (QEMU TCG)')."
  for f in start-latency.md overhead.md control-plane.md density.md stop.md runtime.txt cni.txt csi.txt; do
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
    for svg in $plots; do
      case $svg in
        "${f%.*}"*.svg) echo; echo "![${svg%.svg}]($svg)" ;;
      esac
    done
  done
} >README.md
cat README.md
exit "$rc"

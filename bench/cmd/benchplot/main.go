// Command benchplot draws the benchmarks' results in bench/results/ as SVG plots beside
// their tables and prints the names of the SVGs it wrote (hack/bench-summary.sh runs it and
// links them from the results page).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/slimvirt/slimvirt/bench/figure"
)

func main() { os.Exit(run()) }

func run() int {
	cfg := figure.Config{Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	flag.StringVar(&cfg.Results, "results", "bench/results", "directory the benchmarks wrote their files into")
	flag.StringVar(&cfg.Out, "out", "", "directory for the SVGs (default: the results directory)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	p, err := figure.New(cfg)
	if err != nil {
		cfg.Log.Error("benchplot: bad configuration", "err", err)
		return 2
	}
	// The SVGs written go to stdout, one a line, for the results page to link.
	wrote, err := p.Run(ctx)
	for _, name := range wrote {
		fmt.Println(name)
	}
	if err != nil {
		cfg.Log.Error("benchplot: plots failed", "err", err)
		return 1
	}
	return 0
}

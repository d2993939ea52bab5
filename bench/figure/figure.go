// Package figure draws the benchmarks' results in bench/results/ as SVG plots beside their
// tables: each figure reads one file written by a benchmark (package series) and writes one
// SVG. A figure whose file is missing is skipped; a file that does not parse is an error.
package figure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Config says where the results are and where the plots go.
type Config struct {
	Results string       // the directory the benchmarks write into (bench/results)
	Out     string       // where the SVGs go; Results when empty
	Log     *slog.Logger // slog.Default() when nil
}

// Plotter draws every figure it has data for.
type Plotter struct {
	cfg Config
}

// New checks cfg.
func New(cfg Config) (*Plotter, error) {
	if cfg.Results == "" {
		return nil, errors.New("no results directory")
	}
	st, err := os.Stat(cfg.Results)
	if err != nil {
		return nil, fmt.Errorf("results directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("results directory %s is not a directory", cfg.Results)
	}
	if cfg.Out == "" {
		cfg.Out = cfg.Results
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Plotter{cfg: cfg}, nil
}

// Figure is one plot: the SVG it writes and how it is drawn from the results directory.
// An SVG's name starts with the name of the table it goes with (start-latency.md ->
// start-latency*.svg), which is how hack/bench-summary.sh places it.
type Figure struct {
	SVG  string
	draw func(results string) (*plot.Plot, error)
}

// Figures lists every figure in the order the results page shows them.
func Figures() []Figure {
	return []Figure{
		{"start-latency.svg", startLatency},
		{"overhead-memory-per-vm.svg", memoryPerVM},
		{"control-plane-cpu.svg", controlPlaneCPU},
		{"control-plane-memory.svg", controlPlaneMemory},
		{"cni-latency.svg", cniLatency},
		{"csi-import.svg", csiImport},
	}
}

// Size of every SVG.
const (
	width  = 18 * vg.Centimeter
	height = 11 * vg.Centimeter
)

// Run draws every figure whose data file exists and returns the SVGs it wrote. It draws
// them all before it returns the errors of those that failed.
func (p *Plotter) Run(ctx context.Context) ([]string, error) {
	var wrote []string
	var errs []error
	for _, f := range Figures() {
		if err := ctx.Err(); err != nil {
			return wrote, err
		}
		pl, err := f.draw(p.cfg.Results)
		var missing *missingError
		switch {
		case errors.As(err, &missing):
			p.cfg.Log.Info("plot skipped: no data", "svg", f.SVG, "file", missing.path, "reason", missing.why)
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("plot %s: %w", f.SVG, err))
			continue
		}
		out := filepath.Join(p.cfg.Out, f.SVG)
		if err := save(pl, out); err != nil {
			errs = append(errs, err)
			continue
		}
		p.cfg.Log.Info("plot written", "svg", out)
		wrote = append(wrote, f.SVG)
	}
	return wrote, errors.Join(errs...)
}

// save writes the SVG atomically: the results page never links a half-written file.
func save(pl *plot.Plot, path string) error {
	// Text is laid out with the font's own metrics, so the font goes into the file: a viewer
	// with another font would overflow labels and legends.
	c := vgsvg.NewWith(vgsvg.UseWH(width, height), vgsvg.EmbedFonts(true))
	pl.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return fmt.Errorf("render %s: %w", path, err)
	}
	svg := b.Bytes()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, svg, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// missingError says that a figure has nothing to draw: its file is missing or holds no rows.
type missingError struct{ path, why string }

func (e *missingError) Error() string { return e.path + ": " + e.why }

// read calls r on results/name; a missing file, or one without rows, is a missingError.
func read[T any](results, name string, r func(string) ([]T, error)) ([]T, error) {
	path := filepath.Join(results, name)
	v, err := r(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, &missingError{path, "no such file"}
	case err == nil && len(v) == 0:
		return nil, &missingError{path, "no rows"}
	}
	return v, err
}

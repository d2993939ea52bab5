package figure

import (
	"errors"
	"fmt"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/slimvirt/slimvirt/bench/series"
)

// line is one series against VMIs Running: every measured point, and a line through the
// median at each count.
type line struct {
	label  string
	points plotter.XYs
}

func addLines(p *plot.Plot, lines []line) error {
	maxX := 0.0
	for i, l := range lines {
		s, err := plotter.NewScatter(l.points)
		if err != nil {
			return fmt.Errorf("%s: %w", l.label, err)
		}
		s.Color = plotutil.Color(i)
		s.Shape = plotutil.Shape(i)
		s.Radius = vg.Points(3)
		p.Add(s)
		med, err := plotter.NewLine(medians(l.points))
		if err != nil {
			return fmt.Errorf("%s: %w", l.label, err)
		}
		med.Color = plotutil.Color(i)
		p.Add(med)
		p.Legend.Add(l.label, s, med)
		for _, pt := range l.points {
			maxX = max(maxX, pt.X)
		}
	}
	perVM(p, maxX)
	return nil
}

// medians returns the median Y at each X, by X.
func medians(pts plotter.XYs) plotter.XYs {
	byX := map[float64][]float64{}
	for _, pt := range pts {
		byX[pt.X] = append(byX[pt.X], pt.Y)
	}
	var out plotter.XYs
	for x, ys := range byX {
		sort.Float64s(ys)
		m := ys[len(ys)/2]
		if len(ys)%2 == 0 {
			m = (ys[len(ys)/2-1] + ys[len(ys)/2]) / 2
		}
		out = append(out, plotter.XY{X: x, Y: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].X < out[j].X })
	return out
}

// memoryPerVM draws what a VM costs besides its RAM against the number of VMIs Running, with
// KubeVirt's per-VM reserve.
func memoryPerVM(results string) (*plot.Plot, error) {
	rows, err := read(results, series.VMMemoryFile, series.ReadVMMemory)
	if err != nil {
		return nil, err
	}
	ws, own := line{label: "launcher pod working set less guest RAM"}, line{label: "launcher's own processes, PSS"}
	for _, r := range rows {
		x := float64(r.Running)
		ws.points = append(ws.points, plotter.XY{X: x, Y: float64(r.WorkingSet-r.Guest) / mib})
		own.points = append(own.points, plotter.XY{X: x, Y: float64(r.LauncherPSS) / mib})
	}
	p := newPlot("Memory per VM besides guest RAM (this machine, QEMU TCG)", "VMIs Running", "MiB")
	if err := addLines(p, []line{ws, own}); err != nil {
		return nil, err
	}
	if err := hline(p, []reference{{fmt.Sprintf("KubeVirt reserve per VM besides guest RAM, %d MiB", kubevirtReserveMiB), kubevirtReserveMiB}}, p.X.Min, p.X.Max); err != nil {
		return nil, err
	}
	headroom(p, 3)
	return p, nil
}

func controlPlane(results, title, unit string, value func(series.ControlPlane) float64) (*plot.Plot, error) {
	rows, err := read(results, series.ControlPlaneFile, series.ReadControlPlane)
	var missing *missingError
	if errors.As(err, &missing) {
		// Until a run has written the series: the table's figures, as rounded there.
		rows, err = read(results, series.ControlPlaneTableFile, series.ReadControlPlaneSummary)
		title += "\nsummary figures from control-plane.md (as rounded there)"
	}
	if err != nil {
		return nil, err
	}
	var lines []line
	idx := map[string]int{}
	for _, r := range rows {
		i, ok := idx[r.Component]
		if !ok {
			i = len(lines)
			idx[r.Component] = i
			lines = append(lines, line{label: r.Component})
		}
		lines[i].points = append(lines[i].points, plotter.XY{X: float64(r.Running), Y: value(r)})
	}
	p := newPlot(title, "VMIs Running", unit)
	if err := addLines(p, lines); err != nil {
		return nil, err
	}
	headroom(p, len(lines))
	return p, nil
}

// controlPlaneCPU draws the controller's and the node agent's CPU against VMIs Running.
func controlPlaneCPU(results string) (*plot.Plot, error) {
	return controlPlane(results, "Control-plane CPU, mean over the measuring window (this machine)", "cores",
		func(r series.ControlPlane) float64 { return r.CPU })
}

// controlPlaneMemory draws their working sets against VMIs Running.
func controlPlaneMemory(results string) (*plot.Plot, error) {
	return controlPlane(results, "Control-plane working set (this machine)", "MiB",
		func(r series.ControlPlane) float64 { return float64(r.WorkingSet) / mib })
}

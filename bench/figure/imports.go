package figure

import (
	"fmt"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/slimvirt/slimvirt/bench/series"
)

// csiImport draws the import throughput of each way to a disk from a served image, per format:
// slimvirt's import against curl alone, curl + fsync, and curl + qemu-img convert (+ fsync).
// csi.txt holds the best of a few runs per way, so the plot says it shows summary figures.
func csiImport(results string) (*plot.Plot, error) {
	rows, err := read(results, series.CSIFile, series.ReadImports)
	if err != nil {
		return nil, err
	}
	p := newPlot(fmt.Sprintf("Disk import throughput: summary figures from csi.txt\n(%s)", rows[0].Heading), "MiB/s", "")
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.X.Min = 0
	var names []string
	legend := map[bool]bool{}
	// Top to bottom in the file's order: nominal Y counts from the bottom.
	for i := range rows {
		r := rows[len(rows)-1-i]
		names = append(names, r.Format+": "+r.Method)
		ours := strings.HasPrefix(r.Method, "slimvirt")
		b, err := plotter.NewBarChart(plotter.Values{r.MiBps}, vg.Points(14))
		if err != nil {
			return nil, fmt.Errorf("bar %s: %w", names[i], err)
		}
		b.Horizontal = true
		b.XMin = float64(i)
		b.Color = plotutil.Color(2)
		if ours {
			b.Color = plotutil.Color(0)
		}
		b.LineStyle.Width = 0
		p.Add(b)
		if !legend[ours] {
			legend[ours] = true
			label := "baseline (curl, qemu-img)"
			if ours {
				label = "slimvirt import (incl. fsync)"
			}
			p.Legend.Add(label, b)
		}
	}
	p.NominalY(names...)
	// Room on the right for the legend.
	top := 0.0
	for _, r := range rows {
		top = max(top, r.MiBps)
	}
	p.X.Max = top * 1.8
	return p, nil
}

package figure

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// reference is a published figure drawn as a horizontal line.
type reference struct {
	label string
	y     float64
}

// kubevirtDensity holds KubeVirt's published P50/P95 of creation to Running in its density
// test (100 VMIs created 100 ms apart, on KVM).
func kubevirtDensity() []reference {
	return []reference{
		{"KubeVirt density test P50 22.6 s (PR #14876)", 22.6},
		{"KubeVirt density test P95 29.7 s (PR #14876)", 29.7},
		{"KubeVirt density test P50 15 s (PR #8541)", 15},
		{"KubeVirt density test P95 19.5 s (PR #8541)", 19.5},
	}
}

// kubevirtReserveMiB is the memory KubeVirt reserves per VM besides guest RAM (the fixed part
// of its launcher overhead).
const kubevirtReserveMiB = 240

const mib = 1 << 20

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(6), -vg.Points(4)
	p.Add(plotter.NewGrid())
	return p
}

// hline draws refs as dashed horizontal lines from x0 to x1, with legend entries.
func hline(p *plot.Plot, refs []reference, x0, x1 float64) error {
	for i, r := range refs {
		l, err := plotter.NewLine(plotter.XYs{{X: x0, Y: r.y}, {X: x1, Y: r.y}})
		if err != nil {
			return fmt.Errorf("reference line %s: %w", r.label, err)
		}
		l.Color = color.Gray{Y: uint8(60 + 40*(i/2))}
		l.Dashes = plotutil.Dashes(1 + i%2)
		l.Width = vg.Points(1)
		p.Add(l)
		p.Legend.Add(r.label, l)
	}
	return nil
}

// swatch is a legend entry for plotters that draw none (box plots).
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(s.c, c.ClipPolygonXY([]vg.Point{
		{X: c.Min.X, Y: c.Min.Y}, {X: c.Min.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Min.Y},
	}))
}

// box adds a box plot of vs at x, in colour i.
func box(p *plot.Plot, vs []float64, x float64, i int) error {
	b, err := plotter.NewBoxPlot(vg.Points(18), x, plotter.Values(vs))
	if err != nil {
		return fmt.Errorf("box plot at %v: %w", x, err)
	}
	b.FillColor = plotutil.Color(i)
	b.GlyphStyle.Radius = vg.Points(1.5)
	p.Add(b)
	return nil
}

// perVM fixes the X axis of plots against VMIs Running to the range the benchmarks aim at
// (0 to 150), or wider when the data is.
func perVM(p *plot.Plot, maxX float64) {
	p.X.Min, p.X.Max = 0, 150
	if maxX > 150 {
		p.X.Max = maxX
	}
	p.Y.Min = 0
}

// headroom leaves room above the data for the legend, which sits at the top: about a twentieth
// of the plot's height per entry. (plot.Add has already stretched the axes over the data.)
func headroom(p *plot.Plot, entries int) {
	free := 1 - 0.04 - 0.05*float64(entries)
	p.Y.Max = p.Y.Min + (p.Y.Max-p.Y.Min)/max(free, 0.5)
}

// marks is one summary figure (a percentile) per category, drawn as markers dx off the
// category's tick; a zero is a figure the table does not have.
type marks struct {
	label        string
	dx           float64
	color, shape int
	y            []float64
}

// addMarks draws ms over the categories names.
func addMarks(p *plot.Plot, names []string, ms []marks) error {
	for _, m := range ms {
		var xys plotter.XYs
		for i, y := range m.y {
			if y > 0 {
				xys = append(xys, plotter.XY{X: float64(i) + m.dx, Y: y})
			}
		}
		if len(xys) == 0 {
			continue
		}
		s, err := plotter.NewScatter(xys)
		if err != nil {
			return fmt.Errorf("%s: %w", m.label, err)
		}
		s.Color = plotutil.Color(m.color)
		s.Shape = plotutil.Shape(m.shape)
		s.Radius = vg.Points(4)
		p.Add(s)
		p.Legend.Add(m.label, s)
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max, p.Y.Min = -0.5, float64(len(names))-0.5, 0
	return nil
}

package figure

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/slimvirt/slimvirt/bench/series"
)

// startLatency draws the distribution of create to Running and create to guest lease for each
// shape of start (one at a time, batches of 10, 50, 100, ...), against KubeVirt's density test.
func startLatency(results string) (*plot.Plot, error) {
	rows, err := read(results, series.StartLatencyFile, series.ReadStartLatency)
	var missing *missingError
	if errors.As(err, &missing) {
		table, err := read(results, series.StartLatencyTableFile, series.ReadStartLatencySummary)
		if err != nil {
			return nil, err
		}
		return startLatencySummary(table)
	}
	if err != nil {
		return nil, err
	}
	type group struct {
		shape           string
		together        int
		running, leased []float64
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, r := range rows {
		k := fmt.Sprintf("%s/%d", r.Shape, r.Together)
		g := byKey[k]
		if g == nil {
			g = &group{shape: r.Shape, together: r.Together}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.running = append(g.running, r.Running.Seconds())
		g.leased = append(g.leased, r.Lease.Seconds())
	}
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].together < groups[j].together })
	p := newPlot("Start latency per VMI, from kubectl apply (this machine, QEMU TCG)", "", "seconds")
	p.Y.Min = 0
	var names []string
	for i, g := range groups {
		name := fmt.Sprintf("%s of %d (n=%d)", g.shape, g.together, len(g.running))
		if g.shape == series.ShapeSingle {
			name = fmt.Sprintf("one at a time (n=%d)", len(g.running))
		}
		names = append(names, name)
		if err := box(p, g.running, float64(i)-0.2, 0); err != nil {
			return nil, err
		}
		if err := box(p, g.leased, float64(i)+0.2, 1); err != nil {
			return nil, err
		}
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.5, float64(len(groups))-0.5
	p.Legend.Add("to phase Running", swatch{plotutil.Color(0)})
	p.Legend.Add("to guest DHCP lease", swatch{plotutil.Color(1)})
	refs := kubevirtDensity()
	if err := hline(p, refs, -0.5, float64(len(groups))-0.5); err != nil {
		return nil, err
	}
	headroom(p, 2+len(refs))
	return p, nil
}

// cniLatency draws ADD and DEL latency per chain: the distribution of every run from cni.tsv,
// or, until a run has written that, the median and P95 of cni.txt's table.
func cniLatency(results string) (*plot.Plot, error) {
	samples, err := read(results, series.CNIFile, series.ReadCNI)
	if err == nil {
		return cniSamples(samples)
	}
	var missing *missingError
	if !errors.As(err, &missing) {
		return nil, err
	}
	table, err := read(results, series.CNITableFile, series.ReadCNISummary)
	if err != nil {
		return nil, err
	}
	return cniSummary(table)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func cniSamples(samples []series.CNISample) (*plot.Plot, error) {
	var chains []string
	add, del := map[string][]float64{}, map[string][]float64{}
	for _, s := range samples {
		if _, ok := add[s.Chain]; !ok {
			chains = append(chains, s.Chain)
		}
		add[s.Chain] = append(add[s.Chain], ms(s.Add))
		del[s.Chain] = append(del[s.Chain], ms(s.Del))
	}
	p := newPlot("CNI chain latency, every run (launcher pod, bridge binding)", "", "milliseconds")
	p.Y.Min = 0
	var names []string
	for i, c := range chains {
		names = append(names, fmt.Sprintf("%s (n=%d)", c, len(add[c])))
		if err := box(p, add[c], float64(i)-0.2, 0); err != nil {
			return nil, err
		}
		if err := box(p, del[c], float64(i)+0.2, 1); err != nil {
			return nil, err
		}
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.5, float64(len(chains))-0.5
	p.Legend.Add("ADD", swatch{plotutil.Color(0)})
	p.Legend.Add("DEL", swatch{plotutil.Color(1)})
	headroom(p, 2)
	return p, nil
}

func cniSummary(rows []series.CNISummary) (*plot.Plot, error) {
	p := newPlot("CNI chain latency: summary figures (median, P95) from cni.txt, not every run\n"+rows[0].Heading, "", "milliseconds")
	p.Title.TextStyle.Font.Size = vg.Points(9)
	var names []string
	m := []marks{{label: "ADD median", dx: -0.2}, {label: "ADD P95", dx: -0.2, shape: 2},
		{label: "DEL median", dx: 0.2, color: 1}, {label: "DEL P95", dx: 0.2, color: 1, shape: 2}}
	for _, r := range rows {
		names = append(names, r.Chain)
		for i, d := range []time.Duration{r.AddP50, r.AddP95, r.DelP50, r.DelP95} {
			m[i].y = append(m[i].y, ms(d))
		}
	}
	if err := addMarks(p, names, m); err != nil {
		return nil, err
	}
	headroom(p, len(m))
	return p, nil
}

// startLatencySummary draws start-latency.md's percentiles, until a run has written every
// VMI's times. Its KubeVirt row is drawn as the reference lines.
func startLatencySummary(rows []series.StartLatencySummary) (*plot.Plot, error) {
	p := newPlot("Start latency: summary figures (P50, P95) from start-latency.md, not every VMI\n"+
		"from kubectl apply (this machine, QEMU TCG)", "", "seconds")
	p.Title.TextStyle.Font.Size = vg.Points(10)
	var names []string
	m := []marks{{label: "to Running, P50", dx: -0.15}, {label: "to Running, P95", dx: -0.15, shape: 2},
		{label: "to guest lease, P50", dx: 0.15, color: 1}, {label: "to guest lease, P95", dx: 0.15, color: 1, shape: 2}}
	for _, r := range rows {
		if strings.HasPrefix(r.Label, "KubeVirt") {
			continue
		}
		names = append(names, fmt.Sprintf("%s (n=%d)", r.Label, r.N))
		for i, d := range []time.Duration{r.RunningP50, r.RunningP95, r.LeaseP50, r.LeaseP95} {
			m[i].y = append(m[i].y, d.Seconds())
		}
	}
	if len(names) == 0 {
		return nil, errors.New("start-latency.md has no slimvirt rows")
	}
	if err := addMarks(p, names, m); err != nil {
		return nil, err
	}
	refs := kubevirtDensity()
	if err := hline(p, refs, -0.5, float64(len(names))-0.5); err != nil {
		return nil, err
	}
	headroom(p, len(m)+len(refs))
	return p, nil
}

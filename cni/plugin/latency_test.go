package plugin_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	benchseries "github.com/slimvirt/slimvirt/bench/series"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

// TestLatency measures ADD and DEL of the reference chain with and without slimvirt, side by
// side (alternating, same machine, same moment), and prints a markdown table. `make bench-cni`
// runs it; it is skipped otherwise.
func TestLatency(t *testing.T) {
	if os.Getenv("SLIMVIRT_CNI_BENCH") == "" {
		t.Skip("benchmark: set SLIMVIRT_CNI_BENCH=1 (make bench-cni)")
	}
	const runs = 100
	c := nettest.NewCluster(t)
	without := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry()))
	with := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	type series struct{ add, del []time.Duration }
	var base, ours series
	podA, podB := nettest.NewNS(t, "pod"), nettest.NewNS(t, "pod")
	measure := func(chain *nettest.Chain, p nettest.Pod, s *series) {
		start := time.Now()
		if _, err := chain.Add(p); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		s.add = append(s.add, time.Since(start))
		start = time.Now()
		if err := chain.Del(p); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		s.del = append(s.del, time.Since(start))
	}
	for i := 0; i < runs; i++ {
		measure(without, launcherPod(t, c.Key, fmt.Sprintf("base-%d", i), podA, bridgeIfaces()), &base)
		measure(with, launcherPod(t, c.Key, fmt.Sprintf("virt-launcher-%d", i), podB, bridgeIfaces()), &ours)
	}
	q := func(d []time.Duration, p float64) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[int(p*float64(len(s)-1)+0.5)]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	fmt.Printf("\nCNI chain latency, %d runs each, alternating (bridge + host-local, launcher pod with the bridge binding)\n\n", runs)
	fmt.Println("| chain | ADD median | ADD p95 | DEL median | DEL p95 |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Printf("| bridge | %s | %s | %s | %s |\n", ms(q(base.add, .5)), ms(q(base.add, .95)), ms(q(base.del, .5)), ms(q(base.del, .95)))
	fmt.Printf("| bridge + slimvirt | %s | %s | %s | %s |\n", ms(q(ours.add, .5)), ms(q(ours.add, .95)), ms(q(ours.del, .5)), ms(q(ours.del, .95)))
	addCost := q(ours.add, .5) - q(base.add, .5)
	fmt.Printf("| slimvirt adds | %s | %s | %s | %s |\n\n", ms(addCost), ms(q(ours.add, .95)-q(base.add, .95)),
		ms(q(ours.del, .5)-q(base.del, .5)), ms(q(ours.del, .95)-q(base.del, .95)))
	// Every run, in the order they alternated, for the plot of their distribution (make
	// bench-cni runs this from cni/plugin).
	var samples []benchseries.CNISample
	for i := range base.add {
		samples = append(samples,
			benchseries.CNISample{Chain: "bridge", Run: i, Add: base.add[i], Del: base.del[i]},
			benchseries.CNISample{Chain: "bridge + slimvirt", Run: i, Add: ours.add[i], Del: ours.del[i]})
	}
	if err := benchseries.WriteCNI(filepath.Join("..", "..", "bench", "results", benchseries.CNIFile), samples); err != nil {
		t.Error(err)
	}
	if addCost > 25*time.Millisecond {
		t.Errorf("slimvirt adds %s to ADD (median), target under 25 ms", addCost)
	}
}

// Package vmimetrics exports per-VM metrics in Prometheus format: each scrape asks every
// launcher on the node for its domain's statistics (CPU time, memory, disk and network I/O,
// libvirt's domain state) over its control socket. The names follow KubeVirt's
// kubevirt_vmi_* metrics with the slimvirt_ prefix.
package vmimetrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
	"github.com/slimvirt/slimvirt/runtime/control"
)

// Timeout bounds one launcher's answer during a scrape.
const Timeout = 2 * time.Second

// parallel is how many launchers are asked at once during a scrape.
const parallel = 8

var vmiLabels = []string{"namespace", "name", "node"}

func desc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc("slimvirt_vmi_"+name, help, append(append([]string{}, vmiLabels...), extra...), nil)
}

var (
	descInfo       = desc("info", "A VMI whose launcher answered on this node, with libvirt's domain state (running, paused, ...).", "state")
	descCPU        = desc("cpu_usage_seconds_total", "CPU time the guest has used.")
	descVCPUs      = desc("vcpus", "Virtual CPUs of the guest.")
	descMemory     = desc("memory_domain_bytes", "Memory given to the guest.")
	descRSS        = desc("memory_resident_bytes", "Resident memory of the guest's QEMU process.")
	descReadBytes  = desc("storage_read_traffic_bytes_total", "Bytes the guest read from a disk.", "drive")
	descWriteBytes = desc("storage_write_traffic_bytes_total", "Bytes the guest wrote to a disk.", "drive")
	descReadOps    = desc("storage_iops_read_total", "Read requests the guest made to a disk.", "drive")
	descWriteOps   = desc("storage_iops_write_total", "Write requests the guest made to a disk.", "drive")
	descFlushOps   = desc("storage_flush_requests_total", "Flush requests the guest made to a disk.", "drive")
	descRxBytes    = desc("network_receive_bytes_total", "Bytes the guest received on an interface.", "interface")
	descTxBytes    = desc("network_transmit_bytes_total", "Bytes the guest sent on an interface.", "interface")
	descRxPackets  = desc("network_receive_packets_total", "Packets the guest received on an interface.", "interface")
	descTxPackets  = desc("network_transmit_packets_total", "Packets the guest sent on an interface.", "interface")
	descRxErrors   = desc("network_receive_errors_total", "Receive errors on an interface.", "interface")
	descTxErrors   = desc("network_transmit_errors_total", "Transmit errors on an interface.", "interface")
	descRxDropped  = desc("network_receive_packets_dropped_total", "Received packets dropped on an interface.", "interface")
	descTxDropped  = desc("network_transmit_packets_dropped_total", "Sent packets dropped on an interface.", "interface")
	descScrapeErr  = prometheus.NewDesc("slimvirt_node_launcher_scrape_errors", "Launchers on this node that did not answer the last scrape.", []string{"node"}, nil)

	allDescs = []*prometheus.Desc{descInfo, descCPU, descVCPUs, descMemory, descRSS, descReadBytes, descWriteBytes,
		descReadOps, descWriteOps, descFlushOps, descRxBytes, descTxBytes, descRxPackets, descTxPackets,
		descRxErrors, descTxErrors, descRxDropped, descTxDropped, descScrapeErr}
)

// Source lists the launchers to ask: only pods their VMI names as its launcher
// (launcherwatch.Watcher.List), so that a pod merely labelled as one is never asked and never
// speaks for a VMI.
type Source interface {
	List() []launcherwatch.Launcher
}

// Collector is a prometheus.Collector for the VMIs of one node.
type Collector struct {
	Source Source
	Node   string
	Log    *slog.Logger
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect asks each launcher for its stats; one that does not answer (still starting, gone)
// is left out of this scrape and counted in slimvirt_node_launcher_scrape_errors.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ls := c.Source.List()
	// One VMI's series twice would fail the whole scrape; a VMI has one launcher, but keep
	// the first should two ever claim it.
	seen := map[[2]string]bool{}
	ls = slices.DeleteFunc(ls, func(l launcherwatch.Launcher) bool {
		k := [2]string{l.Pod.Namespace, l.VMI}
		dup := seen[k]
		seen[k] = true
		return dup
	})
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for _, l := range ls {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			st, err := Stats(context.Background(), l)
			if err != nil {
				c.Log.Debug("launcher did not give its stats", "pod", l.Pod.Namespace+"/"+l.Pod.Name, "err", err)
				mu.Lock()
				failed++
				mu.Unlock()
				return
			}
			c.emit(ch, l, st)
		}()
	}
	wg.Wait()
	ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, float64(failed), c.Node)
}

// Stats asks one launcher for its domain's statistics, within Timeout.
func Stats(ctx context.Context, l launcherwatch.Launcher) (launcherpod.DomainStats, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	out, err := l.Call(ctx, control.Stats)
	if err != nil {
		return launcherpod.DomainStats{}, err
	}
	st, err := ParseStats([]byte(out))
	if err != nil {
		return launcherpod.DomainStats{}, fmt.Errorf("stats of %s/%s: %w", l.Pod.Namespace, l.Pod.Name, err)
	}
	return st, nil
}

// maxDevices bounds the disks, and the interfaces, of one reply: each becomes a handful of
// series in every scrape, and whoever answers on the control socket chooses how many.
const maxDevices = 256

// maxName bounds a disk's or an interface's name (a VMI's names are DNS labels).
const maxName = 253

// domainStates are libvirt's domain states as the launcher names them.
var domainStates = []string{"running", "paused", "shutoff", "crashed", "pmsuspended", "blocked", "shutdown", "nostate"}

// ParseStats parses a stats reply: one JSON object with a libvirt domain state, at most
// maxDevices disks and interfaces, each with a distinct non-empty name. Anything else is
// refused: a duplicate name would make the whole scrape fail, and an endless list would fill
// the agent's memory.
func ParseStats(b []byte) (launcherpod.DomainStats, error) {
	var st launcherpod.DomainStats
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&st); err != nil {
		return launcherpod.DomainStats{}, fmt.Errorf("parse stats: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return launcherpod.DomainStats{}, errors.New("parse stats: data after the JSON object")
	}
	if !slices.Contains(domainStates, st.State) {
		return launcherpod.DomainStats{}, fmt.Errorf("parse stats: domain state %q is not one of %v", st.State, domainStates)
	}
	if err := distinctNames("disk", st.Disks, func(d launcherpod.DiskStats) string { return d.Name }); err != nil {
		return launcherpod.DomainStats{}, err
	}
	if err := distinctNames("interface", st.Interfaces, func(n launcherpod.NICStats) string { return n.Name }); err != nil {
		return launcherpod.DomainStats{}, err
	}
	return st, nil
}

func distinctNames[T any](what string, items []T, name func(T) string) error {
	if len(items) > maxDevices {
		return fmt.Errorf("parse stats: %d %ss, more than %d", len(items), what, maxDevices)
	}
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		n := name(it)
		if n == "" || len(n) > maxName || !utf8.ValidString(n) {
			return fmt.Errorf("parse stats: %s name %.64q is empty, too long or not UTF-8", what, n)
		}
		if seen[n] {
			return fmt.Errorf("parse stats: %s %q twice", what, n)
		}
		seen[n] = true
	}
	return nil
}

func (c *Collector) emit(ch chan<- prometheus.Metric, l launcherwatch.Launcher, st launcherpod.DomainStats) {
	base := []string{l.Pod.Namespace, l.VMI, c.Node}
	put := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, append(append([]string{}, base...), extra...)...)
	}
	put(descInfo, prometheus.GaugeValue, 1, st.State)
	put(descCPU, prometheus.CounterValue, float64(st.CPUTimeNanos)/1e9)
	put(descVCPUs, prometheus.GaugeValue, float64(st.VCPUs))
	put(descMemory, prometheus.GaugeValue, float64(st.MemoryBytes))
	if st.MemoryRSSBytes > 0 {
		put(descRSS, prometheus.GaugeValue, float64(st.MemoryRSSBytes))
	}
	for _, d := range st.Disks {
		put(descReadBytes, prometheus.CounterValue, float64(d.ReadBytes), d.Name)
		put(descWriteBytes, prometheus.CounterValue, float64(d.WriteBytes), d.Name)
		put(descReadOps, prometheus.CounterValue, float64(d.ReadOps), d.Name)
		put(descWriteOps, prometheus.CounterValue, float64(d.WriteOps), d.Name)
		put(descFlushOps, prometheus.CounterValue, float64(d.FlushOps), d.Name)
	}
	for _, n := range st.Interfaces {
		put(descRxBytes, prometheus.CounterValue, float64(n.RxBytes), n.Name)
		put(descTxBytes, prometheus.CounterValue, float64(n.TxBytes), n.Name)
		put(descRxPackets, prometheus.CounterValue, float64(n.RxPackets), n.Name)
		put(descTxPackets, prometheus.CounterValue, float64(n.TxPackets), n.Name)
		put(descRxErrors, prometheus.CounterValue, float64(n.RxErrors), n.Name)
		put(descTxErrors, prometheus.CounterValue, float64(n.TxErrors), n.Name)
		put(descRxDropped, prometheus.CounterValue, float64(n.RxDropped), n.Name)
		put(descTxDropped, prometheus.CounterValue, float64(n.TxDropped), n.Name)
	}
}

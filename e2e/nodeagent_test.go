//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// nodeMetrics is what the node agents serve at /metrics, read through the API server's
// proxy to the slimvirt-node-metrics Service.
func nodeMetrics(t *testing.T) string {
	t.Helper()
	out, err := kubectl(t, "get", "--raw", "/api/v1/namespaces/slimvirt/services/slimvirt-node-metrics:9650/proxy/metrics")
	if err != nil {
		t.Fatalf("scrape the node agent: %v\n%s", err, out)
	}
	return out
}

// metricValue is the value of the sample of metric name carrying all of labels, or -1.
func metricValue(metrics, name string, labels ...string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		set, value, ok := strings.Cut(strings.TrimPrefix(line, name+"{"), "} ")
		if !ok || !strings.HasPrefix(line, name+"{") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && slices.Contains(strings.Split(set, ","), l)
		}
		if v, err := strconv.ParseFloat(value, 64); all && err == nil {
			return v
		}
	}
	return -1
}

func waitMetric(t *testing.T, sample string) {
	t.Helper()
	eventually(t, 30*time.Second, "metric "+sample, func() (bool, error) {
		return strings.Contains(nodeMetrics(t), sample), nil
	})
}

// waitPaused waits for the VMI's Paused condition to be there (true) or gone (false).
func waitPaused(t *testing.T, ns, name string, paused bool) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("VMI %s Paused=%v", name, paused), func() (bool, error) {
		vmi, err := getVMI(t, ns, name)
		if err != nil {
			return false, err
		}
		c := vmi.Status.Condition(v1alpha1.VMIPaused)
		if paused {
			return c.IsTrue() && c.Reason == "PausedByUser" && vmi.Status.Phase == v1alpha1.Running, nil
		}
		return c == nil, nil
	})
}

// TestNodeAgentReportsVMI: the node agent puts the guest's MAC and address, its agent's
// connection and OS on the VMI (and slimctl guestinfo reads the agent), and serves its CPU, memory, disk and network counters, which move as the guest runs, and drops
// them when the VMI is gone.
func TestNodeAgentReportsVMI(t *testing.T) {
	const ns, name = "default", "agent-report"
	dir := t.TempDir()
	file := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(file, []byte(strings.Replace(fmt.Sprintf(benchVMI, name), "bench: start-latency", "test: node-agent", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _ = kubectl(t, "delete", "-f", file, "--ignore-not-found", "--wait=true")
	mustKubectl(t, "apply", "-f", file)
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "-f", file, "--ignore-not-found", "--wait=true", "--timeout=90s") })
	vmi := waitVMIRunning(t, ns, name, "")
	vmiLog(t, vmi, "SLIMVIRT-GUEST-UP")

	out := mustKubectl(t, "-n", ns, "exec", vmi.Status.LauncherPod, "-c", "compute", "--", "/usr/bin/slimvirt-launcher", "ctl", "status")
	var st launcherpod.Status
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &st); err != nil {
		t.Fatalf("launcher status %q: %v", out, err)
	}
	vmi, err := getVMI(t, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(vmi.Status.Interfaces) == 0 {
		t.Fatalf("no interfaces in the status of %s", name)
	}
	iface := vmi.Status.Interfaces[0]
	if st.GuestMAC == "" || iface.MAC != st.GuestMAC || iface.IP == "" || iface.IP != st.GuestIP {
		t.Fatalf("VMI interface %+v; the launcher's guest has MAC %q and leased %q", iface, st.GuestMAC, st.GuestIP)
	}
	t.Logf("VMI %s: interface %s MAC %s IP %s", name, iface.Name, iface.MAC, iface.IP)

	// The test guest runs a guest agent: the VMI says it is connected and what the guest runs,
	// and slimctl guestinfo asks it.
	eventually(t, 2*time.Minute, "AgentConnected and the guest's OS on "+name, func() (bool, error) {
		v, err := getVMI(t, ns, name)
		if err != nil {
			return false, err
		}
		return v.Status.Condition(v1alpha1.VMIAgentConnected).IsTrue() && v.Status.GuestOSInfo != nil, nil
	})
	vmi, _ = getVMI(t, ns, name)
	if os := vmi.Status.GuestOSInfo; os.Name != "slimvirt test guest" || os.KernelRelease == "" {
		t.Errorf("guestOSInfo = %+v, want the test guest's name and kernel", os)
	}
	var info launcherpod.GuestInfo
	out = mustSlimctl(t, "guestinfo", "vmi", name)
	if i, j := strings.Index(out, "{"), strings.LastIndex(out, "}"); i >= 0 && j > i {
		out = out[i : j+1] // the JSON, without whatever kubectl's client logged around it
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("slimctl guestinfo printed %q: %v", out, err)
	}
	if info.OS == nil || info.OS.KernelRelease != vmi.Status.GuestOSInfo.KernelRelease || info.Hostname == "" {
		t.Errorf("slimctl guestinfo = %+v; want the kernel %q and a hostname", info, vmi.Status.GuestOSInfo.KernelRelease)
	}
	t.Logf("guest agent: %s, kernel %s, hostname %s", vmi.Status.GuestOSInfo.Name, info.OS.KernelRelease, info.Hostname)

	id := []string{fmt.Sprintf("name=%q", name), fmt.Sprintf("namespace=%q", ns), fmt.Sprintf("node=%q", vmi.Status.NodeName)}
	first := nodeMetrics(t)
	if v := metricValue(first, "slimvirt_vmi_memory_domain_bytes", id...); v != 128<<20 {
		t.Errorf("memory_domain_bytes = %v, want the guest's 128 MiB", v)
	}
	if v := metricValue(first, "slimvirt_vmi_storage_read_traffic_bytes_total", append(id, `drive="containerdisk"`)...); v <= 0 {
		t.Errorf("the guest booted from containerdisk but read %v bytes of it", v)
	}
	if v := metricValue(first, "slimvirt_vmi_network_transmit_bytes_total", append(id, `interface="default"`)...); v <= 0 {
		t.Errorf("the guest asked for its lease but sent %v bytes on interface default", v)
	}
	cpu1 := metricValue(first, "slimvirt_vmi_cpu_usage_seconds_total", id...)
	var cpu2 float64
	eventually(t, 30*time.Second, "the guest's CPU time to grow", func() (bool, error) {
		cpu2 = metricValue(nodeMetrics(t), "slimvirt_vmi_cpu_usage_seconds_total", id...)
		return cpu1 > 0 && cpu2 > cpu1, nil
	})
	t.Logf("cpu_usage_seconds_total %.2f -> %.2f", cpu1, cpu2)

	mustKubectl(t, "delete", "-f", file, "--wait=true", "--timeout=90s")
	eventually(t, 30*time.Second, "the VMI's metrics gone", func() (bool, error) {
		return metricValue(nodeMetrics(t), "slimvirt_vmi_info", id...) == -1, nil
	})
}

//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/slimctl/subresource"
)

// waitAPIService waits until the aggregator reports the subresources API Available.
func waitAPIService(t *testing.T) {
	t.Helper()
	eventually(t, 3*time.Minute, "APIService "+subresources.APIServiceName+" Available", func() (bool, error) {
		out, err := kubectl(t, "get", "apiservice", subresources.APIServiceName,
			"-o", `jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}`)
		return strings.HasPrefix(out, "True"), fmt.Errorf("%s %w", out, err)
	})
}

// subClient is the aggregated API's client acting as a tenant account.
func subClient(t *testing.T, tn *tenant) *subresource.Client {
	t.Helper()
	c, err := subresource.New(tn.config)
	if err != nil {
		t.Fatalf("subresource client: %v", err)
	}
	return c
}

// readUntil reads r until want appears or the deadline passes; it returns what it read.
func readUntil(t *testing.T, r io.Reader, want string, timeout time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	var mu sync.Mutex
	var seen strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			mu.Lock()
			seen.Write(buf[:n])
			s := seen.String()
			mu.Unlock()
			if strings.Contains(s, want) {
				got <- s
				return
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(timeout):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no %q within %s; read %q", want, timeout, seen.String())
		return ""
	}
}

// consoleLatency opens the console and measures the request to the open websocket and to the
// first byte the guest sends back after a newline (its prompt).
func consoleLatency(t *testing.T, c *subresource.Client, ns, name string) (open, firstByte time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	conn, err := c.Dial(ctx, subresources.VMIs, ns, name, subresources.Console)
	if err != nil {
		t.Fatalf("open console: %v", err)
	}
	defer conn.Close()
	open = time.Since(start)
	if _, err := io.WriteString(conn, "\n"); err != nil {
		t.Fatalf("write to the console: %v", err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(conn, b); err != nil {
		t.Fatalf("read the console: %v", err)
	}
	return open, time.Since(start)
}

// TestSubresourcesTenant: a namespace editor reaches its VMI's serial console and screen and
// takes power actions through the aggregated API with its own token (no pods/exec); a viewer
// of the same namespace may read the guest's OS info but opens no console or screen and takes
// no power action; an editor of another namespace reaches nothing; a VM that is not running
// gets a clear error.
func TestSubresourcesTenant(t *testing.T) {
	waitAPIService(t)
	tn := newTenant(t, "sub-edit", "")
	viewer := tenantAccount(t, tn.ns, "viewer", "view")
	outsider := newTenant(t, "sub-other", "")
	const name = "subvm"
	tenantVMIRunning(t, tn, name, "")
	eventually(t, 4*time.Minute, name+" guest up", func() (bool, error) {
		vmi, err := getVMI(t, tn.ns, name)
		if err != nil {
			return false, err
		}
		out, err := kubectl(t, "-n", tn.ns, "logs", vmi.Status.LauncherPod, "-c", "compute")
		return strings.Contains(out, "SLIMVIRT-GUEST-UP"), err
	})
	ed := subClient(t, tn)
	ctx := context.Background()

	t.Run("console", func(t *testing.T) {
		var opens, firsts []time.Duration
		for range 5 {
			o, f := consoleLatency(t, ed, tn.ns, name)
			opens, firsts = append(opens, o), append(firsts, f)
		}
		sort.Slice(opens, func(i, j int) bool { return opens[i] < opens[j] })
		sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
		t.Logf("console through the aggregated API, 5 opens: request to open websocket min %v median %v max %v; to the first byte after a newline min %v median %v max %v",
			opens[0], opens[2], opens[4], firsts[0], firsts[2], firsts[4])

		// Two viewers at once: what one types, both see answered.
		a, err := ed.Dial(ctx, subresources.VMIs, tn.ns, name, subresources.Console)
		if err != nil {
			t.Fatalf("first console: %v", err)
		}
		defer a.Close()
		b, err := ed.Dial(ctx, subresources.VMIs, tn.ns, name, subresources.Console)
		if err != nil {
			t.Fatalf("second console: %v", err)
		}
		defer b.Close()
		if _, err := io.WriteString(a, "echo SUB-$((6*7))\n"); err != nil {
			t.Fatal(err)
		}
		readUntil(t, a, "SUB-42", time.Minute)
		readUntil(t, b, "SUB-42", time.Minute)
	})

	t.Run("vnc", func(t *testing.T) {
		for i := range 2 {
			conn, err := ed.Dial(ctx, subresources.VMIs, tn.ns, name, subresources.VNC)
			if err != nil {
				t.Fatalf("vnc viewer %d: %v", i, err)
			}
			// Both viewers stay open together: closed when the subtest ends.
			t.Cleanup(func() { _ = conn.Close() })
			banner, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil || !strings.HasPrefix(banner, "RFB 003.") {
				t.Fatalf("vnc viewer %d: banner %q, %v", i, banner, err)
			}
		}
	})

	t.Run("power", func(t *testing.T) {
		if err := ed.Put(ctx, subresources.VMIs, tn.ns, name, subresources.Pause); err != nil {
			t.Fatalf("pause: %v", err)
		}
		waitPaused(t, tn.ns, name, true)
		if err := ed.Put(ctx, subresources.VMIs, tn.ns, name, subresources.Unpause); err != nil {
			t.Fatalf("unpause: %v", err)
		}
		waitPaused(t, tn.ns, name, false)
	})

	t.Run("web console", func(t *testing.T) { webConsoleOnCluster(t, tn, ed, name) })
	t.Run("in-cluster console", func(t *testing.T) { inClusterConsole(t, tn, viewer, name) })

	t.Run("viewer", func(t *testing.T) {
		vc := subClient(t, viewer)
		for _, sub := range []string{subresources.Console, subresources.VNC} {
			if conn, err := vc.Dial(ctx, subresources.VMIs, tn.ns, name, sub); err == nil {
				_ = conn.Close()
				t.Errorf("a viewer opened %s", sub)
			} else if !strings.Contains(strings.ToLower(err.Error()), "forbidden") {
				t.Errorf("a viewer's %s: %v, want forbidden", sub, err)
			}
		}
		for _, sub := range []string{subresources.Pause, subresources.SoftReboot} {
			if err := vc.Put(ctx, subresources.VMIs, tn.ns, name, sub); err == nil || !strings.Contains(strings.ToLower(err.Error()), "forbidden") {
				t.Errorf("a viewer's %s: %v, want forbidden", sub, err)
			}
		}
		if err := vc.Put(ctx, subresources.VMs, tn.ns, name, subresources.Stop); err == nil || !strings.Contains(strings.ToLower(err.Error()), "forbidden") {
			t.Errorf("a viewer's VM stop: %v, want forbidden", err)
		}
		// guestosinfo is a read: a viewer may; the test guest has no agent in this VMI, so
		// any answer but forbidden shows the request passed authorization.
		if _, err := vc.Get(ctx, subresources.VMIs, tn.ns, name, subresources.GuestOSInfo); err != nil && strings.Contains(strings.ToLower(err.Error()), "forbidden") {
			t.Errorf("a viewer's guestosinfo: %v", err)
		}
	})

	t.Run("other namespace", func(t *testing.T) {
		oc := subClient(t, outsider)
		if conn, err := oc.Dial(ctx, subresources.VMIs, tn.ns, name, subresources.Console); err == nil {
			_ = conn.Close()
			t.Error("an editor of another namespace opened the console")
		} else if !strings.Contains(strings.ToLower(err.Error()), "forbidden") {
			t.Errorf("another namespace's console: %v, want forbidden", err)
		}
		if err := oc.Put(ctx, subresources.VMIs, tn.ns, name, subresources.Pause); err == nil || !strings.Contains(strings.ToLower(err.Error()), "forbidden") {
			t.Errorf("another namespace's pause: %v, want forbidden", err)
		}
	})

	t.Run("not running", func(t *testing.T) {
		tn.apply(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachine
metadata: {name: halted}
spec:
  runStrategy: Halted
  template:
    spec:
%s`, indent(vmiSpecFor(name), "    ")))
		_, err := ed.Dial(ctx, subresources.VMIs, tn.ns, "halted", subresources.Console)
		if err == nil || !strings.Contains(err.Error(), "halted") || !strings.Contains(strings.ToLower(err.Error()), "not found") {
			t.Errorf("console of a stopped VM: %v, want a not-found error naming it", err)
		}
		if err := ed.Put(ctx, subresources.VMIs, tn.ns, "halted", subresources.Pause); err == nil || !strings.Contains(strings.ToLower(err.Error()), "not found") {
			t.Errorf("pause of a stopped VM: %v, want not found", err)
		}
		// start through the API: the VMI comes up; then stop takes it away again.
		if err := ed.Put(ctx, subresources.VMs, tn.ns, "halted", subresources.Start); err != nil {
			t.Fatalf("start: %v", err)
		}
		eventually(t, 6*time.Minute, "VMI halted Running after start", func() (bool, error) {
			vmi, err := getVMI(t, tn.ns, "halted")
			if err != nil {
				return false, err
			}
			return vmi.Status.Phase == "Running", nil
		})
		if err := ed.Put(ctx, subresources.VMs, tn.ns, "halted", subresources.Stop); err != nil {
			t.Fatalf("stop: %v", err)
		}
		eventually(t, 3*time.Minute, "VMI halted gone after stop", func() (bool, error) {
			_, err := getVMI(t, tn.ns, "halted")
			return err != nil && strings.Contains(err.Error(), "not found"), nil
		})
		if err := ed.Put(ctx, subresources.VMs, tn.ns, "halted", subresources.Migrate); err == nil {
			t.Error("migrate answered success, but this release has no live migration")
		} else {
			t.Logf("migrate: %v", err)
		}
	})
}

// vmiSpecFor is the spec of the tenant test VMI (hostileNetVMI) without its header.
func vmiSpecFor(name string) string {
	full := fmt.Sprintf(hostileNetVMI, name, "")
	_, spec, _ := strings.Cut(full, "spec:\n")
	return spec
}

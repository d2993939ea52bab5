//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStorageOnlineExpansion grows the PVC under a running VM's data disk: the guest sees the
// new size without a restart (the same boot, the same launcher pod), as KubeVirt's users
// expect of a PVC whose StorageClass allows expansion.
func TestStorageOnlineExpansion(t *testing.T) {
	storageNamespace(t)
	blankDV(t, "grow", "64Mi")
	// The guest prints the data disk's size in sectors every second; the console echoes the
	// script, so the marker is built at run time.
	script := "#!/bin/sh\n(while :; do echo \"SIZE\"\"-$(cat /sys/block/vdb/size)-\"; sleep 1; done) &\n"
	ud := "cloudInitNoCloud:\n      userData: |\n" + indent(script, "        ")
	manifest := vmiYAML("vm-grow", "containerdisk=containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}",
		"datadisk=dataVolume: {name: grow}", "cloudinitdisk="+ud)
	log := bootVMI(t, "vm-grow", manifest)
	vmi, err := getVMI(t, storageNS, "vm-grow")
	if err != nil {
		t.Fatal(err)
	}
	pod := vmi.Status.LauncherPod
	sizes := regexp.MustCompile(`SIZE-(\d+)-`)
	last := func(log string) int64 {
		m := sizes.FindAllStringSubmatch(log, -1)
		if len(m) == 0 {
			return -1
		}
		n, _ := strconv.ParseInt(m[len(m)-1][1], 10, 64)
		return n
	}
	eventually(t, time.Minute, "the guest's first size report", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "logs", pod, "-c", "compute")
		log = out
		return last(out) > 0, err
	})
	before := last(log)
	if before*512 > 64<<20 {
		t.Fatalf("the guest sees %d bytes of a 64Mi volume", before*512)
	}

	start := time.Now()
	mustKubectl(t, "-n", storageNS, "patch", "pvc", "grow", "--type=merge", "-p", `{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`)
	var after int64
	eventually(t, 2*time.Minute, "the guest sees its data disk grow to 128Mi", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "logs", pod, "-c", "compute")
		log = out
		after = last(out)
		return after*512 == 128<<20, fmt.Errorf("the guest sees %d sectors: %w", after, err)
	})
	t.Logf("the guest saw its data disk grow from %d to %d bytes %s after the PVC was patched", before*512, after*512, time.Since(start).Round(100*time.Millisecond))
	if n := strings.Count(log, "SLIMVIRT-GUEST-UP"); n != 1 {
		t.Errorf("the guest booted %d times, want once: the disk grew under a running guest", n)
	}
	out := mustKubectl(t, "-n", storageNS, "get", "pod", pod, "-o", `jsonpath={.status.containerStatuses[?(@.name=="compute")].restartCount}`)
	if strings.TrimSpace(out) != "0" {
		t.Errorf("launcher pod %s's compute container restarted %s times", pod, out)
	}

	// The VMI says so too: the size the guest sees in status.volumeStatus, and one
	// DiskResized event for the growth.
	want := strconv.FormatInt(after*512, 10)
	eventually(t, time.Minute, "status.volumeStatus to show datadisk at "+want+" bytes", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "get", "vmi", "vm-grow", "-o", `jsonpath={.status.volumeStatus[?(@.name=="datadisk")].size}`)
		return strings.TrimSpace(out) == want, fmt.Errorf("volumeStatus says %q: %w", out, err)
	})
	note := "disk datadisk grew to " + want + " bytes"
	var events []string
	eventually(t, time.Minute, "a DiskResized event on the VMI", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "get", "events", "--field-selector", "involvedObject.name=vm-grow,reason=DiskResized",
			"-o", `jsonpath={range .items[*]}{.message}{"\t"}{.count}{"\n"}{end}`)
		events = strings.Split(strings.TrimSpace(out), "\n")
		return strings.Contains(out, note), fmt.Errorf("DiskResized events %q: %w", out, err)
	})
	// An event repeated is one object with a count (0 or none for an event never repeated).
	message, count, _ := strings.Cut(events[0], "\t")
	if n, _ := strconv.Atoi(count); len(events) != 1 || message != note || n > 1 {
		t.Errorf("DiskResized events (message, count) %q, want %q once", events, note)
	}
}

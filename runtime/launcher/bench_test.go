package launcher_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// memory is what one process costs, in KiB: RSS counts shared pages (libc, libvirt.so) once
// per process; PSS splits them between the processes that map them, so PSS adds up to what
// the processes cost together.
type memory struct{ rss, pss int }

func readMemory(t *testing.T, pid int) memory {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatalf("read memory of %d: %v", pid, err)
	}
	var m memory
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Rss:":
			m.rss = n
		case "Pss:":
			m.pss = n
		}
	}
	return m
}

// residentPages adds the physical pages a process has resident to set (from /proc/PID/pagemap,
// readable by root), so that pages shared between the launcher's processes count once, as they
// do in the container's memory cgroup.
func residentPages(t *testing.T, pid int, set map[uint64]bool) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	for _, l := range strings.Split(string(maps), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		if end-start > 8<<30 { // reserved address space, never resident as a whole
			continue
		}
		buf := make([]byte, (end-start)/4096*8)
		if _, err := pm.ReadAt(buf, int64(start/4096*8)); err != nil {
			continue // [vsyscall] and friends
		}
		for i := 0; i+8 <= len(buf); i += 8 {
			e := binary.LittleEndian.Uint64(buf[i:])
			if e&(1<<63) != 0 {
				set[e&(1<<55-1)] = true
			}
		}
	}
}

// guestRAMResident is the resident part of QEMU's mapping of the guest's RAM (the one mapping
// of exactly the guest's size), so the rest of QEMU's RSS is its overhead.
func guestRAMResident(t *testing.T, pid int, guestKiB int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	inGuest := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch {
		case f[0] == "Size:":
			n, _ := strconv.Atoi(f[1])
			inGuest = n == guestKiB
		case f[0] == "Rss:" && inGuest:
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no %d KiB mapping in QEMU", guestKiB)
	return 0
}

// TestMemoryFootprint measures the launcher's own processes (launcher, libvirtd, virtlogd) and
// QEMU's overhead over guest RAM for a 256 MiB guest, once in the default unprivileged mode
// without virtlogd and once as root with virtlogd. It runs under make bench-runtime.
func TestMemoryFootprint(t *testing.T) {
	if os.Getenv("SLIMVIRT_BENCH") == "" {
		t.Skip("a measurement, not a test: make bench-runtime")
	}
	needGuest(t)
	modes := []struct {
		name    string
		nonRoot bool
		args    []string
	}{
		{"uid 107, no capabilities, no virtlogd (default in the pod)", true, nil},
		{"root, with virtlogd", false, []string{"--virtlogd=/usr/sbin/virtlogd"}},
	}
	var report []string
	for _, m := range modes {
		r := newRun(t)
		r.nonRoot, r.args = m.nonRoot, m.args
		copyDisk(t, filepath.Join(bins.guest, "disk.qcow2"), filepath.Join(r.path(launcherpod.ContainerDiskDir), "root"))
		r.start(testVMI("bench", 10,
			[]v1.Disk{{Name: "root", Disk: &v1.DiskTarget{Bus: "virtio"}}},
			[]v1.Volume{{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "guest"}}}}))
		r.waitLine("SLIMVIRT-GUEST-UP", bootTimeout)
		time.Sleep(3 * time.Second) // let the boot's transient allocations settle
		var own memory
		var lines []string
		pages := map[uint64]bool{}
		for _, p := range r.processes() {
			mem := readMemory(t, p.pid)
			if strings.HasPrefix(p.name, "qemu") {
				guest := guestRAMResident(t, p.pid, 256<<10)
				lines = append(lines, fmt.Sprintf("    %-16s RSS %6.1f MiB, of which guest RAM %6.1f MiB: overhead %6.1f MiB", "qemu (TCG)", mib(mem.rss), mib(guest), mib(mem.rss-guest)))
				continue
			}
			residentPages(t, p.pid, pages)
			own.rss += mem.rss
			own.pss += mem.pss
			lines = append(lines, fmt.Sprintf("    %-16s RSS %6.1f MiB  PSS %6.1f MiB", p.name, mib(mem.rss), mib(mem.pss)))
		}
		report = append(report, m.name+":")
		report = append(report, lines...)
		report = append(report, fmt.Sprintf("    %-16s RSS %6.1f MiB  PSS %6.1f MiB  distinct pages %6.1f MiB (target: under 40 MiB)", "launcher's own", mib(own.rss), mib(own.pss), mib(len(pages)*4)))
		r.kill()
	}
	fmt.Println("Launcher memory, 256 MiB guest booted (TCG):")
	fmt.Println(strings.Join(report, "\n"))
}

func mib(kib int) float64 { return float64(kib) / 1024 }

package reaper

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// An orphan (a grandchild whose parent exited, as QEMU is for libvirtd) is reaped, and a child
// the caller waits for keeps its own exit status.
func TestReapOrphansKeepOwnStatus(t *testing.T) {
	r := New() // makes this test process a subreaper
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Loop(ctx)

	// sh starts a grandchild that outlives it by a moment, prints its pid and exits.
	orphanMaker := exec.Command("sh", "-c", "sleep 0.3 & echo $!")
	out, err := orphanMaker.Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, _ := strconv.Atoi(strings.TrimSpace(string(out)))

	own := exec.Command("sh", "-c", "sleep 0.5; exit 7")
	if err := r.Start(own); err != nil {
		t.Fatal(err)
	}
	err = r.Wait(own)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("own child ended with %v, want exit 7", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(orphan) + "/stat")
		if err != nil {
			return // reaped
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d not reaped: %s", orphan, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

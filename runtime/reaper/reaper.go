// Package reaper lets the launcher be PID 1 of its container: it reaps orphans (QEMU is
// double-forked by libvirtd, so it becomes our child when it exits) without stealing the exit
// status of the children the launcher waits for itself.
package reaper

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper tracks the children started through it; all other zombies are reaped by Loop.
type Reaper struct {
	mu   sync.Mutex
	ours map[int]bool
}

// New makes a Reaper. When not PID 1 it makes the process a child subreaper, so orphans come
// to it the same way in tests as in a container.
func New() *Reaper {
	if os.Getpid() != 1 {
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	return &Reaper{ours: map[int]bool{}}
}

// Start starts cmd; its exit status is left for Wait.
func (r *Reaper) Start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.ours[cmd.Process.Pid] = true
	return nil
}

// Wait waits for a command started with Start.
func (r *Reaper) Wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	r.mu.Lock()
	delete(r.ours, cmd.Process.Pid)
	r.mu.Unlock()
	return err
}

// Run starts and waits for cmd.
func (r *Reaper) Run(cmd *exec.Cmd) error {
	if err := r.Start(cmd); err != nil {
		return err
	}
	return r.Wait(cmd)
}

// Loop reaps foreign zombies until ctx ends.
func (r *Reaper) Loop(ctx context.Context) {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-tick.C:
		}
		r.reap()
	}
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] != "Z" || f[1] != self {
			continue
		}
		pid, err := strconv.Atoi(strings.Fields(s)[0])
		if err != nil || r.ours[pid] {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

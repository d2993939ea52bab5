package nettest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// LauncherNet configures the launcher side of a test VM network.
type LauncherNet struct {
	Binding launcherpod.Binding
	// ResolvConf is copied where the launcher's uid can read it; empty means no DNS.
	ResolvConf       string
	Hostname, Domain string
	OnLease          func(net.IP)
}

// Launcher is the launcher side of the VM network running as the launcher does in its pod: a
// process in the pod netns with the launcher's uid and CAP_NET_BIND_SERVICE as its only
// capability (no CAP_NET_RAW, so no packet socket).
type Launcher struct {
	cmd  *exec.Cmd
	once sync.Once
	done chan error
	logs *syncBuilder
}

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) add(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(line + "\n")
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ServeAsLauncher starts the launcher side in podNS and waits until it serves. It is stopped
// when the test ends (or by Stop).
func ServeAsLauncher(t testing.TB, podNS ns.NetNS, cfg LauncherNet) *Launcher {
	t.Helper()
	bin := os.Getenv("SLIMVIRT_LAUNCHERNET_BINARY")
	if bin == "" {
		t.Fatal("SLIMVIRT_LAUNCHERNET_BINARY is not set: run the tests through nettest.Main")
	}
	resolv := "/nonexistent"
	if cfg.ResolvConf != "" {
		resolv = readableCopy(t, cfg.ResolvConf)
	}
	cmd := exec.Command(bin, "--binding", string(cfg.Binding), "--resolv-conf", resolv,
		"--hostname", cfg.Hostname, "--domain", cfg.Domain)
	// Ambient capabilities survive the change of uid and the exec: the process gets exactly
	// CAP_NET_BIND_SERVICE, as the launcher binary's file capability gives it in its image.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: launcherpod.LauncherUID, Gid: launcherpod.LauncherUID},
		AmbientCaps: []uintptr{unix.CAP_NET_BIND_SERVICE},
		Pdeathsig:   syscall.SIGKILL,
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// The child is forked from the thread Do holds in the pod netns, so it starts there.
	if err := podNS.Do(func(ns.NetNS) error { return cmd.Start() }); err != nil {
		t.Fatalf("start launcher network: %v", err)
	}
	l := &Launcher{cmd: cmd, done: make(chan error, 1), logs: &syncBuilder{}}
	serving := make(chan struct{})
	var servingOnce sync.Once
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			l.logs.add(sc.Text())
			if strings.Contains(sc.Text(), "serving vm network") {
				servingOnce.Do(func() { close(serving) })
			}
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if ip, ok := strings.CutPrefix(sc.Text(), "lease "); ok && cfg.OnLease != nil {
				cfg.OnLease(net.ParseIP(ip))
			}
		}
	}()
	go func() {
		wg.Wait()
		l.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if err := l.Stop(); err != nil {
			t.Errorf("launcher network: %v\n%s", err, l.logs.String())
		}
	})
	select {
	case <-serving:
	case err := <-l.done:
		l.done <- err
		t.Fatalf("launcher network exited: %v\n%s", err, l.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("launcher network did not serve within 20s\n%s", l.logs.String())
	}
	if err := checkUnprivileged(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return l
}

// Stop ends the launcher side; it returns an error when the process failed before.
func (l *Launcher) Stop() error {
	var err error
	l.once.Do(func() {
		_ = l.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-l.done:
		case <-time.After(10 * time.Second):
			_ = l.cmd.Process.Kill()
			err = errors.Join(errors.New("did not stop on SIGTERM"), <-l.done)
		}
	})
	return err
}

// Logs returns what the launcher side logged.
func (l *Launcher) Logs() string { return l.logs.String() }

// checkUnprivileged says what is wrong when pid has more than CAP_NET_BIND_SERVICE, runs as
// another uid, or holds a packet socket.
func checkUnprivileged(pid int) error {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fmt.Errorf("read status of the launcher network: %w", err)
	}
	want := map[string]string{
		"CapEff": fmt.Sprintf("%016x", 1<<unix.CAP_NET_BIND_SERVICE),
		"CapPrm": fmt.Sprintf("%016x", 1<<unix.CAP_NET_BIND_SERVICE),
		"Uid":    strconv.Itoa(launcherpod.LauncherUID),
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		fields := strings.Fields(v)
		if w, ok := want[k]; ok && (len(fields) == 0 || fields[0] != w) {
			return fmt.Errorf("launcher network has %s %q, want %s", k, strings.TrimSpace(v), w)
		}
	}
	packets, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/packet", pid))
	if err != nil {
		return fmt.Errorf("read packet sockets: %w", err)
	}
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(packets), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 {
			inodes["socket:["+f[len(f)-1]+"]"] = true
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return fmt.Errorf("list fds of the launcher network: %w", err)
	}
	for _, fd := range fds {
		target, _ := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if inodes[target] {
			return fmt.Errorf("launcher network holds a packet socket (fd %s)", fd.Name())
		}
	}
	return nil
}

// readableCopy copies path into a directory the launcher's uid can read, removed after the test.
func readableCopy(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "svlauncher-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

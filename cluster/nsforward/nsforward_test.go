package nsforward_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/slimvirt/slimvirt/cluster/nsforward"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// echoInNS starts a line echo server on 127.0.0.1 inside a new namespace: an address the
// test's own namespace cannot reach.
func echoInNS(t *testing.T) (ns.NetNS, string) {
	t.Helper()
	testutil.RequireRoot(t, "network namespaces need root")
	target, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		target.Close()
		_ = testutils.UnmountNS(target)
	})
	var ln net.Listener
	err = target.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("listen in netns: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return target, ln.Addr().String()
}

func TestForwardsIntoNamespace(t *testing.T) {
	target, addr := echoInNS(t)
	// The echo server is not reachable here: only the forwarder gets there.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Skipf("%s is also served in the test's namespace; cannot tell the namespaces apart", addr)
	}
	f, err := nsforward.New(nsforward.Config{Listen: "127.0.0.1:0", NetNS: target.Path(), Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := f.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.Serve(ctx, ln) }()

	for i, msg := range []string{"hello", "second connection"} {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: dial forwarder: %v", i, err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			t.Fatalf("connection %d: write: %v", i, err)
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || strings.TrimSpace(got) != msg {
			t.Fatalf("connection %d: echo = %q, %v; want %q", i, got, err, msg)
		}
		c.Close()
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the forwarder still accepts connections after it stopped")
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  nsforward.Config
		ok   bool
	}{
		{"complete", nsforward.Config{Listen: "127.0.0.1:6443", NetNS: "/var/run/netns/x", Target: "10.88.0.1:6443"}, true},
		{"no netns", nsforward.Config{Listen: "127.0.0.1:6443", Target: "10.88.0.1:6443"}, false},
		{"no target", nsforward.Config{Listen: "127.0.0.1:6443", NetNS: "/var/run/netns/x"}, false},
		{"listen without port", nsforward.Config{Listen: "127.0.0.1", NetNS: "/var/run/netns/x", Target: "10.88.0.1:6443"}, false},
		{"target without port", nsforward.Config{Listen: "127.0.0.1:1", NetNS: "/var/run/netns/x", Target: "10.88.0.1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := nsforward.New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Errorf("New(%+v) error = %v, want ok=%v", tt.cfg, err, tt.ok)
			}
		})
	}
}

func TestServeFailsOnMissingNamespace(t *testing.T) {
	f, err := nsforward.New(nsforward.Config{Listen: "127.0.0.1:0", NetNS: "/var/run/netns/does-not-exist-slimvirt", Target: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := f.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Serve(context.Background(), ln); err == nil {
		t.Fatal("Serve with a missing netns succeeded")
	}
}

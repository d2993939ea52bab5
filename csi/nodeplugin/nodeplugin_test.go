package nodeplugin

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestStartRemovesStaleScratch: scratch files a killed driver left in a pool are gone once
// slimvirt-csi has started.
func TestStartRemovesStaleScratch(t *testing.T) {
	dir := t.TempDir()
	pool := filepath.Join(dir, "pool")
	stale := filepath.Join(pool, ".scratch", "pvc-1.qcow2")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Endpoint: "unix://" + filepath.Join(dir, "csi.sock"), NodeID: "n", StateDir: filepath.Join(dir, "state"),
		Kubeconfig: "none", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := cfg.AddPool("default=" + pool); err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); testutil.Must(t, <-done) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(stale); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the stale scratch file is still there after start")
		}
	}
}

// TestImportCIDRFlags: the flags parse into the importer's lists, and a bad one is refused.
func TestImportCIDRFlags(t *testing.T) {
	var c Config
	if err := c.SetImportAllowCIDRs("127.0.0.0/8"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetImportDenyCIDRs("10.96.0.0/12,10.244.0.0/16"); err != nil {
		t.Fatal(err)
	}
	if len(c.ImportAllowCIDRs) != 1 || len(c.ImportDenyCIDRs) != 2 {
		t.Fatalf("parsed %v and %v", c.ImportAllowCIDRs, c.ImportDenyCIDRs)
	}
	if err := c.SetImportDenyCIDRs("10.0.0.0/40"); err == nil || !strings.Contains(err.Error(), "--import-deny-cidrs") {
		t.Fatalf("bad CIDR: %v", err)
	}
}

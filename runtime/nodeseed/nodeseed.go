// Package nodeseed puts on a node what its launchers share, in the node directory the launcher
// pods mount at launcherpod.NodeDir: the containerDisk copier and QEMU's capabilities, probed
// once with the launcher image (package capsseed) instead of by each launcher's libvirtd. The
// node agent's seed init container runs it ("slimvirt-launcher seed-node DIR" as root, which
// runs "slimvirt-launcher seed-caps DIR" as the launcher's account).
package nodeseed

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/runtime/capsseed"
	"github.com/slimvirt/slimvirt/runtime/diskcopy"
	"github.com/slimvirt/slimvirt/runtime/libvirtd"
	"github.com/slimvirt/slimvirt/runtime/reaper"
)

// Config is what seeding a node needs.
type Config struct {
	// Libvirt is libvirt as a launcher runs it.
	Libvirt libvirtd.Config
	// Diskcopy is the containerDisk copier in the launcher image.
	Diskcopy string
	Log      *slog.Logger
}

func (c Config) logger() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return c.Log
}

// ProbeCaps starts libvirtd as a launcher would, lets it probe QEMU, and copies its
// capabilities cache into seedDir, for the launchers of this node ("seed-caps", run as the
// launcher's account).
func ProbeCaps(ctx context.Context, cfg Config, seedDir string) error {
	log := cfg.logger()
	cfg.Libvirt.CapsSeedDir = ""
	r := reaper.New()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.Loop(ctx)
	if err := os.MkdirAll(cfg.Libvirt.RunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cfg.Libvirt.RunDir, err)
	}
	start := time.Now()
	d, err := libvirtd.Start(ctx, cfg.Libvirt, r, log)
	if err != nil {
		return fmt.Errorf("start libvirtd: %w", err)
	}
	defer d.Stop()
	n, err := capsseed.Collect(d.CapsCacheDir(), seedDir)
	if err != nil {
		return fmt.Errorf("collect QEMU capabilities: %w", err)
	}
	log.Info("probed QEMU capabilities for the node's launchers", "files", n, "dir", seedDir, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// SeedNode puts in dir (the node directory the launcher pods mount at launcherpod.NodeDir)
// the containerDisk copier and, probed as the launcher's account, QEMU's capabilities. Only
// the copier is required: without capabilities each launcher probes QEMU itself.
func SeedNode(ctx context.Context, cfg Config, dir string) error {
	if err := diskcopy.Install(cfg.Diskcopy, dir); err != nil {
		return err
	}
	caps := filepath.Join(dir, launcherpod.CapsSeedName)
	if err := os.MkdirAll(caps, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", caps, err)
	}
	if err := os.Chown(caps, launcherpod.LauncherUID, launcherpod.LauncherGID); err != nil {
		return fmt.Errorf("give %s to the launcher's account: %w", caps, err)
	}
	if err := os.Chown(cfg.Libvirt.RunDir, launcherpod.LauncherUID, launcherpod.LauncherGID); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("give %s to the launcher's account: %w", cfg.Libvirt.RunDir, err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	cmd := exec.CommandContext(ctx, self, "seed-caps", caps)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: launcherpod.LauncherUID, Gid: launcherpod.LauncherGID}}
	if err := cmd.Run(); err != nil {
		cfg.logger().Warn("QEMU capabilities not probed; each launcher on this node probes QEMU itself", "err", err, "uid", strconv.Itoa(launcherpod.LauncherUID))
	}
	return nil
}

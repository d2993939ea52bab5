package launcher

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
	"github.com/slimvirt/slimvirt/runtime/reaper"
)

// capsCacheDir is where this launcher's libvirtd keeps its QEMU capabilities.
func (l *Launcher) capsCacheDir() string {
	if l.session {
		return capsseed.SessionCacheDir(filepath.Join(l.cfg.LibvirtRunDir, "cache"))
	}
	return capsseed.SystemCacheDir
}

// seedCaps puts the node's probed QEMU capabilities where libvirtd will look for them.
func (l *Launcher) seedCaps() []capsseed.Seeded {
	if l.cfg.CapsSeedDir == "" {
		return nil
	}
	seeded, err := capsseed.Install(l.cfg.CapsSeedDir, l.capsCacheDir())
	if err != nil {
		l.log.Warn("the node's QEMU capabilities cannot be used; libvirtd probes QEMU itself", "err", err)
	}
	return seeded
}

// reportSeed says whether libvirtd used the seeded capabilities or probed QEMU again.
func (l *Launcher) reportSeed(seeded []capsseed.Seeded, took time.Duration) {
	if len(seeded) == 0 {
		l.log.Info("libvirt ready; QEMU probed (no capabilities seeded on this node)", "took", took.Round(time.Millisecond))
		return
	}
	for _, s := range seeded {
		if !s.Kept() {
			l.log.Info("libvirt ready; QEMU probed again: the node's capabilities did not match this QEMU and libvirt", "took", took.Round(time.Millisecond), "seed", filepath.Base(s.Path))
			return
		}
	}
	l.log.Info("libvirt ready; QEMU capabilities from the node's seed", "took", took.Round(time.Millisecond))
}

// ProbeCaps starts libvirtd as a launcher would, lets it probe QEMU, and copies its
// capabilities cache into seedDir, for the launchers of this node (the node agent's seed
// init container runs it as the launcher's account).
func ProbeCaps(ctx context.Context, cfg Config, seedDir string) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	cfg.CapsSeedDir = ""
	l := &Launcher{cfg: cfg, log: cfg.Log, reaper: reaper.New(), session: os.Geteuid() != 0}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go l.reaper.Loop(ctx)
	if err := os.MkdirAll(cfg.LibvirtRunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cfg.LibvirtRunDir, err)
	}
	start := time.Now()
	conn, stop, err := l.startLibvirt(ctx)
	if err != nil {
		return fmt.Errorf("start libvirtd: %w", err)
	}
	defer stop()
	defer conn.Close()
	n, err := capsseed.Collect(l.capsCacheDir(), seedDir)
	if err != nil {
		return fmt.Errorf("collect QEMU capabilities: %w", err)
	}
	l.log.Info("probed QEMU capabilities for the node's launchers", "files", n, "dir", seedDir, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// SeedNode puts in dir (the node directory the launcher pods mount at launcherpod.NodeDir)
// the containerDisk copier and, probed as the launcher's account, QEMU's capabilities. Only
// the copier is required: without capabilities each launcher probes QEMU itself.
func SeedNode(ctx context.Context, cfg Config, dir string) error {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if err := diskcopy.Install(cfg.Diskcopy, dir); err != nil {
		return err
	}
	caps := filepath.Join(dir, filepath.Base(launcherpod.CapsSeedDir))
	if err := os.MkdirAll(caps, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", caps, err)
	}
	if err := os.Chown(caps, launcherpod.LauncherUID, launcherpod.LauncherGID); err != nil {
		return fmt.Errorf("give %s to the launcher's account: %w", caps, err)
	}
	if err := os.Chown(cfg.LibvirtRunDir, launcherpod.LauncherUID, launcherpod.LauncherGID); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("give %s to the launcher's account: %w", cfg.LibvirtRunDir, err)
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
		log.Warn("QEMU capabilities not probed; each launcher on this node probes QEMU itself", "err", err, "uid", strconv.Itoa(launcherpod.LauncherUID))
	}
	return nil
}

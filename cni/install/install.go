package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// Config says where the CNI lives on the node and where slimvirt keeps its state.
type Config struct {
	// CNIBinDir and CNIConfDir are the runtime's CNI directories (host paths, mounted).
	CNIBinDir  string
	CNIConfDir string
	// SourceBinary is the plugin binary to install (from the node agent's image).
	SourceBinary string
	// StateDir is the host directory for the plugin's state, the key copy and the backup.
	StateDir string
	// SigningKeyFile is the mounted Secret holding the annotation signing key.
	SigningKeyFile string
	// Conflist names the file to chain into; empty picks the one the runtime uses.
	Conflist string
	// AllowCustomMACs lets VMs on the bridge binding use MACs that are not locally administered
	// (the plugin's allowCustomMACs option).
	AllowCustomMACs bool
	// UninstallOnExit takes slimvirt out of the node when Run ends.
	UninstallOnExit bool
	// Resync is how often the configuration is checked besides file events.
	Resync time.Duration
	Logger *slog.Logger
}

// Installer installs, keeps installed and uninstalls the plugin.
type Installer struct {
	cfg Config
	log *slog.Logger
}

// record says what Install changed, so Uninstall can undo exactly that.
type record struct {
	// Original is the node's config file; Written is the file holding the chained list (the
	// same file, or a .conflist next to a single-plugin .conf that was moved aside).
	Original string `json:"original"`
	Written  string `json:"written"`
	Backup   string `json:"backup"`
}

// New validates cfg.
func New(cfg Config) (*Installer, error) {
	for name, v := range map[string]string{"cni-bin-dir": cfg.CNIBinDir, "cni-conf-dir": cfg.CNIConfDir, "state-dir": cfg.StateDir} {
		if v == "" || !filepath.IsAbs(v) {
			return nil, fmt.Errorf("%s %q must be an absolute path", name, v)
		}
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Installer{cfg: cfg, log: cfg.Logger}, nil
}

// KeyPath is where the plugin reads the signing key.
func (in *Installer) KeyPath() string { return filepath.Join(in.cfg.StateDir, "signing.key") }

func (in *Installer) recordPath() string { return filepath.Join(in.cfg.StateDir, "cni-install.json") }
func (in *Installer) backupDir() string  { return filepath.Join(in.cfg.StateDir, "cni-original") }
func (in *Installer) binPath() string    { return filepath.Join(in.cfg.CNIBinDir, PluginType) }

// Install copies the binary and the key and chains the plugin into the node's conflist.
func (in *Installer) Install() error {
	if err := os.MkdirAll(in.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir %s: %w", in.cfg.StateDir, err)
	}
	if err := in.copyBinary(); err != nil {
		return err
	}
	if err := in.copyKey(); err != nil {
		return err
	}
	return in.Ensure()
}

func (in *Installer) copyBinary() error {
	src, err := os.ReadFile(in.cfg.SourceBinary)
	if err != nil {
		return fmt.Errorf("read plugin binary %s: %w", in.cfg.SourceBinary, err)
	}
	if cur, err := os.ReadFile(in.binPath()); err == nil && bytes.Equal(cur, src) {
		return nil
	}
	if err := atomicfile.WriteFile(in.binPath(), src, 0o755); err != nil {
		return fmt.Errorf("install plugin binary: %w", err)
	}
	in.log.Info("installed plugin binary", "path", in.binPath(), "bytes", len(src))
	return nil
}

// copyKey copies the mounted Secret (whose file a kubelet replaces on rotation) to a file only
// root can read. Without a key the plugin acts on no pod, which is safe, so that is a warning.
func (in *Installer) copyKey() error {
	if in.cfg.SigningKeyFile == "" {
		in.log.Warn("no signing key file: the plugin will pass every pod through")
		return nil
	}
	key, err := os.ReadFile(in.cfg.SigningKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		in.log.Warn("signing key file missing: the plugin will pass every pod through", "path", in.cfg.SigningKeyFile)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read signing key %s: %w", in.cfg.SigningKeyFile, err)
	}
	if cur, err := os.ReadFile(in.KeyPath()); err == nil && bytes.Equal(cur, key) {
		return nil
	}
	if err := atomicfile.WriteFile(in.KeyPath(), key, 0o600); err != nil {
		return fmt.Errorf("copy signing key: %w", err)
	}
	in.log.Info("copied signing key", "path", in.KeyPath())
	return nil
}

// Ensure makes the runtime's conflist end with slimvirt's entry; it does nothing when it does.
func (in *Installer) Ensure() error {
	target, err := pickConfig(in.cfg.CNIConfDir, in.cfg.Conflist)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(target)
	if err != nil {
		return fmt.Errorf("read %s: %w", target, err)
	}
	doc, err := parseConfig(target, raw)
	if err != nil {
		return err
	}
	entry := Entry(in.KeyPath(), in.cfg.StateDir, EntryOptions{AllowCustomMACs: in.cfg.AllowCustomMACs})
	isList := strings.HasSuffix(target, ".conflist")
	if isList && hasEntry(doc, entry) {
		return nil
	}
	rec, err := in.loadRecord()
	if err != nil {
		return err
	}
	if rec != nil && rec.Written != target && rec.Written != strings.TrimSuffix(target, filepath.Ext(target))+".conflist" {
		// The runtime now reads another file (a cluster CNI that put a lexically earlier one):
		// give the old one back before chaining into the new one.
		if err := in.restore(rec); err != nil {
			return err
		}
		rec = nil
	}
	if !containsOurs(doc) {
		// A file without us is the cluster CNI's own (first seen, or rewritten): keep it as is.
		rec = &record{Original: target, Written: target, Backup: filepath.Join(in.backupDir(), filepath.Base(target))}
		if err := os.MkdirAll(in.backupDir(), 0o700); err != nil {
			return fmt.Errorf("create backup dir: %w", err)
		}
		if err := atomicfile.WriteFile(rec.Backup, raw, 0o644); err != nil {
			return fmt.Errorf("keep original %s: %w", target, err)
		}
	} else if rec == nil {
		rec = &record{Original: target, Written: target}
	}
	out, err := chained(doc, entry)
	if err != nil {
		return fmt.Errorf("chain into %s: %w", target, err)
	}
	dest := target
	if !isList {
		// Only a .conflist is read as a list by every runtime.
		dest = strings.TrimSuffix(target, filepath.Ext(target)) + ".conflist"
	}
	rec.Written = dest
	// Record first: if we die between the two writes, Uninstall still knows the files.
	if err := in.saveRecord(rec); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(target); err == nil {
		mode = st.Mode().Perm()
	}
	if err := atomicfile.WriteFile(dest, out, mode); err != nil {
		return fmt.Errorf("chain into %s: %w", dest, err)
	}
	if dest != target {
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("move %s aside: %w", target, err)
		}
	}
	in.log.Info("chained slimvirt into the CNI configuration", "file", dest, "original", rec.Original)
	return nil
}

// Uninstall restores the node's configuration (byte for byte, when the file still holds what
// Install wrote) and removes the plugin binary and the key copy.
func (in *Installer) Uninstall() error {
	rec, err := in.loadRecord()
	if err != nil {
		return err
	}
	var errs []error
	if rec != nil {
		if err := in.restore(rec); err != nil {
			errs = append(errs, err)
		}
	} else if err := in.strip(); err != nil {
		errs = append(errs, err)
	}
	for _, p := range []string{in.binPath(), in.KeyPath(), in.recordPath()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	if err := os.RemoveAll(in.backupDir()); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", in.backupDir(), err))
	}
	if len(errs) == 0 {
		in.log.Info("uninstalled slimvirt from the node")
	}
	return errors.Join(errs...)
}

func (in *Installer) restore(rec *record) error {
	raw, err := os.ReadFile(rec.Written)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", rec.Written, err)
	}
	doc, err := parseConfig(rec.Written, raw)
	if err != nil || !containsOurs(doc) {
		// Someone else owns the file now; leave it.
		return nil
	}
	orig, err := os.ReadFile(rec.Backup)
	if err != nil {
		return fmt.Errorf("read original %s: %w", rec.Backup, err)
	}
	if err := atomicfile.WriteFile(rec.Original, orig, 0o644); err != nil {
		return fmt.Errorf("restore %s: %w", rec.Original, err)
	}
	if rec.Written != rec.Original {
		if err := os.Remove(rec.Written); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", rec.Written, err)
		}
	}
	in.log.Info("restored the CNI configuration", "file", rec.Original)
	return nil
}

// strip takes slimvirt out of the runtime's conflist when there is no record of the original
// (the state dir was wiped): the best that can be done is removing the entry.
func (in *Installer) strip() error {
	target, err := pickConfig(in.cfg.CNIConfDir, in.cfg.Conflist)
	if errors.Is(err, ErrNoConfig) {
		return nil
	}
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(target)
	if err != nil {
		return fmt.Errorf("read %s: %w", target, err)
	}
	doc, err := parseConfig(target, raw)
	if err != nil || !containsOurs(doc) {
		return nil
	}
	out, err := withoutOurs(doc)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(target, out, 0o644); err != nil {
		return fmt.Errorf("remove slimvirt from %s: %w", target, err)
	}
	in.log.Info("removed slimvirt from the CNI configuration (no original kept)", "file", target)
	return nil
}

func (in *Installer) loadRecord() (*record, error) {
	b, err := os.ReadFile(in.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", in.recordPath(), err)
	}
	rec := &record{}
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("parse %s: %w", in.recordPath(), err)
	}
	return rec, nil
}

func (in *Installer) saveRecord(rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode install record: %w", err)
	}
	if err := atomicfile.WriteFile(in.recordPath(), b, 0o600); err != nil {
		return fmt.Errorf("save install record: %w", err)
	}
	return nil
}

// Run installs, then keeps the configuration chained (file events, and a resync for missed
// ones) until ctx ends; with UninstallOnExit it then uninstalls.
func (in *Installer) Run(ctx context.Context) error {
	err := in.Install()
	if errors.Is(err, ErrNoConfig) {
		// A fresh node: the cluster CNI writes its configuration later; the watch picks it up.
		in.log.Warn("no CNI configuration yet, waiting for one", "dir", in.cfg.CNIConfDir)
	} else if err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", in.cfg.CNIConfDir, err)
	}
	defer w.Close()
	if err := w.Add(in.cfg.CNIConfDir); err != nil {
		return fmt.Errorf("watch %s: %w", in.cfg.CNIConfDir, err)
	}
	tick := time.NewTicker(in.cfg.Resync)
	defer tick.Stop()
	// Events come in bursts (temp file, rename); act once the burst is over.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			if in.cfg.UninstallOnExit {
				return in.Uninstall()
			}
			return nil
		case ev := <-w.Events:
			// A file libcni does not load changes nothing, and the temporary files of
			// atomicfile (the installer's own writes) are such dotfiles.
			if !isConfigFile(filepath.Base(ev.Name)) {
				continue
			}
			debounce.Reset(100 * time.Millisecond)
		case err := <-w.Errors:
			in.log.Error("watching the CNI configuration failed", "err", err)
		case <-debounce.C:
			in.resync()
		case <-tick.C:
			in.resync()
		}
	}
}

func (in *Installer) resync() {
	if err := in.copyKey(); err != nil {
		in.log.Error("signing key copy failed", "err", err)
	}
	if err := in.Ensure(); err != nil {
		in.log.Error("chaining slimvirt failed", "err", err)
	}
}

// Package deviceplugin offers host device nodes to pods as kubelet extended resources
// (devices.slimvirt.io/kvm, devices.slimvirt.io/tun). A launcher pod that asks for them gets
// /dev/kvm and /dev/net/tun from the container runtime, so it runs as an ordinary user, without
// privileges or a hostPath mount of /dev. The node's seed for the launchers (the containerDisk
// copier, QEMU's capabilities) is offered the same way, as devices.slimvirt.io/seed: a
// read-only mount into each container that asks for it, so a launcher pod has no hostPath
// volume and passes the Pod Security baseline level.
//
// Each resource is one kubelet device plugin serving on its own socket in the kubelet's
// device-plugins directory. The kubelet deletes those sockets and recreates its own when it
// restarts; the plugins notice (directory events, and a poll for missed ones), serve again and
// register again.
package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/validation"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// The resources launcher pods ask for.
const (
	KVM  = launcherpod.ResourceKVM
	Tun  = launcherpod.ResourceTun
	Seed = launcherpod.ResourceSeed
)

// SeedPerPod is how many containers of one launcher pod may hold the seed at once (the compute
// container and the copiers): the seed offers DeviceCount times as many.
const SeedPerPod = 8

const (
	// DefaultDir is where the kubelet listens for registrations (kubelet.sock).
	DefaultDir = "/var/lib/kubelet/device-plugins"
	// DefaultDeviceCount is the kubelet's default pod limit per node, so that the resources never
	// limit how many launcher pods fit on a node.
	DefaultDeviceCount = 110
	// kubeletSocket is the kubelet's registration socket in Dir.
	kubeletSocket = "kubelet.sock"
	// registerTimeout bounds one registration, including waiting for a kubelet that has created
	// its socket but does not accept connections yet.
	registerTimeout = 5 * time.Second
	// debounce lets a burst of directory events (a kubelet restart deletes every socket, then
	// creates its own) end before the plugins act on it.
	debounce = 100 * time.Millisecond
)

// Resource is a host device node, or a host directory, offered as an extended resource.
type Resource struct {
	// Name is the extended resource name, "<domain>/<name>".
	Name string
	// Path is the device node. It is the same path on the host, in the node agent's container
	// and in the pod. Empty for a Mount.
	Path string
	// Mount, instead of a device, is a host directory given read-only to each container.
	Mount *Mount
	// Count is how many devices the resource advertises; Config.DeviceCount when 0.
	Count int
}

// Mount is a host directory offered read-only.
type Mount struct {
	// HostPath is the directory, the same path on the host and in the node agent's container.
	HostPath string
	// ContainerPath is where containers see it.
	ContainerPath string
	// Marker is a file of HostPath that must exist, a regular file, before the directory is
	// offered: pods then wait for a complete directory, not an empty one.
	Marker string
}

// source is the host path r offers.
func (r Resource) source() string {
	if r.Mount != nil {
		return r.Mount.HostPath
	}
	return r.Path
}

// DefaultResources are the devices QEMU opens in a launcher pod.
func DefaultResources() []Resource {
	return []Resource{{Name: KVM, Path: "/dev/kvm"}, {Name: Tun, Path: "/dev/net/tun"}}
}

// SeedResource offers the node's seed for the launchers, seedDir (the node agent's
// <state-dir>/launcher), read-only at launcherpod.NodeDir.
func SeedResource(seedDir string, deviceCount int) Resource {
	return Resource{Name: Seed, Count: deviceCount * SeedPerPod, Mount: &Mount{
		HostPath: seedDir, ContainerPath: launcherpod.NodeDir, Marker: launcherpod.NodeSeedMarker,
	}}
}

// Config says which devices to offer and where the kubelet is.
type Config struct {
	// Dir is the kubelet's device-plugins directory: kubelet.sock and the plugins' sockets.
	Dir string
	// DeviceCount is how many devices each resource advertises: how many pods on the node can
	// hold the resource at once. All of them are the same device node.
	DeviceCount int
	// Resources defaults to DefaultResources, and the seed when SeedDir is set.
	Resources []Resource
	// SeedDir is the node's seed for the launchers (see SeedResource); empty offers none.
	SeedDir string
	// Poll is how often device health, the sockets and the registrations are checked besides
	// directory events, and how long to wait before retrying a failed watch.
	Poll   time.Duration
	Logger *slog.Logger
}

// Plugins serves and registers one device plugin per resource.
type Plugins struct {
	cfg     Config
	log     *slog.Logger
	plugins []*plugin
	// kubeletSeen says whether kubelet.sock existed at the last sync; a missing one is logged
	// when it goes missing, not on every poll.
	kubeletSeen bool
}

// New validates cfg.
func New(cfg Config) (*Plugins, error) {
	if cfg.Dir == "" || !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("device-plugin-dir %q must be an absolute path", cfg.Dir)
	}
	if cfg.DeviceCount <= 0 {
		return nil, fmt.Errorf("device-count %d must be positive", cfg.DeviceCount)
	}
	cfg.Dir = filepath.Clean(cfg.Dir) // events name paths cleaned
	if cfg.Resources == nil {
		cfg.Resources = DefaultResources()
		if cfg.SeedDir != "" {
			cfg.Resources = append(cfg.Resources, SeedResource(filepath.Clean(cfg.SeedDir), cfg.DeviceCount))
		}
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Plugins{cfg: cfg, log: cfg.Logger, kubeletSeen: true}
	sockets := map[string]string{}
	for _, r := range cfg.Resources {
		domain, short, _ := strings.Cut(r.Name, "/")
		if domain == "" || short == "" || len(validation.IsQualifiedName(r.Name)) > 0 {
			return nil, fmt.Errorf("resource name %q must be <domain>/<name>", r.Name)
		}
		switch {
		case r.Mount != nil:
			if !filepath.IsAbs(r.Mount.HostPath) || !filepath.IsAbs(r.Mount.ContainerPath) || r.Mount.Marker == "" || strings.Contains(r.Mount.Marker, "/") {
				return nil, fmt.Errorf("mount %+v of %s needs absolute paths and a marker file name", *r.Mount, r.Name)
			}
		case !filepath.IsAbs(r.Path):
			return nil, fmt.Errorf("device %q of %s must be an absolute path", r.Path, r.Name)
		}
		count := r.Count
		if count <= 0 {
			count = cfg.DeviceCount
		}
		socket := filepath.Join(cfg.Dir, "slimvirt-"+short+".sock")
		if other, dup := sockets[socket]; dup {
			return nil, fmt.Errorf("resources %s and %s would share socket %s", other, r.Name, socket)
		}
		sockets[socket] = r.Name
		p.plugins = append(p.plugins, newPlugin(r, short, socket, count, p.log.With("resource", r.Name)))
	}
	return p, nil
}

func (p *Plugins) kubeletSocket() string { return filepath.Join(p.cfg.Dir, kubeletSocket) }

// Run serves and registers the plugins until ctx ends, then stops them and removes their
// sockets. It does not give up: failures are logged and retried.
func (p *Plugins) Run(ctx context.Context) {
	defer func() {
		for _, pl := range p.plugins {
			pl.stop()
		}
		p.log.Info("device plugins stopped")
	}()
	for _, pl := range p.plugins {
		pl.checkHealth()
	}
	for {
		err := p.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		p.log.Error("device plugins failed, retrying", "err", err, "retryIn", p.cfg.Poll.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.cfg.Poll):
		}
	}
}

// watch keeps the plugins served and registered while the directory can be watched.
func (p *Plugins) watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", p.cfg.Dir, err)
	}
	defer w.Close()
	if err := w.Add(p.cfg.Dir); err != nil {
		return fmt.Errorf("watch %s: %w", p.cfg.Dir, err)
	}
	p.sync(ctx)
	tick := time.NewTicker(p.cfg.Poll)
	defer tick.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", p.cfg.Dir)
			}
			if ev.Name == p.cfg.Dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				return fmt.Errorf("watch %s: directory removed", p.cfg.Dir)
			}
			if ev.Name == p.kubeletSocket() && ev.Has(fsnotify.Create) {
				// A new kubelet knows no plugin until each registers again, even if the new
				// socket happens to get the old one's inode.
				for _, pl := range p.plugins {
					pl.registeredWith = nil
				}
			}
			settle.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", p.cfg.Dir)
			}
			p.log.Error("watching the device plugin directory failed", "dir", p.cfg.Dir, "err", err)
		case <-settle.C:
			p.sync(ctx)
		case <-tick.C:
			for _, pl := range p.plugins {
				pl.checkHealth()
			}
			p.sync(ctx)
		}
	}
}

// sync serves every plugin whose socket is gone and registers every plugin the current kubelet
// has not seen.
func (p *Plugins) sync(ctx context.Context) {
	kubelet, err := os.Stat(p.kubeletSocket())
	switch {
	case err == nil:
		p.kubeletSeen = true
	case p.kubeletSeen:
		p.kubeletSeen = false
		if errors.Is(err, os.ErrNotExist) {
			p.log.Warn("kubelet is not listening, waiting for its socket", "socket", p.kubeletSocket())
		} else {
			p.log.Error("looking for the kubelet failed", "socket", p.kubeletSocket(), "err", err)
		}
	}
	for _, pl := range p.plugins {
		if !pl.serving() {
			if err := pl.serve(); err != nil {
				pl.log.Error("serving device plugin failed", "socket", pl.socket, "err", err)
				continue
			}
			pl.log.Info("serving device plugin", "socket", pl.socket)
		}
		if kubelet == nil || sameSocket(pl.registeredWith, kubelet) {
			continue
		}
		if err := register(ctx, p.kubeletSocket(), pl); err != nil {
			pl.log.Error("registering with the kubelet failed", "err", err)
			continue
		}
		pl.registeredWith = kubelet
		pl.log.Info("registered with the kubelet", "endpoint", filepath.Base(pl.socket))
	}
}

// sameSocket compares inode and creation time: a socket the kubelet deletes and creates again
// may get the same inode back.
func sameSocket(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime())
}

// register tells the kubelet that pl serves its resource on pl's socket.
func register(ctx context.Context, kubeletSocket string, pl *plugin) error {
	conn, err := dial(kubeletSocket)
	if err != nil {
		return fmt.Errorf("connect to kubelet %s: %w", kubeletSocket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     filepath.Base(pl.socket),
		ResourceName: pl.res.Name,
		Options:      pl.options(),
	}, grpc.WaitForReady(true)) // a new kubelet creates its socket before it listens on it
	if err != nil {
		return fmt.Errorf("register %s with kubelet %s: %w", pl.res.Name, kubeletSocket, err)
	}
	return nil
}

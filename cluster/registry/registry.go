// Package registry is the local cluster's image registry: the OCI distribution API over a
// directory (go-containerregistry's registry), on the node's loopback, where containerd's mirror
// for docker.io points. kubelet then pulls the images users write (docker.io/kubevirt/...)
// although no registry is reachable from these machines; pods, which have their own network
// namespaces, cannot reach it and so cannot push over the images others pull.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Config is a registry server's.
type Config struct {
	// Addr is where it listens: a loopback address of the node's network namespace.
	Addr string
	// Dir holds the blobs, kept across restarts; manifests are pushed again on each cluster-up.
	Dir string
	Log *slog.Logger
}

// Server serves the registry.
type Server struct{ cfg Config }

// New checks cfg.
func New(cfg Config) (*Server, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("registry address %q: %w", cfg.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("registry address %q: want a loopback IP (nothing on the pod network may push)", cfg.Addr)
	}
	if cfg.Dir == "" {
		return nil, errors.New("registry directory is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}, nil
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("make registry directory: %w", err)
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           ggcr.New(ggcr.WithBlobHandler(ggcr.NewDiskBlobHandler(s.cfg.Dir)), ggcr.Logger(slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	s.cfg.Log.Info("registry serving", "addr", s.cfg.Addr, "dir", s.cfg.Dir)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve registry: %w", err)
	}
	return nil
}

// PushedAsLabel is the config label a pushed image carries: the name it was pushed under.
const PushedAsLabel = "slimvirt.io/pushed-as"

// Push puts the one image of a docker-archive tarball into the registry at addr under each
// of names (repository:tag, e.g. kubevirt/virtio-container-disk:latest). Each name gets an
// image of its own (the same layers, a config labelled with the name): containerd's CRI plugin
// keeps one record per image ID, and an image pulled under a second name with the ID of one
// imported under another (the tarball's own tag) left kubelet unable to find the first.
func Push(ctx context.Context, addr, tarPath string, names []string) error {
	base, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		return fmt.Errorf("read image %s: %w", tarPath, err)
	}
	cfg, err := base.ConfigFile()
	if err != nil {
		return fmt.Errorf("read the config of %s: %w", tarPath, err)
	}
	for _, n := range names {
		ref, err := name.ParseReference(addr+"/"+n, name.Insecure)
		if err != nil {
			return fmt.Errorf("image name %q: %w", n, err)
		}
		c := cfg.Config.DeepCopy()
		c.Labels = maps.Clone(c.Labels)
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels[PushedAsLabel] = n
		img, err := mutate.Config(base, *c)
		if err != nil {
			return fmt.Errorf("label %s for %s: %w", tarPath, n, err)
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("push %s as %s: %w", tarPath, ref, err)
		}
	}
	return nil
}

// Package importer fills a volume's disk.img from an image: fetched over HTTP(S) with resume
// after dropped connections, or streamed in by an upload. Images may be raw or qcow2, either
// optionally gzip or xz compressed; the result is a sparse raw disk.img of the volume's size.
package importer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/egress"
	"github.com/slimvirt/slimvirt/csi/state"
)

// Credentials reads what an HTTP source refers to in the volume's namespace.
type Credentials interface {
	BasicAuth(ctx context.Context, namespace, secret string) (user, password string, err error)
	CABundle(ctx context.Context, namespace, configMap string) ([]byte, error)
}

// Config tunes the importer; zero values are sensible.
type Config struct {
	// Credentials resolves secretRef and certConfigMap; nil refuses sources that use them.
	Credentials Credentials
	// Retries is how often a failed request or a dropped connection is retried (default 8).
	Retries int
	// Backoff is the first retry delay, doubled each time (default 1s).
	Backoff time.Duration
	// Idle is how long a connection may deliver nothing before it counts as dropped (default 60s).
	Idle time.Duration
	// Egress says which addresses an import may connect to; the zero value refuses the
	// node's own addresses, loopback, link-local and the like.
	Egress egress.Policy
	Log    *slog.Logger
}

// Importer fetches HTTP sources into volumes. It implements the driver's Filler.
type Importer struct {
	cfg Config
}

// New returns an importer.
func New(cfg Config) *Importer {
	if cfg.Retries == 0 {
		cfg.Retries = 8
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Idle == 0 {
		cfg.Idle = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Importer{cfg: cfg}
}

// scratchDir is the directory in each pool where qcow2 images are staged.
const scratchDir = ".scratch"

// ScratchPath is where a volume's qcow2 image is staged: in the pool (so it takes the pool's
// space, which the pool's free-space check sees), outside the volume. The file is unlinked
// while in use; the name only says which volume it was for.
func ScratchPath(vol state.Volume) string {
	return filepath.Join(filepath.Dir(vol.Dir), scratchDir, vol.ID+".qcow2")
}

// Import fetches src into vol's disk.img.
func (im *Importer) Import(ctx context.Context, vol state.Volume, src claim.Import, progress func(float64)) error {
	var user, pass string
	var ca []byte
	ns := ""
	if vol.Claim != nil {
		ns = vol.Claim.Namespace
	}
	if src.SecretRef != "" || src.CertConfigMap != "" {
		if im.cfg.Credentials == nil || ns == "" {
			return &PermanentError{Err: errors.New("secretRef and certConfigMap need the driver's Kubernetes access and a PVC")}
		}
	}
	var err error
	if src.SecretRef != "" {
		if user, pass, err = im.cfg.Credentials.BasicAuth(ctx, ns, src.SecretRef); err != nil {
			return err
		}
	}
	if src.CertConfigMap != "" {
		if ca, err = im.cfg.Credentials.CABundle(ctx, ns, src.CertConfigMap); err != nil {
			return err
		}
	}
	return im.Fetch(ctx, Request{URL: src.URL, Checksum: src.Checksum, Username: user, Password: pass, CA: ca},
		Target{Disk: filepath.Join(vol.Dir, diskimg.Name), Size: vol.Size, Scratch: ScratchPath(vol)}, progress)
}

// Request is one HTTP image.
type Request struct {
	URL                string
	Checksum           string
	Username, Password string
	// CA is PEM certificates that replace the system roots for this request.
	CA []byte
}

// Fetch downloads req into t.
func (im *Importer) Fetch(ctx context.Context, req Request, t Target, progress func(float64)) error {
	client, err := im.client(req.CA)
	if err != nil {
		return err
	}
	body := &resumingBody{
		ctx: ctx, client: client, url: req.URL, retries: im.cfg.Retries, backoff: im.cfg.Backoff,
		idle: im.cfg.Idle, log: im.cfg.Log,
		newReq: func(ctx context.Context) (*http.Request, error) {
			r, err := http.NewRequestWithContext(ctx, http.MethodGet, req.URL, nil)
			if err != nil {
				return nil, fmt.Errorf("make request for %s: %w", req.URL, err)
			}
			if req.Username != "" || req.Password != "" {
				r.SetBasicAuth(req.Username, req.Password)
			}
			// Ask for the bytes as stored: a transparently decompressed body would not match
			// the checksum or the Range offsets.
			r.Header.Set("Accept-Encoding", "identity")
			r.Header.Set("User-Agent", "slimvirt-csi-importer")
			return r, nil
		},
	}
	if err := body.open(); err != nil {
		return err
	}
	defer body.Close()
	start := time.Now()
	err = Write(ctx, Stream{R: body, Total: body.size, Checksum: req.Checksum, Progress: progress}, t)
	if err != nil {
		return err
	}
	im.cfg.Log.Info("imported image", "url", req.URL, "bytes", body.off, "resumes", body.resumes, "duration", time.Since(start))
	return nil
}

func (im *Importer) client(ca []byte) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Every connection, redirects and re-resolved names included, is checked on the address
	// dialled. No proxy from the environment: a proxy would make the connection on the
	// importer's behalf, past the check.
	tr.DialContext = im.cfg.Egress.Dialer().DialContext
	tr.Proxy = nil
	tr.ResponseHeaderTimeout = 60 * time.Second
	tr.DisableCompression = true
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, &PermanentError{Err: errors.New("the CA ConfigMap holds no PEM certificate")}
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
				return &PermanentError{Err: fmt.Errorf("redirect to %s refused: only http and https", r.URL.Scheme)}
			}
			if len(via) >= 10 {
				return &PermanentError{Err: errors.New("more than 10 redirects")}
			}
			return nil
		},
	}, nil
}

package vmiaccess

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// The files of the mounted Secret subresources.NodeAccessSecret.
const (
	CertFile     = "tls.crt" // the endpoint's serving certificate (subresources.NodeServerName)
	KeyFile      = "tls.key" // its key
	ClientCAFile = "ca.crt"  // the CA the aggregated server's client certificate must chain to
)

// certs serves the TLS configuration made from the files in a directory, made again whenever
// one of them changes. A Secret volume is updated in place (the kubelet swaps a symbolic link
// to a new directory of files), so each handshake looks at the files (three stats) and a
// rotated certificate is served without a restart.
type certs struct {
	dir string
	log *slog.Logger

	mu     sync.Mutex
	stamp  [3]fileStamp // of the files cfg was made from
	cfg    *tls.Config
	failed [3]fileStamp // of the files that last failed to load, logged once
}

// fileStamp tells a file's versions apart: a swapped link gives another inode, a rewrite
// another size or modification time.
type fileStamp struct {
	ino   uint64
	size  int64
	mtime time.Time
}

func newCerts(dir string, log *slog.Logger) (*certs, error) {
	c := &certs{dir: dir, log: log}
	stamp, err := c.stamps()
	if err != nil {
		return nil, err
	}
	cfg, err := c.load()
	if err != nil {
		return nil, err
	}
	c.stamp, c.cfg = stamp, cfg
	return c, nil
}

func (c *certs) stamps() ([3]fileStamp, error) {
	var out [3]fileStamp
	for i, name := range []string{CertFile, KeyFile, ClientCAFile} {
		fi, err := os.Stat(filepath.Join(c.dir, name))
		if err != nil {
			return out, fmt.Errorf("stat certificate file: %w", err)
		}
		out[i] = fileStamp{size: fi.Size(), mtime: fi.ModTime()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			out[i].ino = st.Ino
		}
	}
	return out, nil
}

// config is tls.Config.GetConfigForClient: the configuration of the current files, or of the
// last ones that loaded while the current ones do not (a Secret caught half-written).
func (c *certs) config(*tls.ClientHelloInfo) (*tls.Config, error) {
	stamp, err := c.stamps()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || stamp == c.stamp {
		if err != nil && c.failed != stamp {
			c.failed = stamp
			c.log.Warn("cannot read the VMI access certificates; serving the previous ones", "dir", c.dir, "err", err)
		}
		return c.cfg, nil
	}
	cfg, err := c.load()
	if err != nil {
		if c.failed != stamp {
			c.failed = stamp
			c.log.Warn("cannot load the VMI access certificates; serving the previous ones", "dir", c.dir, "err", err)
		}
		return c.cfg, nil
	}
	c.stamp, c.cfg = stamp, cfg
	c.log.Info("loaded new VMI access certificates", "dir", c.dir)
	return cfg, nil
}

// load makes the TLS configuration from the files: TLS 1.3 only, HTTP/1.1 only (websockets),
// and a client certificate of the CA in ClientCAFile for client authentication with the
// common name subresources.APIClientName.
func (c *certs) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.dir, CertFile), filepath.Join(c.dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(c.dir, ClientCAFile))
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("read client CA %s: no certificate in it", filepath.Join(c.dir, ClientCAFile))
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        pool,
		NextProtos:       []string{"http/1.1"},
		VerifyConnection: verifyClient,
	}, nil
}

// errNotAPIClient refuses a verified client certificate that is not the aggregated server's.
var errNotAPIClient = errors.New("client certificate is not " + subresources.APIClientName + "'s")

// verifyClient accepts only the aggregated server's client certificate: its chain has been
// verified against the client CA; its common name must be subresources.APIClientName and it
// must be meant for client authentication.
func verifyClient(cs tls.ConnectionState) error {
	if !isAPIClient(cs) {
		return errNotAPIClient
	}
	return nil
}

func isAPIClient(cs tls.ConnectionState) bool {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return false
	}
	leaf := cs.VerifiedChains[0][0]
	return leaf.Subject.CommonName == subresources.APIClientName && slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
}

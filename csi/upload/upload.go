// Package upload is slimvirt-csi's upload endpoint: an HTTPS server on every node that takes a
// disk image for an upload DataVolume whose volume lives on that node. The caller shows an
// upload token (api/uploadtoken) that the aggregated API issued for that one DataVolume, checked
// with the public key the controller publishes in a ConfigMap; the endpoint never sees, and
// never asks the API server about, a user's Kubernetes credentials. The image is written like
// an import: raw, qcow2, gz or xz, streamed into the sparse disk.img.
package upload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/csi/state"
)

// PathPrefix starts the upload URL path: PathPrefix + <namespace>/datavolumes/<name>/upload.
const PathPrefix = "/v1alpha1/namespaces/"

// ChecksumHeader carries an optional algorithm:hex checksum of the body; the volume is ready
// only if it matches.
const ChecksumHeader = "Upload-Checksum"

// Volumes is the part of the driver the endpoint uses.
type Volumes interface {
	VolumeForClaim(namespace, name string) (state.Volume, error)
	Upload(ctx context.Context, id string, write driver.WriteFunc) error
}

// Config configures the endpoint.
type Config struct {
	Addr string
	// CertFile and KeyFile are the serving certificate; a self-signed one is made when empty.
	CertFile, KeyFile string
	// Hosts go into a self-signed certificate's names.
	Hosts   []string
	Client  kubernetes.Interface
	Volumes Volumes
	// NodeID is this node. With a shared certificate (CertFile), an upload for a volume on
	// another node is forwarded to that node's endpoint at its InternalIP and PeerPort.
	NodeID   string
	PeerPort int
	// KeyNamespace holds the ConfigMap subresources.UploadTokenPublicConfigMap with the key
	// upload tokens are checked with; empty means $POD_NAMESPACE (the release's namespace).
	KeyNamespace string
	// KeyMaxAge is how long that key is used before it is read again (DefaultKeyMaxAge if 0).
	KeyMaxAge time.Duration
	Log       *slog.Logger
}

// Server is the upload endpoint.
type Server struct {
	cfg  Config
	cert tls.Certificate
	keys *keySource
}

// New checks cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil || cfg.Volumes == nil {
		return nil, errors.New("the upload endpoint needs Kubernetes access and the driver")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.KeyNamespace == "" {
		cfg.KeyNamespace = os.Getenv("POD_NAMESPACE")
	}
	if cfg.KeyNamespace == "" {
		return nil, errors.New("the upload endpoint needs the namespace of ConfigMap " + subresources.UploadTokenPublicConfigMap +
			" (the upload token key): set $POD_NAMESPACE")
	}
	if cfg.KeyMaxAge <= 0 {
		cfg.KeyMaxAge = DefaultKeyMaxAge
	}
	if cfg.PeerPort == 0 {
		if _, port, err := net.SplitHostPort(cfg.Addr); err == nil {
			cfg.PeerPort, _ = strconv.Atoi(port)
		}
	}
	s := &Server{cfg: cfg, keys: &keySource{cs: cfg.Client, ns: cfg.KeyNamespace, maxAge: cfg.KeyMaxAge}}
	var err error
	if s.cert, err = s.loadCertificate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Run serves HTTPS until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves HTTPS on lis until ctx ends.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	cert, err := s.certificate()
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// After the timeout the remaining uploads are cut; ServeTLS has returned by then.
		_ = hs.Shutdown(sctx)
	}()
	s.cfg.Log.Info("serving uploads", "addr", lis.Addr().String())
	if err := hs.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve uploads: %w", err)
	}
	return nil
}

func (s *Server) certificate() (tls.Certificate, error) { return s.cert, nil }

func (s *Server) loadCertificate() (tls.Certificate, error) {
	if s.cfg.CertFile != "" {
		c, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
		if err != nil {
			return c, fmt.Errorf("load upload certificate %s: %w", s.cfg.CertFile, err)
		}
		return c, nil
	}
	return SelfSigned(s.cfg.Hosts)
}

// SelfSigned makes a certificate for hosts (names or IPs), valid for a year.
func SelfSigned(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make upload key: %w", err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "slimvirt-upload"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make upload certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Handler serves the upload API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc(PathPrefix, s.upload)
	return mux
}

// Result is the JSON body of every answer.
type Result struct {
	Phase   string `json:"phase,omitempty"`
	Message string `json:"message,omitempty"`
}

// reply writes the upload's result. The status code is already sent when the body fails to
// go out, and there is no one left to tell.
func reply(w http.ResponseWriter, code int, phase, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(Result{Phase: phase, Message: msg})
}

// parsePath splits /v1alpha1/namespaces/<ns>/datavolumes/<name>/upload.
func parsePath(p string) (ns, name string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(p, PathPrefix), "/")
	if len(parts) != 4 || parts[1] != "datavolumes" || parts[3] != "upload" || parts[0] == "" || parts[2] == "" {
		return "", "", false
	}
	return parts[0], parts[2], true
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := parsePath(r.URL.Path)
	if !ok {
		reply(w, http.StatusNotFound, "", "want "+PathPrefix+"<namespace>/datavolumes/<name>/upload")
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		reply(w, http.StatusMethodNotAllowed, "", "use POST or PUT")
		return
	}
	claims, pvc, no := s.authorize(r, ns, name)
	if no != nil {
		s.cfg.Log.Info("upload refused", "namespace", ns, "datavolume", name, "code", no.code, "reason", no.msg)
		reply(w, no.code, "", no.msg)
		return
	}
	vol, err := s.cfg.Volumes.VolumeForClaim(ns, name)
	if err != nil {
		if s.cfg.CertFile == "" || r.Header.Get(forwardedHeader) != "" {
			reply(w, http.StatusNotFound, "", fmt.Sprintf("the volume of DataVolume %s/%s is not on this node (yet)", ns, name))
			return
		}
		node, addr, err := s.peer(r.Context(), pvc)
		if err != nil {
			reply(w, http.StatusNotFound, "", err.Error())
			return
		}
		s.forward(w, r, node, addr)
		return
	}
	log := s.cfg.Log.With("namespace", ns, "datavolume", name, "volume", vol.ID, "uid", claims.UID, "tokenExpires", claims.Expires)
	log.Info("upload started", "bytes", r.ContentLength)
	start := time.Now()
	err = s.cfg.Volumes.Upload(r.Context(), vol.ID, func(ctx context.Context, disk string, size int64, progress func(float64)) error {
		return importer.Write(ctx, importer.Stream{R: r.Body, Total: r.ContentLength, Checksum: r.Header.Get(ChecksumHeader), Progress: progress},
			importer.Target{Disk: disk, Size: size, Scratch: importer.ScratchPath(vol)})
	})
	switch {
	case err == nil:
		log.Info("upload done", "duration", time.Since(start))
		reply(w, http.StatusOK, string(claim.PhaseReady), "upload complete")
	case errors.Is(err, driver.ErrUploadBusy):
		reply(w, http.StatusConflict, "", err.Error())
	case errors.Is(err, driver.ErrNotUpload):
		reply(w, http.StatusBadRequest, "", err.Error())
	default:
		log.Info("upload failed", "err", err)
		code := http.StatusInternalServerError
		var p *importer.PermanentError
		if errors.As(err, &p) {
			code = http.StatusUnprocessableEntity
		}
		reply(w, code, string(claim.PhaseFailed), err.Error())
	}
}

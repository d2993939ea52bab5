// Package client uploads a disk image to slimvirt's upload endpoint for an upload DataVolume:
// RequestToken asks the aggregated API (through the kube-apiserver, with the caller's
// Kubernetes credentials) for an upload token of that DataVolume, and Upload sends the image to
// the endpoint with that token only. slimctl image-upload uses it.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// Options say where and as whom to upload.
type Options struct {
	// URL is the endpoint's base, e.g. https://10.0.0.5:8443.
	URL string
	// Token is the upload token RequestToken got for this DataVolume; never a Kubernetes
	// credential, which the endpoint refuses anyway.
	Token string
	// CA is PEM certificates the endpoint's certificate must chain to; with none, the system
	// roots are used unless Insecure is set.
	CA []byte
	// Insecure skips verifying the endpoint's certificate (a self-signed endpoint).
	Insecure bool
	// Checksum is algorithm:hex of the image; the endpoint then refuses a corrupted upload.
	Checksum string
	// Progress is called as bytes are sent, with the total (-1 when unknown).
	Progress func(sent, total int64)
	// HTTPClient replaces the default client (tests, proxies).
	HTTPClient *http.Client
}

// Error is the endpoint's refusal.
type Error struct {
	StatusCode int
	Message    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("upload refused (%d): %s", e.StatusCode, e.Message)
}

// Upload sends size bytes of image (size -1 if unknown) for the DataVolume namespace/name and
// returns once the volume is complete and verified.
func Upload(ctx context.Context, o Options, namespace, name string, image io.Reader, size int64) error {
	if o.URL == "" || o.Token == "" {
		return errors.New("an endpoint URL and an upload token are required")
	}
	u, err := url.Parse(strings.TrimRight(o.URL, "/") + "/v1alpha1/namespaces/" + url.PathEscape(namespace) + "/datavolumes/" + url.PathEscape(name) + "/upload")
	if err != nil {
		return fmt.Errorf("parse upload URL %s: %w", o.URL, err)
	}
	hc := o.HTTPClient
	if hc == nil {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.Insecure} //nolint:gosec // asked for
		if len(o.CA) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(o.CA) {
				return errors.New("the CA holds no PEM certificate")
			}
			tlsCfg.RootCAs = pool
		}
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
	}
	body := &progressReader{r: image, total: size, progress: o.Progress}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), body)
	if err != nil {
		return fmt.Errorf("make upload request: %w", err)
	}
	req.ContentLength = size
	if size < 0 {
		req.ContentLength = -1
	}
	req.Header.Set(subresources.UploadTokenHeader, "Bearer "+o.Token)
	req.Header.Set("Content-Type", "application/octet-stream")
	if o.Checksum != "" {
		req.Header.Set("Upload-Checksum", o.Checksum)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("upload to %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	var res struct {
		Phase   string `json:"phase"`
		Message string `json:"message"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(data, &res); err != nil {
		res.Message = strings.TrimSpace(string(data))
	}
	if resp.StatusCode != http.StatusOK {
		return &Error{StatusCode: resp.StatusCode, Message: res.Message}
	}
	return nil
}

type progressReader struct {
	r        io.Reader
	sent     int64
	total    int64
	progress func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.sent += int64(n)
	if p.progress != nil && n > 0 {
		p.progress(p.sent, p.total)
	}
	return n, err
}

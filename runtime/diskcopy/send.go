package diskcopy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/slimvirt/slimvirt/csi/upload/client"
)

// SendOptions say where a registry DataVolume's importer sends the image's disk.
type SendOptions struct {
	// URL is the upload endpoint's base, e.g. https://10.96.0.20.
	URL string
	// ServerName is the name the endpoint's certificate is checked for
	// (slimvirt-upload.<namespace>.svc), since URL names an IP.
	ServerName string
	// CA is the PEM bundle the endpoint's certificate must chain to.
	CA []byte
	// Token is the upload token of the DataVolume.
	Token string
	// Namespace and Name are the DataVolume's.
	Namespace, Name string
}

// ErrRefused says the endpoint refused the image for good (not a disk image, too large, a
// corrupt or hostile qcow2): sending it again cannot help.
var ErrRefused = errors.New("the upload endpoint refused the image")

// Send uploads the disk found at src (FindDisk's rules) to the upload endpoint. The endpoint
// reads it as it reads any upload: the format from the bytes, qcow2 checked, raw written sparse.
func Send(ctx context.Context, src string, o SendOptions) error {
	if len(o.CA) == 0 {
		return errors.New("send the disk: no CA to check the upload endpoint with")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(o.CA) {
		return errors.New("send the disk: the CA holds no PEM certificate")
	}
	disk, err := FindDisk(src)
	if err != nil {
		return err
	}
	f, err := os.Open(disk)
	if err != nil {
		return fmt.Errorf("open %s: %w", disk, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", disk, err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: o.ServerName}}}
	err = client.Upload(ctx, client.Options{URL: o.URL, Token: o.Token, HTTPClient: hc}, o.Namespace, o.Name, f, fi.Size())
	var refused *client.Error
	if errors.As(err, &refused) && (refused.StatusCode == http.StatusUnprocessableEntity || refused.StatusCode == http.StatusBadRequest) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if err != nil {
		return fmt.Errorf("send %s (%d bytes): %w", disk, fi.Size(), err)
	}
	return nil
}

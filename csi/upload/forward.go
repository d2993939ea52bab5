package upload

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/csi/claim"
)

// forwardedHeader marks a request one endpoint passed to another, so it is never passed on again.
const forwardedHeader = "X-Slimvirt-Upload-Forwarded"

// peer finds the node that holds a PVC's volume and the address of its upload endpoint: the
// PV's node affinity names the node, the node's InternalIP and the endpoints' common port make
// the address.
func (s *Server) peer(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (node, addr string, err error) {
	ns, name := pvc.Namespace, pvc.Name
	if pvc.Spec.VolumeName == "" {
		return "", "", fmt.Errorf("PVC %s/%s is not bound yet", ns, name)
	}
	pv, err := s.cfg.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", "", fmt.Errorf("get PV %s: %w", pvc.Spec.VolumeName, err)
	}
	node = claim.NodeOf(pv)
	if node == "" {
		return "", "", fmt.Errorf("PV %s is not pinned to a node", pv.Name)
	}
	if node == s.cfg.NodeID {
		return node, "", fmt.Errorf("the volume of PVC %s/%s is not ready on this node yet", ns, name)
	}
	n, err := s.cfg.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return node, "", fmt.Errorf("get node %s: %w", node, err)
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return node, net.JoinHostPort(a.Address, strconv.Itoa(s.cfg.PeerPort)), nil
		}
	}
	return node, "", fmt.Errorf("node %s has no InternalIP", node)
}

// forward streams the request, upload token included, to the endpoint on the volume's node,
// which checks the token again. The hop is TLS where the peer must present the very certificate
// this endpoint serves (the chart gives all nodes one), so the token only goes to a holder of
// its key.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, node, addr string) {
	own, err := s.certificate()
	if err != nil || len(own.Certificate) == 0 {
		reply(w, http.StatusInternalServerError, "", "no certificate to check the peer with")
		return
	}
	leaf := own.Certificate[0]
	target := &url.URL{Scheme: "https", Host: addr}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true, //nolint:gosec // replaced by the pinning below
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 || !bytes.Equal(raw[0], leaf) {
					return errors.New("the peer does not present the upload endpoints' certificate")
				}
				return nil
			},
		},
	}
	proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		reply(w, http.StatusBadGateway, "", fmt.Sprintf("forward to node %s (%s): %v", node, addr, err))
	}
	r.Header.Set(forwardedHeader, s.cfg.NodeID)
	s.cfg.Log.Info("forwarding upload", "path", r.URL.Path, "node", node, "addr", addr)
	proxy.ServeHTTP(w, r)
}

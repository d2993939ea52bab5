package subresources

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// maxProxiedBody bounds the body of a PUT passed to the node agent (pause options and the like).
const maxProxiedBody = 64 << 10

// vmiAction proxies a VMI subresource to the node agent on the VMI's node.
func (s *Server) vmiAction(w http.ResponseWriter, r *http.Request, t target) {
	ctx := r.Context()
	log := s.requestLog(ctx, t)
	vmi := &v1.VirtualMachineInstance{}
	if err := s.get(ctx, t, vmi); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := running(vmi); err != nil {
		log.Info("refused: VMI not running", "phase", vmi.Status.Phase)
		s.writeError(w, r, apierrors.NewConflict(t.groupResource(), t.name, err))
		return
	}
	node := vmi.Status.NodeName
	addr, err := s.nodeAddress(r, node)
	if err != nil {
		log.Info("refused: node unknown", "node", node, "error", err)
		s.writeError(w, r, apierrors.NewServiceUnavailable(fmt.Sprintf("VMI %s runs on node %s: %v", t, node, err)))
		return
	}
	log.Info("proxying to node agent", "node", node, "address", addr)
	s.proxyToNode(w, r, node, addr, api.NodePath(t.namespace, t.name, t.subresource))
}

// running says why a VMI cannot be reached on a node, or nil when it can.
func running(vmi *v1.VirtualMachineInstance) error {
	if vmi.Status.Phase == v1.Running && vmi.Status.NodeName != "" {
		return nil
	}
	phase := string(vmi.Status.Phase)
	if phase == "" {
		phase = "none yet"
	}
	return fmt.Errorf("VMI %s/%s is not running (phase %s)", vmi.Namespace, vmi.Name, phase)
}

// nodeAddress is host:port of the node agent on a node: its InternalIP and the access port.
func (s *Server) nodeAddress(r *http.Request, name string) (string, error) {
	node := &corev1.Node{}
	if err := s.cfg.Client.Get(r.Context(), client.ObjectKey{Name: name}, node); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("node %s not found", name)
		}
		s.log.Error("read node", "node", name, "error", err)
		return "", fmt.Errorf("read node %s", name)
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address) != nil {
			return net.JoinHostPort(a.Address, strconv.Itoa(s.cfg.NodePort)), nil
		}
	}
	return "", fmt.Errorf("node %s has no InternalIP", name)
}

// proxyToNode passes the request to the node agent, websocket upgrades included (ReverseProxy
// switches protocols and copies both ways). Only the headers the node agent needs go along:
// never the caller's credentials or the front proxy's identity headers, and no Origin, which
// only the kube-apiserver's clients' browsers set and the node agent has no use for.
func (s *Server) proxyToNode(w http.ResponseWriter, r *http.Request, node, addr, path string) {
	if r.Body != nil && r.Header.Get("Upgrade") == "" {
		r.Body = http.MaxBytesReader(w, r.Body, maxProxiedBody)
	}
	rp := &httputil.ReverseProxy{
		Transport: s.nodes,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = &url.URL{Scheme: "https", Host: addr, Path: path}
			pr.Out.Host = ""
			pr.Out.Header = forwardedHeaders(pr.Out.Header)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Warn("node agent unreachable", "node", node, "address", addr, "error", err)
			s.writeError(w, r, apierrors.NewServiceUnavailable(fmt.Sprintf("the node agent on node %s (%s) is unreachable: %v", node, addr, err)))
		},
	}
	rp.ServeHTTP(w, r)
}

// forwardedHeaders is the allowlist of headers passed to the node agent. Connection and Upgrade
// are the ones ReverseProxy set back for an upgrade.
func forwardedHeaders(in http.Header) http.Header {
	out := http.Header{}
	for _, k := range []string{
		"Accept", "Content-Type", "User-Agent", "Connection", "Upgrade",
		"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions",
	} {
		if v := in.Values(k); len(v) > 0 {
			out[k] = append([]string(nil), v...)
		}
	}
	return out
}

// nodeTransport dials the node agents with mutual TLS, asking NodeTLS for the configuration
// at each dial so rotated certificates apply to new connections. HTTP/1.1 only: websockets
// upgrade HTTP/1.1 connections.
func nodeTransport(nodeTLS func() (*tls.Config, error)) *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			cfg, err := nodeTLS()
			if err != nil {
				return nil, fmt.Errorf("make node agent TLS config: %w", err)
			}
			cfg = cfg.Clone()
			if cfg.ServerName == "" {
				cfg.ServerName = api.NodeServerName
			}
			cfg.NextProtos = []string{"http/1.1"}
			raw, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conn := tls.Client(raw, cfg)
			if err := conn.HandshakeContext(ctx); err != nil {
				_ = raw.Close() // the handshake error is the one to report
				return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
			}
			return conn, nil
		},
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: time.Minute,
	}
}

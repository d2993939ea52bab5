// Package subresources serves slimvirt's aggregated API, subresources.slimvirt.io: the console,
// VNC and power actions of VMIs (proxied to the node agent on the VMI's node), start, stop and
// restart of VMs (carried out by annotating the VM for the controller) and upload tokens of
// DataVolumes. It is a k8s.io/apiserver GenericAPIServer without storage: the kube-apiserver
// authenticates the callers (front-proxy headers or TokenReview) and authorizes them
// (SubjectAccessReview), exactly as for any aggregated API server.
package subresources

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/util/compatibility"
	"sigs.k8s.io/controller-runtime/pkg/client"

	api "github.com/slimvirt/slimvirt/api/subresources"
)

// DefaultPort is the port the server listens on unless Config.Port says otherwise.
const DefaultPort = 8443

// TokenIssuer issues upload tokens for DataVolumes.
type TokenIssuer interface {
	Issue(ctx context.Context, namespace, dataVolume string, uid types.UID) (token string, expires time.Time, err error)
}

// Config is what the server needs.
type Config struct {
	// Client reads VMIs, VMs, DataVolumes and Nodes and patches VMs, with the controller's identity.
	Client client.Client
	// ServingCert is the server's certificate (it may rotate).
	ServingCert dynamiccertificates.CertKeyContentProvider
	// NodeTLS is the client TLS configuration for the node agents (client certificate, RootCAs,
	// ServerName api.NodeServerName); it is called for each connection, so rotation applies.
	NodeTLS func() (*tls.Config, error)
	// NodePort is the node agents' access port (api.DefaultNodePort when 0).
	NodePort int
	// Tokens issues upload tokens.
	Tokens TokenIssuer
	// BindAddress and Port are where to listen (0.0.0.0 and DefaultPort when unset).
	BindAddress net.IP
	Port        int
	// Listener, when set, is used instead of BindAddress and Port (tests listen on a free port).
	Listener net.Listener
	// Kubeconfig is the kubeconfig file the server uses for TokenReviews, SubjectAccessReviews and
	// reading kube-system/extension-apiserver-authentication; the in-cluster config when empty.
	Kubeconfig string
	Log        *slog.Logger
}

// Server is the aggregated API server. It is a controller-runtime Runnable.
type Server struct {
	cfg       Config
	log       *slog.Logger
	codecs    serializer.CodecFactory
	generic   *genericapiserver.GenericAPIServer
	addr      net.Addr
	nodes     *http.Transport
	resources []metav1.APIResource
}

// New configures the server and opens its listener; Start serves it.
func New(cfg Config) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log, codecs: newCodecs(), resources: apiResources()}
	gc, err := s.genericConfig()
	if err != nil {
		return nil, err
	}
	s.addr = gc.SecureServing.Listener.Addr()
	generic, err := gc.Complete(nil).New("slimvirt-subresources", genericapiserver.NewEmptyDelegate())
	if err != nil {
		_ = gc.SecureServing.Listener.Close() // the New error is the one to report
		return nil, fmt.Errorf("make aggregated API server: %w", err)
	}
	s.generic = generic
	s.nodes = nodeTransport(cfg.NodeTLS)
	if err := s.install(); err != nil {
		_ = gc.SecureServing.Listener.Close() // the install error is the one to report
		return nil, err
	}
	return s, nil
}

func (c *Config) defaults() error {
	switch {
	case c.Client == nil:
		return errors.New("subresources: Client is required")
	case c.ServingCert == nil:
		return errors.New("subresources: ServingCert is required")
	case c.NodeTLS == nil:
		return errors.New("subresources: NodeTLS is required")
	case c.Tokens == nil:
		return errors.New("subresources: Tokens is required")
	}
	if c.NodePort == 0 {
		c.NodePort = api.DefaultNodePort
	}
	if c.BindAddress == nil {
		c.BindAddress = net.IPv4zero
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// genericConfig is metrics-server's recipe: serving, delegated authentication and delegated
// authorization, no storage.
func (s *Server) genericConfig() (*genericapiserver.Config, error) {
	gc := genericapiserver.NewConfig(s.codecs)
	gc.EffectiveVersion = compatibility.DefaultBuildEffectiveVersion()
	// The console and VNC are websockets that live as long as the user watches them.
	gc.LongRunningFunc = genericfilters.BasicLongRunningRequestCheck(sets.NewString("watch"), sets.NewString(api.Console, api.VNC))

	serving := genericoptions.NewSecureServingOptions()
	serving.BindAddress = s.cfg.BindAddress
	serving.BindPort = s.cfg.Port
	serving.ServerCert.GeneratedCert = s.cfg.ServingCert
	serving.Listener = s.cfg.Listener
	if err := serving.WithLoopback().ApplyTo(&gc.SecureServing, &gc.LoopbackClientConfig); err != nil {
		if serving.Listener != nil {
			_ = serving.Listener.Close() // the ApplyTo error is the one to report
		}
		return nil, fmt.Errorf("configure serving: %w", err)
	}
	closeOnErr := func(err error) (*genericapiserver.Config, error) {
		_ = gc.SecureServing.Listener.Close() // err is the one to report
		return nil, err
	}

	authn := genericoptions.NewDelegatingAuthenticationOptions()
	authn.RemoteKubeConfigFile = s.cfg.Kubeconfig
	if err := authn.ApplyTo(&gc.Authentication, gc.SecureServing, nil); err != nil {
		return closeOnErr(fmt.Errorf("configure delegated authentication: %w", err))
	}
	// Defaults: /healthz, /readyz and /livez need no authorization, system:masters is allowed
	// everything (the aggregator's availability checks use it); all else is a
	// SubjectAccessReview.
	authz := genericoptions.NewDelegatingAuthorizationOptions()
	authz.RemoteKubeConfigFile = s.cfg.Kubeconfig
	if err := authz.ApplyTo(&gc.Authorization); err != nil {
		return closeOnErr(fmt.Errorf("configure delegated authorization: %w", err))
	}
	return gc, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.addr }

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	s.log.Info("serving aggregated API", "group", api.Group, "address", s.addr.String())
	if err := s.generic.PrepareRun().RunWithContext(ctx); err != nil {
		return fmt.Errorf("serve aggregated API: %w", err)
	}
	return nil
}

// NeedLeaderElection is false: every controller replica serves the API.
func (s *Server) NeedLeaderElection() bool { return false }

// newCodecs encodes the discovery documents and Status answers.
func newCodecs() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	scheme.AddUnversionedTypes(schema.GroupVersion{Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	return serializer.NewCodecFactory(scheme)
}

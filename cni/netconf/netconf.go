// Package netconf reads what the runtime hands the slimvirt CNI plugin (stdin config, CNI_ARGS,
// pod annotations) and turns it into a validated list of VM interfaces. Everything it reads is
// untrusted: the annotation is acted on only when its signature verifies, and even then every
// field is checked before the plugin touches a network namespace.
package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// PodAnnotationsCapability is the capability containerd and CRI-O honour to pass pod annotations.
const PodAnnotationsCapability = "io.kubernetes.cri.pod-annotations"

// DefaultVMNetworkCIDR is KubeVirt's masquerade network.
const DefaultVMNetworkCIDR = "10.0.2.0/24"

// Config is the plugin's entry in the conflist.
type Config struct {
	types.PluginConf
	// SigningKeyFile holds the key that signs launcher pods' interface annotations.
	SigningKeyFile string `json:"signingKeyFile"`
	// StateDir holds one record per attachment (for DEL and GC).
	StateDir      string        `json:"stateDir"`
	RuntimeConfig RuntimeConfig `json:"runtimeConfig"`
}

// RuntimeConfig holds the capability arguments the runtime injects.
type RuntimeConfig struct {
	PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
}

// K8sArgs is the part of CNI_ARGS the kubelet's runtimes set.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive // CNI_ARGS key
}

// Parse reads the plugin configuration from stdin data.
func Parse(stdin []byte) (*Config, error) {
	conf := &Config{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("parse network configuration: %w", err)
	}
	return conf, nil
}

// CheckStateDir says whether the configured state directory can be used. It is checked only when
// the plugin has to act: a broken entry must not fail the pods it passes through.
func (c *Config) CheckStateDir() error {
	if c.StateDir == "" {
		return errors.New("stateDir is required")
	}
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("stateDir %q is not absolute", c.StateDir)
	}
	return nil
}

// ParseArgs reads the pod's namespace, name and UID from CNI_ARGS (containerd and CRI-O set
// all three).
func ParseArgs(args string) (launcherpod.PodRef, error) {
	k := K8sArgs{}
	if err := types.LoadArgs(args, &k); err != nil {
		return launcherpod.PodRef{}, fmt.Errorf("parse CNI_ARGS: %w", err)
	}
	return launcherpod.PodRef{Namespace: string(k.K8S_POD_NAMESPACE), Name: string(k.K8S_POD_NAME), UID: string(k.K8S_POD_UID)}, nil
}

// LoadKey reads the signing key. A missing file is not an error: the plugin then acts on no pod.
func LoadKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read signing key %s: %w", path, err)
	}
	return []byte(strings.TrimSpace(string(key))), nil
}

// VMInterface is a VM interface as the plugin reads it. Queues > 1 makes a multi-queue tap
// (QEMU and libvirt open a tap with IFF_MULTI_QUEUE exactly when they use more than one queue,
// and the kernel refuses a mismatch), so it must equal the virtio queue count the launcher
// configures.
type VMInterface struct {
	launcherpod.Interface
}

// MaxQueues bounds Queues (the kernel's limit for a tap is 256).
const MaxQueues = 256

// Interfaces returns the VM interfaces of a launcher pod, or nil when the pod's annotation does
// not verify with key for exactly this pod object (namespace, name and UID): a forged annotation,
// or one copied from a deleted launcher pod onto a new pod of the same name, leaves the pod an
// ordinary pod, passed through untouched, as it would be without slimvirt. A verified annotation
// that does not parse or validate is an error: the controller wrote it wrong.
func Interfaces(key []byte, pod launcherpod.PodRef, annotations map[string]string) ([]VMInterface, error) {
	value := annotations[launcherpod.AnnotationInterfaces]
	if err := launcherpod.VerifyPod(key, pod, value, annotations[launcherpod.AnnotationSignature]); err != nil {
		return nil, nil
	}
	parsed, err := launcherpod.ParseInterfaces(value)
	if err != nil {
		return nil, err
	}
	ifaces := make([]VMInterface, len(parsed))
	for i := range parsed {
		ifaces[i] = VMInterface{Interface: parsed[i]}
	}
	if err := Validate(ifaces); err != nil {
		return nil, fmt.Errorf("validate annotation %s: %w", launcherpod.AnnotationInterfaces, err)
	}
	return ifaces, nil
}

// MaxInterfaces is how many VM interfaces one pod may carry; the pod has one primary network.
const MaxInterfaces = 1

// Validate checks every field of the interfaces.
func Validate(ifaces []VMInterface) error {
	if len(ifaces) == 0 {
		return errors.New("no interface")
	}
	if len(ifaces) > MaxInterfaces {
		return fmt.Errorf("%d interfaces, at most %d supported", len(ifaces), MaxInterfaces)
	}
	for i, iface := range ifaces {
		if err := validateInterface(iface); err != nil {
			return fmt.Errorf("interface %d (%q): %w", i, iface.Name, err)
		}
	}
	return nil
}

func validateInterface(iface VMInterface) error {
	if !launcherpod.IsDNSLabel(iface.Name) {
		return fmt.Errorf("name %q is not a DNS label", iface.Name)
	}
	switch iface.Binding {
	case launcherpod.BindingBridge, launcherpod.BindingMasquerade:
	default:
		return fmt.Errorf("binding %q is not bridge or masquerade", iface.Binding)
	}
	if iface.MAC != "" {
		if _, err := GuestMAC(iface.MAC); err != nil {
			return err
		}
	}
	if iface.VMNetworkCIDR != "" {
		if iface.Binding != launcherpod.BindingMasquerade {
			return errors.New("vmNetworkCIDR is only for the masquerade binding")
		}
		if _, err := VMNetwork(iface.VMNetworkCIDR); err != nil {
			return err
		}
	}
	if len(iface.Ports) > 0 && iface.Binding != launcherpod.BindingMasquerade {
		return errors.New("ports are only for the masquerade binding")
	}
	if len(iface.Ports) > 128 {
		return fmt.Errorf("%d ports, at most 128", len(iface.Ports))
	}
	for _, p := range iface.Ports {
		if p.Protocol != "TCP" && p.Protocol != "UDP" {
			return fmt.Errorf("port %d: protocol %q is not TCP or UDP", p.Port, p.Protocol)
		}
		if p.Port < 1 || p.Port > 65535 {
			return fmt.Errorf("port %d out of range 1-65535", p.Port)
		}
	}
	if iface.Queues < 0 || iface.Queues > MaxQueues {
		return fmt.Errorf("queues %d out of range 0-%d", iface.Queues, MaxQueues)
	}
	if iface.TapOwner != nil && (*iface.TapOwner < 0 || *iface.TapOwner > 1<<31-2) {
		return fmt.Errorf("tapOwner %d is not a valid uid", *iface.TapOwner)
	}
	return nil
}

// GuestMAC parses a guest MAC: 6 bytes, unicast.
func GuestMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("parse mac %q: %w", s, err)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("mac %q is not a 48-bit address", s)
	}
	if mac[0]&1 == 1 {
		return nil, fmt.Errorf("mac %q is multicast", s)
	}
	if net.HardwareAddr(make([]byte, 6)).String() == mac.String() {
		return nil, fmt.Errorf("mac %q is zero", s)
	}
	return mac, nil
}

// VMNetworkAddrs is a parsed masquerade network: the bridge holds Gateway, the guest gets Guest.
type VMNetworkAddrs struct {
	Network *net.IPNet
	Gateway net.IP
	Guest   net.IP
}

// VMNetwork parses a masquerade vmNetworkCIDR (IPv4, /8 to /30): gateway is the first host, the
// guest the second, as in KubeVirt.
func VMNetwork(cidr string) (*VMNetworkAddrs, error) {
	if cidr == "" {
		cidr = DefaultVMNetworkCIDR
	}
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("parse vmNetworkCIDR %q: %w", cidr, err)
	}
	if ip.To4() == nil {
		return nil, fmt.Errorf("vmNetworkCIDR %q is not IPv4", cidr)
	}
	ones, _ := n.Mask.Size()
	if ones < 8 || ones > 30 {
		return nil, fmt.Errorf("vmNetworkCIDR %q: prefix must be /8 to /30", cidr)
	}
	if !ip.Equal(n.IP) {
		return nil, fmt.Errorf("vmNetworkCIDR %q has host bits set", cidr)
	}
	base := n.IP.To4()
	gw := make(net.IP, 4)
	copy(gw, base)
	gw[3]++
	guest := make(net.IP, 4)
	copy(guest, base)
	guest[3] += 2
	return &VMNetworkAddrs{Network: n, Gateway: gw, Guest: guest}, nil
}

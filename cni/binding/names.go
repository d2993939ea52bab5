// Package binding wires a launcher pod's network namespace for its VM (phase 1, run by the CNI
// plugin as root): the bridge binding (pod NIC moved behind a bridge with the VM's tap, a dummy
// twin keeping the pod's addresses) and the masquerade binding (VM on a private network behind
// NAT). Every function here runs in the pod's netns (inside ns.Do) unless it says otherwise.
package binding

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// KubeVirt's names, so its troubleshooting steps stay valid.
const (
	// TapName is the VM's tap device.
	TapName = "tap0"
	// ServerIP is the DHCP server identifier, held by the bridge (bridge binding).
	ServerIP = "169.254.75.10"
	// MasqueradeBridgeMAC is the masquerade bridge's fixed MAC, as in KubeVirt.
	MasqueradeBridgeMAC = "02:00:00:00:00:00"
	// NFTableName is the nftables table (families ip and bridge) the plugin owns in the pod.
	NFTableName = "slimvirt"
)

// ErrRollback marks a failed ADD whose undoing failed too: the netns is half wired and the
// attachment's record must be kept for DEL.
var ErrRollback = errors.New("rollback incomplete")

// BridgeName is the bridge for pod interface ifName ("k6t-eth0").
func BridgeName(ifName string) string { return "k6t-" + ifName }

// NICName is the renamed pod NIC ("eth0-nic").
func NICName(ifName string) string { return ifName + "-nic" }

// TwinPeerName is the peer of the twin when the kernel has no dummy driver ("eth0-twin").
func TwinPeerName(ifName string) string { return ifName + "-twin" }

// Record is what the plugin leaves on the bridge (as its alias) for the launcher to read: the
// launcher runs unprivileged in the same netns and needs no other channel.
type Record struct {
	Binding  launcherpod.Binding `json:"binding"`
	GuestMAC string              `json:"guestMAC"`
	// VMNetwork is the masquerade network (CIDR).
	VMNetwork string `json:"vmNetwork,omitempty"`
}

// Encode returns the alias text (at most 255 bytes, the kernel's limit for IFLA_IFALIAS).
func (r Record) Encode() (string, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("encode binding record: %w", err)
	}
	if len(b) > 255 {
		return "", fmt.Errorf("encode binding record: %d bytes, more than 255", len(b))
	}
	return string(b), nil
}

// DecodeRecord parses a bridge alias.
func DecodeRecord(alias string) (Record, error) {
	var r Record
	if err := json.Unmarshal([]byte(alias), &r); err != nil {
		return r, fmt.Errorf("decode binding record %q: %w", alias, err)
	}
	if _, err := net.ParseMAC(r.GuestMAC); err != nil {
		return r, fmt.Errorf("decode binding record: guest mac: %w", err)
	}
	return r, nil
}

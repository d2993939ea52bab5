// Package guest describes the slimvirt test guest that `make guest` builds (a Debian kernel and
// a busybox initramfs, see docs/guest.md): the lines it prints on its serial console, so tests
// in other packages can wait for them without copying the strings.
package guest

import "strings"

// Lines the guest prints on every kernel console. Each starts a line of its own.
const (
	// MarkerUp is printed once per boot when networking has settled:
	// "SLIMVIRT-GUEST-UP hostname=<h> ip=<ip or none> mac=<mac>".
	MarkerUp = "SLIMVIRT-GUEST-UP"
	// MarkerNIC precedes MarkerUp, one line per NIC: "SLIMVIRT-NIC interface=eth0 ip=... mac=...".
	MarkerNIC = "SLIMVIRT-NIC"
	// MarkerLease is printed whenever a NIC gets a new DHCP address, also after boot:
	// "SLIMVIRT-LEASE interface=eth0 ip=10.0.2.15/24 router=10.0.2.2 mtu=default".
	MarkerLease = "SLIMVIRT-LEASE"
	// MarkerPoweroff is printed right before a clean poweroff (ACPI power button, `poweroff`).
	MarkerPoweroff = "SLIMVIRT-GUEST-POWEROFF"
	// MarkerReboot is printed right before a reboot (`reboot`, Ctrl-Alt-Del).
	MarkerReboot = "SLIMVIRT-GUEST-REBOOT"
	// MarkerUserDataBegin and MarkerUserDataEnd enclose the cloud-init user-data, verbatim.
	MarkerUserDataBegin = "SLIMVIRT-USERDATA-BEGIN"
	MarkerUserDataEnd   = "SLIMVIRT-USERDATA-END"
	// MarkerUserDataExit follows a user-data script ("#!..."): "SLIMVIRT-USERDATA-EXIT rc=<n>".
	MarkerUserDataExit = "SLIMVIRT-USERDATA-EXIT"
	// MarkerAgent is printed once per boot when the guest agent starts serving its
	// virtio-serial port (org.qemu.guest_agent.0), only when the VM has one:
	// "SLIMVIRT-GUEST-AGENT port=vport1p1".
	MarkerAgent = "SLIMVIRT-GUEST-AGENT"
)

// Fields parses a marker line of the form "MARKER key=value key=value" (carriage returns and
// text before the marker, such as a console prompt, are ignored). ok is false when the line
// does not carry marker.
func Fields(line, marker string) (fields map[string]string, ok bool) {
	i := strings.Index(line, marker)
	if i < 0 {
		return nil, false
	}
	rest := strings.TrimRight(line[i+len(marker):], "\r\n")
	if rest != "" && rest[0] != ' ' {
		return nil, false // a longer marker that starts the same way
	}
	fields = map[string]string{}
	for _, kv := range strings.Fields(rest) {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	return fields, true
}

// Up is what MarkerUp reports.
type Up struct {
	Hostname string
	IP       string // "none" when no NIC got a lease
	MAC      string
}

// ParseUp reads a MarkerUp line.
func ParseUp(line string) (Up, bool) {
	f, ok := Fields(line, MarkerUp)
	if !ok {
		return Up{}, false
	}
	return Up{Hostname: f["hostname"], IP: f["ip"], MAC: f["mac"]}, true
}

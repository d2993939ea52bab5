package migration

import (
	"fmt"
	"path/filepath"
)

// Stream is one kind of connection the channel carries. Each is its own TLS connection to the
// target's port, named by its ALPN protocol, so the kind is agreed on in the handshake and the
// target reads nothing from the source before it knows both who it is and what it wants.
type Stream string

// The streams of a migration.
const (
	// StreamLibvirt is the source libvirtd's RPC connection to the target libvirtd
	// (peer-to-peer migration).
	StreamLibvirt Stream = "libvirt"
	// StreamMemory is QEMU's migration stream (RAM and device state).
	StreamMemory Stream = "memory"
	// StreamDisks is the NBD connection over which the source QEMU mirrors the local disks.
	StreamDisks Stream = "disks"
)

// Streams are all of them.
var Streams = []Stream{StreamLibvirt, StreamMemory, StreamDisks}

func (s Stream) alpn() string { return "slimvirt-migration-" + string(s) + "/1" }

func streamOfALPN(proto string) (Stream, bool) {
	for _, s := range Streams {
		if s.alpn() == proto {
			return s, true
		}
	}
	return "", false
}

func alpnAll() []string {
	out := make([]string, len(Streams))
	for i, s := range Streams {
		out[i] = s.alpn()
	}
	return out
}

// Sockets are the unix sockets of a migration inside a launcher pod. The memory and disk
// sockets have the same path on both sides: libvirt gives both QEMUs one URI each, the
// target's QEMU listens on it and the source's connects to it (where the source's end of the
// channel listens).
type Sockets struct{ Dir string }

// Libvirt is where the source's end of the channel serves the target's libvirtd to the
// source's libvirtd.
func (s Sockets) Libvirt() string { return filepath.Join(s.Dir, "libvirt.sock") }

// Memory is the socket of QEMU's migration stream.
func (s Sockets) Memory() string { return filepath.Join(s.Dir, "memory.sock") }

// Disks is the socket of the NBD server of the disk copy.
func (s Sockets) Disks() string { return filepath.Join(s.Dir, "disks.sock") }

// MemoryURI is the socket URI libvirt takes for the memory stream (VIR_MIGRATE_PARAM_URI).
func (s Sockets) MemoryURI() string { return "unix://" + s.Memory() }

// DisksURI is the socket URI libvirt takes for the disk copy (VIR_MIGRATE_PARAM_DISKS_URI).
func (s Sockets) DisksURI() string { return "unix://" + s.Disks() }

// DestURI is the URI the source libvirtd opens to reach the target libvirtd through the
// channel; session says the target's libvirtd runs unprivileged.
func (s Sockets) DestURI(session bool) string {
	mode := "system"
	if session {
		mode = "session"
	}
	return fmt.Sprintf("qemu+unix:///%s?socket=%s", mode, s.Libvirt())
}

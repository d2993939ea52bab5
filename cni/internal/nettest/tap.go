package nettest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Tap is the guest's end of the pod's tap0, opened as QEMU opens it: what is written is sent by
// the "guest", what is read is what the pod sends it.
type Tap struct {
	f *os.File
}

// OpenTap attaches to tap0 in podNS (closed when the test ends).
func OpenTap(t testing.TB, podNS ns.NetNS) *Tap {
	t.Helper()
	var f *os.File
	err := podNS.Do(func(ns.NetNS) error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq("tap0")
		if err != nil {
			_ = unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			_ = unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "tap0")
		return nil
	})
	if err != nil {
		t.Fatalf("open tap0: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return &Tap{f: f}
}

// Send writes one Ethernet frame.
func (tp *Tap) Send(frame []byte) error {
	_, err := tp.f.Write(frame)
	return err
}

// Receive returns the first frame accepted by keep within timeout, or nil.
func (tp *Tap) Receive(timeout time.Duration, keep func([]byte) bool) []byte {
	_ = tp.f.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 65536)
	for {
		n, err := tp.f.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) || err != nil {
			return nil
		}
		if keep(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// ARPRequest is a who-has for target from mac/ip, broadcast.
func ARPRequest(mac net.HardwareAddr, ip, target net.IP) []byte {
	b := &bytes.Buffer{}
	b.Write(bytes.Repeat([]byte{0xff}, 6))
	b.Write(mac)
	_ = binary.Write(b, binary.BigEndian, uint16(unix.ETH_P_ARP))
	b.Write([]byte{0, 1, 8, 0, 6, 4, 0, 1})
	b.Write(mac)
	b.Write(ip.To4())
	b.Write(make([]byte, 6))
	b.Write(target.To4())
	return b.Bytes()
}

// ARPReply is a parsed ARP reply frame.
type ARPReply struct {
	EtherDst, EtherSrc, SenderMAC, TargetMAC net.HardwareAddr
	SenderIP, TargetIP                       net.IP
}

// ParseARPReply reads frame as an Ethernet ARP reply.
func ParseARPReply(frame []byte) (ARPReply, bool) {
	if len(frame) < 42 || binary.BigEndian.Uint16(frame[12:]) != unix.ETH_P_ARP || binary.BigEndian.Uint16(frame[20:]) != 2 {
		return ARPReply{}, false
	}
	a := frame[14:]
	return ARPReply{
		EtherDst: net.HardwareAddr(frame[0:6]), EtherSrc: net.HardwareAddr(frame[6:12]),
		SenderMAC: net.HardwareAddr(a[8:14]), SenderIP: net.IP(a[14:18]),
		TargetMAC: net.HardwareAddr(a[18:24]), TargetIP: net.IP(a[24:28]),
	}, true
}

package nettest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// UDPFrame is an Ethernet frame carrying one UDP datagram (no UDP checksum), written by hand so a
// test can send what no socket would: source 0.0.0.0, a VLAN tag, a foreign address.
type UDPFrame struct {
	Src, Dst         net.HardwareAddr
	SrcIP, DstIP     net.IP
	SrcPort, DstPort uint16
	// Tags are VLAN tags, outermost first, as (TPID, VID): 0x8100 for 802.1Q, 0x88a8 for 802.1ad.
	Tags    [][2]uint16
	Payload []byte
}

// Bytes serializes the frame.
func (f UDPFrame) Bytes() []byte {
	b := &bytes.Buffer{}
	b.Write(f.Dst)
	b.Write(f.Src)
	for _, tag := range f.Tags {
		_ = binary.Write(b, binary.BigEndian, tag)
	}
	_ = binary.Write(b, binary.BigEndian, uint16(unix.ETH_P_IP))
	udpLen := 8 + len(f.Payload)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
	copy(ip[12:], f.SrcIP.To4())
	copy(ip[16:], f.DstIP.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	b.Write(ip)
	_ = binary.Write(b, binary.BigEndian, [4]uint16{f.SrcPort, f.DstPort, uint16(udpLen), 0})
	b.Write(f.Payload)
	return b.Bytes()
}

// SendFrame sends frame out of ifName in netns through a packet socket.
func SendFrame(t testing.TB, netns ns.NetNS, ifName string, frame []byte) {
	t.Helper()
	err := netns.Do(func(ns.NetNS) error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("send frame on %s: %v", ifName, err)
	}
}

// Sniffer sees every frame that crosses one interface, both ways.
type Sniffer struct {
	fd int
}

// Sniff starts capturing on ifName in netns (stopped when the test ends).
func Sniff(t testing.TB, netns ns.NetNS, ifName string) *Sniffer {
	t.Helper()
	s := &Sniffer{fd: -1}
	err := netns.Do(func(ns.NetNS) error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		s.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("sniff %s: %v", ifName, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// Saw says whether a frame containing marker crossed the interface within timeout.
func (s *Sniffer) Saw(marker []byte, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		tv := unix.NsecToTimeval(int64(time.Until(deadline)) + 1000)
		_ = unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue
		}
		if bytes.Contains(buf[:n], marker) {
			return true
		}
	}
	return false
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ListenUDP opens a UDP socket on addr in netns; Received says whether a datagram with marker
// arrived within timeout.
func ListenUDP(t testing.TB, netns ns.NetNS, addr string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := netns.Do(func(ns.NetNS) error {
		a, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return err
		}
		conn, err = net.ListenUDP("udp4", a)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Received says whether conn got a datagram containing marker within timeout.
func Received(conn *net.UDPConn, marker []byte, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for {
		_ = conn.SetReadDeadline(deadline)
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return false
		}
		if bytes.Contains(buf[:n], marker) {
			return true
		}
	}
}

package vmnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"github.com/mdlayher/arp"
	"golang.org/x/sys/unix"
)

// LeaseTime is KubeVirt's: the lease outlives any VM, renewals only confirm it.
const LeaseTime = 999 * 24 * time.Hour

// ServeOptions tune the DHCP answers and say what to report.
type ServeOptions struct {
	// Hostname (option 12) and Domain (option 15) of the guest; empty leaves them out.
	Hostname string
	Domain   string
	Logger   *slog.Logger
	// OnLease is called with the guest's address each time a lease is acknowledged.
	OnLease func(net.IP)
}

// Server is the guest's DHCP server and ARP responder, with their sockets open.
type Server struct {
	plan *Plan
	opts ServeOptions
	log  *slog.Logger
	dhcp *server4.Server
	arp  *arp.Client
}

// Serve runs the one-lease DHCP server for the guest and the gateway ARP responder until ctx
// ends. It must be called in the pod's netns.
func Serve(ctx context.Context, plan *Plan, opts ServeOptions) error {
	s, err := NewServer(plan, opts)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// NewServer opens the sockets in the current netns; Run may then be called from anywhere (a
// socket stays in the netns it was made in).
func NewServer(plan *Plan, opts ServeOptions) (*Server, error) {
	if plan == nil || plan.GuestIP == nil || len(plan.GuestMAC) != 6 {
		return nil, errors.New("serve vm network: plan has no guest address")
	}
	s := &Server{plan: plan, opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	srv, err := server4.NewServer(plan.BridgeName, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, s.handleDHCP)
	if err != nil {
		return nil, fmt.Errorf("listen for dhcp on %s: %w", plan.BridgeName, err)
	}
	s.dhcp = srv
	if len(plan.ARP) > 0 {
		ifi, err := net.InterfaceByName(plan.BridgeName)
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("find %s: %w", plan.BridgeName, err)
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("listen for arp on %s: %w", plan.BridgeName, err)
		}
		s.arp = c
	}
	return s, nil
}

// Run serves until ctx ends, then closes the sockets.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- s.dhcp.Serve()
	}()
	if s.arp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.serveARP()
		}()
	}
	s.log.Info("serving vm network", "bridge", s.plan.BridgeName, "guestMAC", s.plan.GuestMAC.String(),
		"guestIP", s.plan.GuestIP.String(), "arpEntries", len(s.plan.ARP))
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	s.dhcp.Close()
	if s.arp != nil {
		s.arp.Close()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("serve vm network: %w", err)
}

// serveARP answers the guest's requests for the recorded addresses and for nothing else.
func (s *Server) serveARP() error {
	for {
		req, _, err := s.arp.Read()
		if err != nil {
			// The bridge going down (a link flap) is not the end of the VM's network.
			if errors.Is(err, unix.ENETDOWN) {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			// A frame that does not parse as Ethernet IPv4 ARP is not for us.
			if errors.Is(err, arp.ErrInvalidHardwareAddr) || errors.Is(err, arp.ErrInvalidIP) || errors.Is(err, io.ErrUnexpectedEOF) {
				continue
			}
			return fmt.Errorf("read arp: %w", err)
		}
		mac, ok := s.answer(req)
		if !ok {
			continue
		}
		if err := s.arp.Reply(req, mac, req.TargetIP); err != nil {
			s.log.Error("arp reply failed", "target", req.TargetIP.String(), "err", err)
			continue
		}
		s.log.Debug("arp answered", "target", req.TargetIP.String(), "mac", mac.String())
	}
}

func (s *Server) answer(req *arp.Packet) (net.HardwareAddr, bool) {
	if req.Operation != arp.OperationRequest || req.SenderHardwareAddr.String() != s.plan.GuestMAC.String() {
		return nil, false
	}
	for _, e := range s.plan.ARP {
		if ip, ok := netip.AddrFromSlice(e.IP.To4()); ok && ip == req.TargetIP {
			return e.MAC, true
		}
	}
	return nil, false
}

func (s *Server) handleDHCP(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	if m.OpCode != dhcpv4.OpcodeBootRequest || m.ClientHWAddr.String() != s.plan.GuestMAC.String() {
		return
	}
	var reply *dhcpv4.DHCPv4
	var err error
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		reply, err = s.lease(m, dhcpv4.MessageTypeOffer)
	case dhcpv4.MessageTypeRequest:
		// A client that selected another server's offer is not talking to us.
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(s.plan.ServerIP) {
			return
		}
		want := m.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = m.ClientIPAddr
		}
		if !want.Equal(s.plan.GuestIP.IP) {
			reply, err = dhcpv4.NewReplyFromRequest(m,
				dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithServerIP(s.plan.ServerIP),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.plan.ServerIP)),
				dhcpv4.WithOption(dhcpv4.OptMessage("address not offered to this client")))
			break
		}
		reply, err = s.lease(m, dhcpv4.MessageTypeAck)
	case dhcpv4.MessageTypeInform:
		reply, err = s.lease(m, dhcpv4.MessageTypeAck)
		if reply != nil {
			reply.YourIPAddr = net.IPv4zero
			reply.Options.Del(dhcpv4.OptionIPAddressLeaseTime)
		}
	default:
		return
	}
	if err != nil {
		s.log.Error("dhcp reply failed", "type", m.MessageType().String(), "err", err)
		return
	}
	if _, err := conn.WriteTo(reply.ToBytes(), peer); err != nil {
		s.log.Error("dhcp send failed", "peer", peer.String(), "err", err)
		return
	}
	s.log.Info("dhcp answered", "request", m.MessageType().String(), "reply", reply.MessageType().String(), "ip", s.plan.GuestIP.IP.String())
	if reply.MessageType() == dhcpv4.MessageTypeAck && m.MessageType() == dhcpv4.MessageTypeRequest && s.opts.OnLease != nil {
		s.opts.OnLease(s.plan.GuestIP.IP)
	}
}

// lease builds an OFFER or ACK with every option of the plan.
func (s *Server) lease(m *dhcpv4.DHCPv4, t dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	p := s.plan
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithYourIP(p.GuestIP.IP),
		dhcpv4.WithServerIP(p.ServerIP),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(p.ServerIP)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(p.GuestIP.Mask)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(LeaseTime)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(p.MTU >> 8), byte(p.MTU)})),
	}
	if p.Gateway != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(p.Gateway)))
	}
	if len(p.DNS) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(p.DNS...)))
	}
	if len(p.Search) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: p.Search})))
	}
	if s.opts.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(s.opts.Hostname)))
	}
	if s.opts.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(s.opts.Domain)))
	}
	if len(p.Routes) > 0 {
		routes := make([]*dhcpv4.Route, 0, len(p.Routes))
		for _, r := range p.Routes {
			gw := r.Gateway
			if gw == nil {
				gw = net.IPv4zero.To4()
			}
			routes = append(routes, &dhcpv4.Route{Dest: r.Dst, Router: gw})
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(routes...)))
	}
	return dhcpv4.NewReplyFromRequest(m, mods...)
}

package vmnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/rfc1035label"
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

// Server is the guest's DHCP server, with its socket open.
type Server struct {
	plan *Plan
	opts ServeOptions
	log  *slog.Logger
	dhcp *server4.Server
}

// Serve runs the one-lease DHCP server for the guest until ctx ends. It must be called in the
// pod's netns. Its socket is a UDP socket bound to the bridge (SO_BINDTODEVICE needs no
// capability since Linux 5.7), on port 67: CAP_NET_BIND_SERVICE is all it needs.
func Serve(ctx context.Context, plan *Plan, opts ServeOptions) error {
	s, err := NewServer(plan, opts)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// NewServer opens the socket in the current netns; Run may then be called from anywhere (a
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
	return s, nil
}

// Run serves until ctx ends, then closes the socket.
func (s *Server) Run(ctx context.Context) error {
	errs := make(chan error, 1)
	go func() { errs <- s.dhcp.Serve() }()
	s.log.Info("serving vm network", "bridge", s.plan.BridgeName, "guestMAC", s.plan.GuestMAC.String(),
		"guestIP", s.plan.GuestIP.String())
	var err error
	select {
	case <-ctx.Done():
		// Close ends Serve, whose error is then that of a closed socket.
		_ = s.dhcp.Close()
		if err := <-errs; err != nil {
			// A closed socket's error: the stop was asked for.
			s.log.Debug("dhcp server stopped", "err", err)
		}
		return nil
	case err = <-errs:
		_ = s.dhcp.Close()
		return fmt.Errorf("serve vm network: %w", err)
	}
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

package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// macOptions are the plugin's conflist options about guest MACs.
type macOptions struct {
	// AllowCustomMACs lets a VM's bridge interface use a MAC that is not locally administered
	// (a vendor's address, as a licence may require). Set by the cluster admin through the node
	// agent's installer; a tenant cannot change it.
	AllowCustomMACs bool `json:"allowCustomMACs"`
}

func readMACOptions(stdin []byte) (macOptions, error) {
	var o macOptions
	if err := json.Unmarshal(stdin, &o); err != nil {
		return o, fmt.Errorf("parse network configuration: %w", err)
	}
	return o, nil
}

// Bounds on what is read of the node to find a MAC in use: an ADD must not get slow or big on
// a node whose tables a pod filled (a pod with NET_RAW can make the host bridge learn any
// number of addresses). What is past a bound is not compared, so the check is best effort.
const (
	maxRecordsScanned    = 4096
	maxNeighboursScanned = 1 << 16
)

// errMACInUse is the cause of every refusal of a MAC another party on the node already uses.
var errMACInUse = errors.New("already in use on this node")

// checkGuestMAC refuses a tenant-chosen guest MAC for a bridge binding, where the guest's
// frames leave the pod with it as their source: on a bridge-style cluster CNI, a MAC another pod
// already has makes the host bridge send that pod's inbound frames to the VM. It runs in the
// node's network namespace (where the runtime runs the plugin). self names the attachment being
// made; podIPs are the pod's own addresses, whose neighbour entries may still carry the MAC of
// the pod that had the address before.
func checkGuestMAC(mac net.HardwareAddr, opts macOptions, st *store, self record, podIPs []net.IP) error {
	if mac[0]&1 == 1 {
		return fmt.Errorf("guest MAC %s is multicast: a VM interface needs a unicast MAC", mac)
	}
	if mac[0]&2 == 0 && !opts.AllowCustomMACs {
		return fmt.Errorf("guest MAC %s is not locally administered (the 0x02 bit of its first byte is clear) and custom MACs are not allowed on this node: use a locally administered MAC such as 02:%s, or ask the cluster admin to allow custom MACs", mac, mac[1:].String())
	}
	if err := macInRecords(mac, st, self); err != nil {
		return err
	}
	if err := macOnLinks(mac); err != nil {
		return err
	}
	return macInNeighbours(mac, podIPs)
}

// macInRecords looks for mac among the guest MACs of every other attachment on the node, of
// every network.
func macInRecords(mac net.HardwareAddr, st *store, self record) error {
	root := filepath.Dir(st.dir)
	nets, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list state directory %s: %w", root, err)
	}
	scanned := 0
	for _, n := range nets {
		if !n.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, n.Name()))
		if err != nil {
			continue
		}
		for _, f := range files {
			if scanned++; scanned > maxRecordsScanned {
				return nil
			}
			if f.IsDir() || !strings.HasSuffix(f.Name(), ".json") {
				continue
			}
			r, err := readRecord(filepath.Join(root, n.Name(), f.Name()))
			if err != nil || r == nil || r.ContainerID == self.ContainerID && r.IfName == self.IfName {
				continue
			}
			// A record whose sandbox network namespace is gone is a VM that no longer runs (the
			// node restarted, or the runtime removed the sandbox without a DEL): its MAC is free.
			if r.Netns != "" && !pathExists(r.Netns) {
				continue
			}
			if other, err := net.ParseMAC(r.Attachment.GuestMAC); err == nil && bytes.Equal(other, mac) {
				return fmt.Errorf("guest MAC %s is %w: the VM of pod sandbox %s has it", mac, errMACInUse, shortID(r.ContainerID))
			}
		}
	}
	return nil
}

func pathExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// macOnLinks looks for mac among the node's own interfaces (host ends of pod veths, bridges,
// NICs).
func macOnLinks(mac net.HardwareAddr) error {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return fmt.Errorf("list the node's interfaces: %w", err)
	}
	for _, l := range links {
		if bytes.Equal(l.Attrs().HardwareAddr, mac) {
			return fmt.Errorf("guest MAC %s is %w: it is the address of interface %s", mac, errMACInUse, l.Attrs().Name)
		}
	}
	return nil
}

// macInNeighbours looks for mac in the forwarding databases of the node's bridges (where a
// bridge-style CNI learns each pod's MAC) and in its neighbour tables (the node's ARP and NDP
// entries for pods and hosts it talks to). Entries are compared while the kernel streams them,
// so memory stays bounded whatever the tables hold. A neighbour entry for one of the pod's own
// addresses, or one the kernel no longer holds for certain (stale, failed), is not a use: it
// may be the previous holder of the address, gone.
func macInNeighbours(mac net.HardwareAddr, podIPs []net.IP) error {
	var found error
	scanned := 0
	names := map[int]string{}
	if links, err := netlinksafe.LinkList(); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	visit := func(n *netlink.Neigh) bool {
		if scanned++; scanned > maxNeighboursScanned {
			return false
		}
		if !bytes.Equal(n.HardwareAddr, mac) {
			return true
		}
		if n.Family == unix.AF_BRIDGE {
			found = fmt.Errorf("guest MAC %s is %w: bridge port %s has it in its forwarding database", mac, errMACInUse, linkName(names, n.LinkIndex))
			return false
		}
		if n.State&(netlink.NUD_REACHABLE|netlink.NUD_PERMANENT|netlink.NUD_DELAY|netlink.NUD_PROBE) == 0 {
			return true
		}
		for _, ip := range podIPs {
			if ip.Equal(n.IP) {
				return true
			}
		}
		found = fmt.Errorf("guest MAC %s is %w: neighbour %s on %s has it", mac, errMACInUse, n.IP, linkName(names, n.LinkIndex))
		return false
	}
	for _, family := range []int{unix.AF_BRIDGE, unix.AF_INET, unix.AF_INET6} {
		if err := dumpNeighbours(family, visit); err != nil {
			// Best effort: a table that cannot be read is not a reason to refuse the VM.
			continue
		}
		if found != nil || scanned > maxNeighboursScanned {
			break
		}
	}
	return found
}

func linkName(names map[int]string, index int) string {
	if n, ok := names[index]; ok {
		return n
	}
	return fmt.Sprintf("#%d", index)
}

// dumpNeighbours streams the neighbour (or, for AF_BRIDGE, forwarding database) entries of
// family to visit until it returns false.
func dumpNeighbours(family int, visit func(*netlink.Neigh) bool) error {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
	req.AddData(&netlink.Ndmsg{Family: uint8(family)})
	err := req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH, func(m []byte) bool {
		n, err := netlink.NeighDeserialize(m)
		if err != nil {
			return true
		}
		return visit(n)
	})
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dump neighbours of family %d: %w", family, err)
	}
	return nil
}

// macLock serialises the MAC check and the saving of the record across concurrent ADDs on the
// node, so two VMs asking for the same MAC at once cannot both pass the check.
type macLock struct {
	f    *os.File
	once sync.Once
}

func lockMACs(st *store) (*macLock, error) {
	root := filepath.Dir(st.dir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", root, err)
	}
	p := filepath.Join(root, ".mac.lock")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return &macLock{f: f}, nil
}

// release may be called more than once.
func (l *macLock) release() {
	// Closing the file drops the lock; nothing was written through it.
	l.once.Do(func() { _ = l.f.Close() })
}

// guardGuestMAC refuses a guest MAC another party on the node uses, or one the admin does not
// allow, and otherwise returns the lock the caller holds until the attachment's record is saved.
// Only a bridge binding needs it: a masqueraded guest's MAC never leaves the pod.
func guardGuestMAC(stdin []byte, guestMAC string, st *store, self record, prev *current.Result) (*macLock, error) {
	opts, err := readMACOptions(stdin)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	mac, err := net.ParseMAC(guestMAC)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("parse guest MAC %q: %v", guestMAC, err), "")
	}
	lock, err := lockMACs(st)
	if err != nil {
		return nil, err
	}
	var podIPs []net.IP
	for _, ip := range prev.IPs {
		podIPs = append(podIPs, ip.Address.IP)
	}
	if err := checkGuestMAC(mac, opts, st, self, podIPs); err != nil {
		lock.release()
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "refuse guest MAC: "+err.Error(), "")
	}
	return lock, nil
}

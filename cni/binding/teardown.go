package binding

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TeardownGroup is the link group (IFLA_GROUP) Teardown moves the links it deletes into, so that
// one RTM_DELLINK removes them all. The kernel waits for an RCU barrier after every deletion
// request (netdev_run_todo), and a bridge costs one more (its multicast state): one request for
// the tap, the bridge and the twin pays two barriers instead of four.
const TeardownGroup = 0x736c7600

// Teardown undoes SetupBridge or SetupMasquerade, whatever part of it is present. It is used
// for rollback, DEL and GC, so every piece may already be gone.
func Teardown(att *Attachment) error {
	closeTables, err := deleteTables()
	err = errors.Join(err, restorePod(att))
	// The kernel frees the deleted tables after an RCU grace period, and closing the nftables
	// socket waits for that; closed last, the wait has passed during the links' own.
	return errors.Join(err, closeTables())
}

// restorePod puts the netns-wide sysctls back, deletes the tap, the bridge and the twin, and
// gives the pod NIC back its name, MAC, addresses, routes and neighbours.
func restorePod(att *Attachment) error {
	var errs []error
	for name, value := range att.Sysctls {
		if err := writeSysctl(name, value); err != nil {
			errs = append(errs, err)
		}
	}
	ifName := att.IfName
	var doomed []netlink.Link
	for _, name := range []string{TapName, BridgeName(ifName)} {
		link, err := netlinksafe.LinkByName(name)
		switch {
		case err == nil:
			doomed = append(doomed, link)
		case !isNotFound(err):
			errs = append(errs, fmt.Errorf("find %s: %w", name, err))
		}
	}
	nic, err := netlinksafe.LinkByName(NICName(ifName))
	if err != nil {
		if !isNotFound(err) {
			errs = append(errs, fmt.Errorf("find %s: %w", NICName(ifName), err))
		}
		return errors.Join(append(errs, deleteLinks(doomed))...)
	}
	snap := att.Snapshot
	if twin, err := netlinksafe.LinkByName(ifName); err == nil {
		if !isTwin(twin) {
			return errors.Join(append(errs, deleteLinks(doomed),
				fmt.Errorf("restore %s: a %s link of that name exists", ifName, twin.Type()))...)
		}
		if snap == nil {
			if snap, err = TakeSnapshot(twin); err != nil {
				errs = append(errs, err)
			}
		}
		doomed = append(doomed, twin)
	}
	if err := deleteLinks(doomed); err != nil {
		errs = append(errs, err)
	}
	if snap == nil {
		return errors.Join(append(errs, fmt.Errorf("restore %s: nothing recorded about it", ifName))...)
	}
	if err := restoreNIC(nic, ifName, snap); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deleteLinks deletes links in one request, through TeardownGroup. When anything else in the
// netns is in that group, or the group cannot be used, it deletes them one by one.
func deleteLinks(links []netlink.Link) error {
	if len(links) == 0 {
		return nil
	}
	if err := deleteAsGroup(links); err == nil {
		return nil
	}
	var errs []error
	for _, l := range links {
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

func deleteAsGroup(links []netlink.Link) error {
	ours := map[int]bool{}
	for _, l := range links {
		if err := netlink.LinkSetGroup(l, TeardownGroup); err != nil {
			return fmt.Errorf("move %s to link group %d: %w", l.Attrs().Name, TeardownGroup, err)
		}
		ours[l.Attrs().Index] = true
	}
	all, err := netlinksafe.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range all {
		if l.Attrs().Group == TeardownGroup && !ours[l.Attrs().Index] {
			return fmt.Errorf("link %s is in link group %d too", l.Attrs().Name, TeardownGroup)
		}
	}
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(TeardownGroup)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("delete link group %d: %w", TeardownGroup, err)
	}
	return nil
}

func restoreNIC(nic netlink.Link, ifName string, snap *Snapshot) error {
	if err := netlink.LinkSetDown(nic); err != nil {
		return fmt.Errorf("set %s down: %w", nic.Attrs().Name, err)
	}
	if err := netlink.LinkSetNoMaster(nic); err != nil {
		return fmt.Errorf("detach %s: %w", nic.Attrs().Name, err)
	}
	if err := netlink.LinkSetName(nic, ifName); err != nil {
		return fmt.Errorf("rename %s to %s: %w", nic.Attrs().Name, ifName, err)
	}
	if mac, err := net.ParseMAC(snap.MAC); err == nil {
		if err := netlink.LinkSetHardwareAddr(nic, mac); err != nil {
			return fmt.Errorf("restore mac of %s: %w", ifName, err)
		}
	}
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifName, err)
	}
	return snap.Apply(link)
}

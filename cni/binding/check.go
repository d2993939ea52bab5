package binding

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/google/nftables"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// Check reports the first missing or changed piece of an attachment.
func Check(att *Attachment) error {
	br, err := netlinksafe.LinkByName(BridgeName(att.IfName))
	if err != nil {
		return fmt.Errorf("bridge %s: %w", BridgeName(att.IfName), err)
	}
	rec, err := DecodeRecord(br.Attrs().Alias)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", br.Attrs().Name, err)
	}
	if rec.Binding != att.Binding || rec.GuestMAC != att.GuestMAC {
		return fmt.Errorf("bridge %s records %s/%s, want %s/%s", br.Attrs().Name, rec.Binding, rec.GuestMAC, att.Binding, att.GuestMAC)
	}
	tap, err := netlinksafe.LinkByName(TapName)
	if err != nil {
		return fmt.Errorf("tap %s: %w", TapName, err)
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("tap %s is not a port of %s", TapName, br.Attrs().Name)
	}
	if ok, err := hasTable(nftables.TableFamilyBridge); err != nil || !ok {
		return fmt.Errorf("anti-spoofing table bridge %s is missing (%v)", NFTableName, err)
	}
	if ok, err := hasTable(nftables.TableFamilyIPv4); err != nil || !ok {
		return fmt.Errorf("table ip %s is missing (%v)", NFTableName, err)
	}
	if att.Binding == launcherpod.BindingMasquerade {
		return nil
	}
	if ok, err := hasTable(nftables.TableFamilyNetdev); err != nil || !ok {
		return fmt.Errorf("gateway arp table netdev %s is missing (%v)", NFTableName, err)
	}
	nic, err := netlinksafe.LinkByName(NICName(att.IfName))
	if err != nil {
		return fmt.Errorf("pod nic %s: %w", NICName(att.IfName), err)
	}
	if nic.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("%s is not a port of %s", nic.Attrs().Name, br.Attrs().Name)
	}
	twin, err := netlinksafe.LinkByName(att.IfName)
	if err != nil {
		return fmt.Errorf("dummy %s: %w", att.IfName, err)
	}
	if !isTwin(twin) {
		return fmt.Errorf("%s is a %s, want the twin slimvirt made", att.IfName, twin.Type())
	}
	if att.Snapshot != nil && twin.Attrs().HardwareAddr.String() != att.Snapshot.MAC {
		return fmt.Errorf("dummy %s has mac %s, want %s", att.IfName, twin.Attrs().HardwareAddr, att.Snapshot.MAC)
	}
	return nil
}

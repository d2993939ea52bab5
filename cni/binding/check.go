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
	if err := requireTable(nftables.TableFamilyBridge, "anti-spoofing table bridge"); err != nil {
		return err
	}
	if err := requireTable(nftables.TableFamilyIPv4, "table ip"); err != nil {
		return err
	}
	if att.Binding == launcherpod.BindingMasquerade {
		return nil
	}
	if err := requireTable(nftables.TableFamilyNetdev, "gateway arp table netdev"); err != nil {
		return err
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

// requireTable fails when the plugin's table of family (what names it) is not there.
func requireTable(family nftables.TableFamily, what string) error {
	ok, err := hasTable(family)
	if err != nil {
		return fmt.Errorf("look for %s %s: %w", what, NFTableName, err)
	}
	if !ok {
		return fmt.Errorf("%s %s is missing", what, NFTableName)
	}
	return nil
}

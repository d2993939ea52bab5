package launcher

import (
	"errors"
	"fmt"
	"strings"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// statsTypes are the statistics the stats command asks libvirt for.
const statsTypes = libvirt.DOMAIN_STATS_STATE | libvirt.DOMAIN_STATS_CPU_TOTAL | libvirt.DOMAIN_STATS_BALLOON |
	libvirt.DOMAIN_STATS_VCPU | libvirt.DOMAIN_STATS_INTERFACE | libvirt.DOMAIN_STATS_BLOCK

// userAliasPrefix starts the libvirt alias the domain conversion gives each disk and NIC: the
// VMI's name for the device follows it.
const userAliasPrefix = "ua-"

// stats collects the running domain's statistics, with disks and interfaces under the VMI's names.
func (l *Launcher) stats() (launcherpod.DomainStats, error) {
	l.mu.Lock()
	dom := l.dom
	l.mu.Unlock()
	if dom == nil {
		return launcherpod.DomainStats{}, errors.New("the domain is not running")
	}
	return dom.Stats()
}

// domainStats reads dom's statistics in one libvirt call and its live XML for the device names.
func domainStats(dom *libvirt.Domain) (launcherpod.DomainStats, error) {
	xml, err := dom.GetXMLDesc(0)
	if err != nil {
		return launcherpod.DomainStats{}, fmt.Errorf("read the domain XML: %w", err)
	}
	names, err := ParseDeviceNames(xml)
	if err != nil {
		return launcherpod.DomainStats{}, err
	}
	conn, err := dom.DomainGetConnect()
	if err != nil {
		return launcherpod.DomainStats{}, fmt.Errorf("get the domain's libvirt connection: %w", err)
	}
	defer conn.Close()
	all, err := conn.GetAllDomainStats([]*libvirt.Domain{dom}, statsTypes, 0)
	if err != nil {
		return launcherpod.DomainStats{}, fmt.Errorf("get the domain statistics: %w", err)
	}
	defer func() {
		for _, s := range all {
			_ = s.Domain.Free()
		}
	}()
	if len(all) != 1 {
		return launcherpod.DomainStats{}, fmt.Errorf("libvirt returned statistics of %d domains, want 1", len(all))
	}
	out := ConvertStats(&all[0], names)
	if all[0].State == nil || !all[0].State.StateSet {
		st, _, err := dom.GetState()
		if err != nil {
			return launcherpod.DomainStats{}, fmt.Errorf("get the domain state: %w", err)
		}
		out.State = stateName(st)
	}
	if all[0].Balloon == nil || !all[0].Balloon.CurrentSet {
		info, err := dom.GetInfo()
		if err != nil {
			return launcherpod.DomainStats{}, fmt.Errorf("get the domain's memory: %w", err)
		}
		out.MemoryBytes = info.Memory * 1024
	}
	return out, nil
}

// DeviceNames map libvirt's device names to the VMI's: Disks by a disk's target dev (vda, sdb),
// NICs by an interface's target dev (its tap). Devices without a "ua-" alias are not in them.
type DeviceNames struct {
	Disks map[string]string
	NICs  map[string]string
}

// ParseDeviceNames reads the device names from a domain's live XML (dom.GetXMLDesc), where
// each disk and NIC the launcher defined carries the alias "ua-<VMI name>".
func ParseDeviceNames(domainXML string) (DeviceNames, error) {
	var dx libvirtxml.Domain
	if err := dx.Unmarshal(domainXML); err != nil {
		return DeviceNames{}, fmt.Errorf("parse the domain XML: %w", err)
	}
	names := DeviceNames{Disks: map[string]string{}, NICs: map[string]string{}}
	if dx.Devices == nil {
		return names, nil
	}
	for _, d := range dx.Devices.Disks {
		if d.Target != nil {
			addAlias(names.Disks, d.Target.Dev, d.Alias)
		}
	}
	for _, i := range dx.Devices.Interfaces {
		if i.Target != nil {
			addAlias(names.NICs, i.Target.Dev, i.Alias)
		}
	}
	return names, nil
}

// addAlias records the VMI name in a "ua-" alias under the device's libvirt name.
func addAlias(m map[string]string, dev string, alias *libvirtxml.DomainAlias) {
	if dev == "" || alias == nil {
		return
	}
	if name, ok := strings.CutPrefix(alias.Name, userAliasPrefix); ok && name != "" {
		m[dev] = name
	}
}

// vmiName is the VMI's name of a libvirt device, or the libvirt name when the device has none.
func vmiName(m map[string]string, dev string) string {
	if name, ok := m[dev]; ok {
		return name
	}
	return dev
}

// ConvertStats turns libvirt's statistics of one domain into the stats reply, naming disks and
// interfaces as the VMI does. What libvirt did not report stays 0 (State stays empty).
func ConvertStats(st *libvirt.DomainStats, names DeviceNames) launcherpod.DomainStats {
	var out launcherpod.DomainStats
	if st.State != nil && st.State.StateSet {
		out.State = stateName(st.State.State)
	}
	if st.Cpu != nil && st.Cpu.TimeSet {
		out.CPUTimeNanos = st.Cpu.Time
	}
	for _, v := range st.Vcpu {
		// The binding marks a vCPU libvirt reported nothing of as offline.
		if !v.StateSet || v.State != libvirt.VCPU_OFFLINE {
			out.VCPUs++
		}
	}
	if b := st.Balloon; b != nil {
		// libvirt reports memory in KiB.
		if b.CurrentSet {
			out.MemoryBytes = b.Current * 1024
		}
		if b.RssSet {
			out.MemoryRSSBytes = b.Rss * 1024
		}
	}
	for _, b := range st.Block {
		out.Disks = append(out.Disks, launcherpod.DiskStats{
			Name:       vmiName(names.Disks, b.Name),
			ReadBytes:  b.RdBytes,
			WriteBytes: b.WrBytes,
			ReadOps:    b.RdReqs,
			WriteOps:   b.WrReqs,
			FlushOps:   b.FlReqs,
		})
	}
	for _, n := range st.Net {
		out.Interfaces = append(out.Interfaces, launcherpod.NICStats{
			Name:      vmiName(names.NICs, n.Name),
			RxBytes:   n.RxBytes,
			TxBytes:   n.TxBytes,
			RxPackets: n.RxPkts,
			TxPackets: n.TxPkts,
			RxErrors:  n.RxErrs,
			TxErrors:  n.TxErrs,
			RxDropped: n.RxDrop,
			TxDropped: n.TxDrop,
		})
	}
	return out
}

// stateName is libvirt's name of a domain state, as virsh domstate prints it in one word.
func stateName(s libvirt.DomainState) string {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return "running"
	case libvirt.DOMAIN_BLOCKED:
		return "blocked"
	case libvirt.DOMAIN_PAUSED:
		return "paused"
	case libvirt.DOMAIN_SHUTDOWN:
		return "shutdown"
	case libvirt.DOMAIN_SHUTOFF:
		return "shutoff"
	case libvirt.DOMAIN_CRASHED:
		return "crashed"
	case libvirt.DOMAIN_PMSUSPENDED:
		return "pmsuspended"
	}
	return "nostate"
}

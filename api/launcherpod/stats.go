package launcherpod

// DomainStats is the reply to the launcher's "stats" control command.
type DomainStats struct {
	State          string      `json:"state"`        // libvirt domain state: running, paused, shutoff, crashed, pmsuspended, blocked, shutdown, nostate
	CPUTimeNanos   uint64      `json:"cpuTimeNanos"` // guest CPU time (cpu.time)
	VCPUs          int         `json:"vcpus"`
	MemoryBytes    uint64      `json:"memoryBytes"`    // guest RAM currently given to the guest (balloon.current, else the domain's memory)
	MemoryRSSBytes uint64      `json:"memoryRSSBytes"` // resident set of the QEMU process (balloon.rss), 0 when unknown
	Disks          []DiskStats `json:"disks,omitempty"`
	Interfaces     []NICStats  `json:"interfaces,omitempty"`
}

// DiskStats are one disk's counters; Name is the VMI's disk name.
type DiskStats struct {
	Name       string `json:"name"`
	ReadBytes  uint64 `json:"readBytes"`
	WriteBytes uint64 `json:"writeBytes"`
	ReadOps    uint64 `json:"readOps"`
	WriteOps   uint64 `json:"writeOps"`
	FlushOps   uint64 `json:"flushOps"`
}

// NICStats are one interface's counters; Name is the VMI's interface name. They count as the
// guest sees it: Rx is what the guest received, Tx what it sent.
type NICStats struct {
	Name      string `json:"name"`
	RxBytes   uint64 `json:"rxBytes"`
	TxBytes   uint64 `json:"txBytes"`
	RxPackets uint64 `json:"rxPackets"`
	TxPackets uint64 `json:"txPackets"`
	RxErrors  uint64 `json:"rxErrors"`
	TxErrors  uint64 `json:"txErrors"`
	RxDropped uint64 `json:"rxDropped"`
	TxDropped uint64 `json:"txDropped"`
}

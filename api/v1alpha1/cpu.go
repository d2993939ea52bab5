package v1alpha1

// Topology is the guest's sockets, cores per socket and threads per core, each 1 when unset
// (and a nil spec is one socket of one core of one thread).
func (c *CPU) Topology() (sockets, cores, threads int) {
	sockets, cores, threads = 1, 1, 1
	if c == nil {
		return sockets, cores, threads
	}
	if c.Sockets > 0 {
		sockets = int(c.Sockets)
	}
	if c.Cores > 0 {
		cores = int(c.Cores)
	}
	if c.Threads > 0 {
		threads = int(c.Threads)
	}
	return sockets, cores, threads
}

// VCPUs is the number of virtual CPUs a CPU spec gives the guest: sockets × cores × threads
// of its Topology.
func (c *CPU) VCPUs() int {
	sockets, cores, threads := c.Topology()
	return sockets * cores * threads
}

// NICQueues is the queue count of each virtio NIC (the tap the CNI plugin makes and the
// device QEMU opens on it): one per vCPU when networkInterfaceMultiQueue is set and the guest
// has more than one vCPU, else 0 (one queue, and a tap without the multi-queue flag). Other
// NIC models have one queue. The kernel refuses a tap whose multi-queue flag does not match
// how QEMU opens it, so the plugin (launcherpod.Interface.Queues) and the launcher's domain
// both take it from here.
func (d *DomainSpec) NICQueues() int {
	if mq := d.Devices.NetworkInterfaceMultiQueue; mq == nil || !*mq {
		return 0
	}
	if n := d.CPU.VCPUs(); n > 1 {
		return n
	}
	return 0
}

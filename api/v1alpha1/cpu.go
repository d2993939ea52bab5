package v1alpha1

// VCPUs is the number of virtual CPUs a CPU spec gives the guest: sockets × cores × threads,
// each 1 when unset (and a nil spec is one vCPU).
func (c *CPU) VCPUs() int {
	if c == nil {
		return 1
	}
	n := 1
	for _, v := range []uint32{c.Sockets, c.Cores, c.Threads} {
		if v > 0 {
			n *= int(v)
		}
	}
	return n
}

package v1alpha1

import (
	"testing"

	"k8s.io/utils/ptr"
)

func TestVCPUs(t *testing.T) {
	tests := []struct {
		name                   string
		cpu                    *CPU
		sockets, cores, thread int
	}{
		{"nil is one vCPU", nil, 1, 1, 1},
		{"unset counts are 1", &CPU{}, 1, 1, 1},
		{"cores only", &CPU{Cores: 4}, 1, 4, 1},
		{"all three", &CPU{Sockets: 2, Cores: 3, Threads: 2}, 2, 3, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, th := tt.cpu.Topology()
			if s != tt.sockets || c != tt.cores || th != tt.thread {
				t.Errorf("Topology() = %d, %d, %d; want %d, %d, %d", s, c, th, tt.sockets, tt.cores, tt.thread)
			}
			if got, want := tt.cpu.VCPUs(), tt.sockets*tt.cores*tt.thread; got != want {
				t.Errorf("VCPUs() = %d, want %d", got, want)
			}
		})
	}
}

func TestNICQueues(t *testing.T) {
	tests := []struct {
		name       string
		multiQueue *bool
		cpu        *CPU
		want       int
	}{
		{"multi-queue unset", nil, &CPU{Cores: 4}, 0},
		{"multi-queue off", ptr.To(false), &CPU{Cores: 4}, 0},
		{"multi-queue on, one vCPU", ptr.To(true), nil, 0},
		{"multi-queue on, one queue per vCPU", ptr.To(true), &CPU{Sockets: 2, Cores: 2, Threads: 2}, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DomainSpec{CPU: tt.cpu, Devices: Devices{NetworkInterfaceMultiQueue: tt.multiQueue}}
			if got := d.NICQueues(); got != tt.want {
				t.Errorf("NICQueues() = %d, want %d", got, tt.want)
			}
		})
	}
}

// Package expose builds the Service that exposes a VM, a VMI or a VMI replica set, as
// `virtctl expose` does: it selects the launcher pods by the labels the VM's pods carry.
package expose

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Options are the flags of `slimctl expose`.
type Options struct {
	Name       string // the Service's name (required)
	Port       int32  // the Service's port (required)
	TargetPort string // the guest's port, a number or a name; Port when empty
	Protocol   string // TCP (default), UDP or SCTP
	Type       string // ClusterIP (default), NodePort or LoadBalancer
	Namespace  string
}

// Service returns the Service for a workload whose launcher pods carry selector. kind and name
// only go into error messages and labels.
func Service(kind, name string, selector map[string]string, o Options) (*corev1.Service, error) {
	if o.Name == "" {
		return nil, fmt.Errorf("expose %s %s: --name is required", kind, name)
	}
	if o.Port < 1 || o.Port > 65535 {
		return nil, fmt.Errorf("expose %s %s: --port must be 1-65535, got %d", kind, name, o.Port)
	}
	if len(selector) == 0 {
		return nil, fmt.Errorf("expose %s %s: it has no labels to select its pods by; add labels to it (or its template)", kind, name)
	}
	svcType := corev1.ServiceTypeClusterIP
	switch strings.ToLower(o.Type) {
	case "", "clusterip":
	case "nodeport":
		svcType = corev1.ServiceTypeNodePort
	case "loadbalancer":
		svcType = corev1.ServiceTypeLoadBalancer
	default:
		return nil, fmt.Errorf("expose %s %s: --type must be ClusterIP, NodePort or LoadBalancer, got %q", kind, name, o.Type)
	}
	proto := corev1.ProtocolTCP
	switch strings.ToUpper(o.Protocol) {
	case "", "TCP":
	case "UDP":
		proto = corev1.ProtocolUDP
	case "SCTP":
		proto = corev1.ProtocolSCTP
	default:
		return nil, fmt.Errorf("expose %s %s: --protocol must be TCP, UDP or SCTP, got %q", kind, name, o.Protocol)
	}
	target := intstr.FromInt32(o.Port)
	if o.TargetPort != "" {
		target = intstr.Parse(o.TargetPort)
		if target.Type == intstr.Int && (target.IntVal < 1 || target.IntVal > 65535) {
			return nil, fmt.Errorf("expose %s %s: --target-port must be 1-65535, got %s", kind, name, o.TargetPort)
		}
	}
	sel := make(map[string]string, len(selector))
	for k, v := range selector {
		sel[k] = v
	}
	return &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name: o.Name, Namespace: o.Namespace,
			Labels: map[string]string{"slimvirt.io/exposed-" + strings.ToLower(kind): name},
		},
		Spec: corev1.ServiceSpec{
			Type:     svcType,
			Selector: sel,
			Ports:    []corev1.ServicePort{{Name: portName(proto, o.Port), Protocol: proto, Port: o.Port, TargetPort: target}},
		},
	}, nil
}

func portName(p corev1.Protocol, port int32) string {
	return fmt.Sprintf("%s-%d", strings.ToLower(string(p)), port)
}

// SelectorString renders a selector the way kubectl shows one, for messages.
func SelectorString(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sel[k]
	}
	return strings.Join(parts, ",")
}

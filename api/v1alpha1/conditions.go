package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SetCondition puts c into the status, keeping its transition time while its status does not
// change. The controller and the node agent each set their own condition types this way.
func (s *VirtualMachineInstanceStatus) SetCondition(c VirtualMachineInstanceCondition, now metav1.Time) {
	for i := range s.Conditions {
		if s.Conditions[i].Type != c.Type {
			continue
		}
		c.LastTransitionTime = s.Conditions[i].LastTransitionTime
		if s.Conditions[i].Status != c.Status {
			c.LastTransitionTime = now
		}
		s.Conditions[i] = c
		return
	}
	c.LastTransitionTime = now
	s.Conditions = append(s.Conditions, c)
}

// RemoveCondition takes the condition of type t out of the status.
func (s *VirtualMachineInstanceStatus) RemoveCondition(t VirtualMachineInstanceConditionType) {
	out := s.Conditions[:0]
	for _, c := range s.Conditions {
		if c.Type != t {
			out = append(out, c)
		}
	}
	s.Conditions = out
	if len(out) == 0 {
		s.Conditions = nil
	}
}

// Condition returns the condition of type t, or nil.
func (s *VirtualMachineInstanceStatus) Condition(t VirtualMachineInstanceConditionType) *VirtualMachineInstanceCondition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == t {
			return &s.Conditions[i]
		}
	}
	return nil
}

// IsTrue says whether the condition is there with status True.
func (c *VirtualMachineInstanceCondition) IsTrue() bool {
	return c != nil && c.Status == corev1.ConditionTrue
}

// SetSnapshotCondition puts c into a snapshot's or restore's conditions, keeping its
// transition time while its status does not change and its probe time while nothing changes.
func SetSnapshotCondition(conds *[]SnapshotCondition, c SnapshotCondition, now metav1.Time) {
	c.LastProbeTime, c.LastTransitionTime = now, now
	for i, old := range *conds {
		if old.Type != c.Type {
			continue
		}
		if old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
			if old.Reason == c.Reason && old.Message == c.Message {
				c.LastProbeTime = old.LastProbeTime
			}
		}
		(*conds)[i] = c
		return
	}
	*conds = append(*conds, c)
}

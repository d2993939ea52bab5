package claim

import corev1 "k8s.io/api/core/v1"

// NodeOf reads the node a slimvirt PV is pinned to from its node affinity; empty when it names
// none.
func NodeOf(pv *corev1.PersistentVolume) string {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return ""
	}
	for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == TopologyKey && len(e.Values) > 0 {
				return e.Values[0]
			}
		}
	}
	return ""
}

package claim

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestNodeOf(t *testing.T) {
	pinned := func(key string, values ...string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{NodeAffinity: &corev1.VolumeNodeAffinity{
			Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: "other", Operator: corev1.NodeSelectorOpIn, Values: []string{"x"}},
				{Key: key, Operator: corev1.NodeSelectorOpIn, Values: values},
			}}}},
		}}}
	}
	tests := []struct {
		name string
		pv   *corev1.PersistentVolume
		want string
	}{
		{"no affinity", &corev1.PersistentVolume{}, ""},
		{"no required terms", &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{NodeAffinity: &corev1.VolumeNodeAffinity{}}}, ""},
		{"pinned", pinned(TopologyKey, "node-a", "node-b"), "node-a"},
		{"another driver's key", pinned("topology.example.com/node", "node-a"), ""},
		{"no value", pinned(TopologyKey), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NodeOf(tt.pv); got != tt.want {
				t.Fatalf("NodeOf = %q, want %q", got, tt.want)
			}
		})
	}
}

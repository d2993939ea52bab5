package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

// GroupVersion is the API group and version of every type in this package.
var GroupVersion = schema.GroupVersion{Group: "slimvirt.io", Version: "v1alpha1"}

// SchemeBuilder registers this package's types; AddToScheme adds them to a scheme.
var (
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	AddToScheme   = SchemeBuilder.AddToScheme
)

// AddToSchemeOrDie is for tests and main packages that cannot go on without the types.
func AddToSchemeOrDie(s *runtime.Scheme) {
	if err := AddToScheme(s); err != nil {
		panic(err)
	}
}

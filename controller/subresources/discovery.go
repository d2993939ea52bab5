package subresources

import (
	"fmt"
	"net/http"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints"
	"k8s.io/apiserver/pkg/endpoints/discovery"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// groupVersion is the API's only version.
func groupVersion() schema.GroupVersion {
	return schema.GroupVersion{Group: api.Group, Version: api.Version}
}

// apiResources is the API's discovery document: each subresource with the verb it is
// authorized with, as KubeVirt's virt-api lists its own. Each names its parent's kind:
// discovery clients (kubectl) drop subresources without a kind from the aggregated form.
func apiResources() []metav1.APIResource {
	kinds := map[string]string{api.VMIs: "VirtualMachineInstance", api.VMs: "VirtualMachine", api.DataVolumes: "DataVolume"}
	var list []metav1.APIResource
	for _, rt := range routes() {
		list = append(list, metav1.APIResource{
			Name:       rt.resource + "/" + rt.subresource,
			Namespaced: true,
			Group:      v1.GroupVersion.Group,
			Version:    v1.GroupVersion.Version,
			Kind:       kinds[rt.resource],
			Verbs:      metav1.Verbs{verb(rt.method)},
		})
	}
	return list
}

// install serves discovery (/apis in both its forms, /apis/GROUP and /apis/GROUP/VERSION) and
// the subresources. The subresources are not go-restful routes: everything under the group
// goes to the non-go-restful mux, after the generic server's authentication and authorization.
func (s *Server) install() error {
	gv := groupVersion()
	version := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
	group := metav1.APIGroup{Name: gv.Group, Versions: []metav1.GroupVersionForDiscovery{version}, PreferredVersion: version}
	s.generic.DiscoveryGroupManager.AddGroup(group)
	resources, err := endpoints.ConvertGroupVersionIntoToDiscovery(s.resources)
	if err != nil {
		return fmt.Errorf("make aggregated discovery document: %w", err)
	}
	s.generic.AggregatedDiscoveryGroupManager.AddGroupVersion(gv.Group, apidiscoveryv2.APIVersionDiscovery{
		Version:   gv.Version,
		Resources: resources,
		Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent,
	})

	groupHandler := discovery.NewAPIGroupHandler(s.codecs, group)
	versionHandler := discovery.NewAPIVersionHandler(s.codecs, gv, discovery.APIResourceListerFunc(func() []metav1.APIResource {
		return s.resources
	}))
	mux := s.generic.Handler.NonGoRestfulMux
	prefix := "/apis/" + gv.Group
	mux.Handle(prefix, groupHandler)
	mux.Handle(prefix+"/"+gv.Version, versionHandler)
	mux.Handle(prefix+"/"+gv.Version+"/", versionHandler)
	mux.HandlePrefix(prefix+"/", http.HandlerFunc(s.serveSubresource))
	return nil
}

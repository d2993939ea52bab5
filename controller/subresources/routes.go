package subresources

import (
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/endpoints/request"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// route is one subresource: the HTTP method it answers and the handler that carries it out.
type route struct {
	resource, subresource, method string
	handle                        func(s *Server, w http.ResponseWriter, r *http.Request, t target)
}

// routes are the API's subresources. The kube-apiserver and this server authorize each with
// the verb its method maps to (GET get, PUT update, POST create).
func routes() []route {
	return []route{
		{api.VMIs, api.Console, http.MethodGet, (*Server).vmiAction},
		{api.VMIs, api.VNC, http.MethodGet, (*Server).vmiAction},
		{api.VMIs, api.Pause, http.MethodPut, (*Server).vmiAction},
		{api.VMIs, api.Unpause, http.MethodPut, (*Server).vmiAction},
		{api.VMIs, api.SoftReboot, http.MethodPut, (*Server).vmiAction},
		{api.VMIs, api.GuestOSInfo, http.MethodGet, (*Server).vmiAction},
		{api.VMIs, api.Freeze, http.MethodPut, (*Server).vmiAction},
		{api.VMIs, api.Unfreeze, http.MethodPut, (*Server).vmiAction},
		{api.VMs, api.Start, http.MethodPut, (*Server).vmRequest},
		{api.VMs, api.Stop, http.MethodPut, (*Server).vmRequest},
		{api.VMs, api.Restart, http.MethodPut, (*Server).vmRequest},
		{api.VMs, api.Migrate, http.MethodPut, (*Server).migrate},
		{api.DataVolumes, api.UploadToken, http.MethodPost, (*Server).uploadToken},
	}
}

// target is the object and subresource a request is for.
type target struct {
	resource, namespace, name, subresource string
	route                                  route
}

func (t target) String() string { return t.namespace + "/" + t.name }

// groupResource is the slimvirt.io resource the target is a subresource of, for Status answers.
func (t target) groupResource() schema.GroupResource {
	return v1.GroupVersion.WithResource(t.resource).GroupResource()
}

// resolve finds the route of a request from the RequestInfo the server authorized it with, so
// what is carried out is exactly what was authorized. Only namespaced subresources of valid
// names exist; the answer is a Status error otherwise.
func resolve(info *request.RequestInfo, method string) (target, error) {
	if info == nil || !info.IsResourceRequest || info.APIGroup != api.Group || info.APIVersion != api.Version {
		return target{}, apierrors.NewNotFound(schema.GroupResource{Group: api.Group}, "")
	}
	t := target{resource: info.Resource, namespace: info.Namespace, name: info.Name, subresource: info.Subresource}
	if len(info.Parts) != 3 || t.namespace == "" {
		return target{}, apierrors.NewNotFound(schema.GroupResource{Group: api.Group, Resource: info.Resource}, info.Name)
	}
	if errs := validation.IsDNS1123Label(t.namespace); len(errs) > 0 {
		return target{}, apierrors.NewBadRequest(fmt.Sprintf("invalid namespace %q: %s", t.namespace, strings.Join(errs, "; ")))
	}
	if errs := validation.IsDNS1123Subdomain(t.name); len(errs) > 0 {
		return target{}, apierrors.NewBadRequest(fmt.Sprintf("invalid name %q: %s", t.name, strings.Join(errs, "; ")))
	}
	for _, rt := range routes() {
		if rt.resource != t.resource || rt.subresource != t.subresource {
			continue
		}
		if rt.method != method {
			return target{}, apierrors.NewMethodNotSupported(t.groupResource(), method)
		}
		t.route = rt
		return t, nil
	}
	return target{}, apierrors.NewNotFound(schema.GroupResource{Group: api.Group, Resource: t.resource + "/" + t.subresource}, t.name)
}

// verb is the authorization verb of an HTTP method, as the kube-apiserver maps it.
func verb(method string) string {
	switch method {
	case http.MethodGet:
		return "get"
	case http.MethodPut:
		return "update"
	case http.MethodPost:
		return "create"
	}
	return strings.ToLower(method)
}

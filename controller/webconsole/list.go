package webconsole

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"

	"github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// maxList bounds the VMIs one answer lists.
const maxList = 500

var vmiResource = schema.GroupVersionResource{Group: v1.GroupVersion.Group, Version: v1.GroupVersion.Version, Resource: subresources.VMIs}

// VMIList is the answer of GET /api/namespaces/NS/virtualmachineinstances.
type VMIList struct {
	Namespace string `json:"namespace"`
	Items     []VMI  `json:"items"`
	// Truncated is true when the namespace holds more VMIs than one answer lists.
	Truncated bool `json:"truncated,omitempty"`
}

// VMI is one line of the list.
type VMI struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	Node  string `json:"node,omitempty"`
}

// list answers the VMIs of a namespace, as the kube-apiserver lists them to the user.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	if len(validation.IsDNS1123Label(ns)) != 0 {
		writeError(w, http.StatusBadRequest, "not a namespace name")
		return
	}
	token, ok := needToken(w, r)
	if !ok {
		return
	}
	out, err := s.listVMIs(r.Context(), token, ns)
	if err != nil {
		code, msg := refusal(err)
		s.cfg.Log.Info("list VMIs refused", "namespace", ns, "code", code, "err", err)
		writeError(w, code, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) listVMIs(ctx context.Context, token, ns string) (*VMIList, error) {
	dyn, err := dynamic.NewForConfig(s.userConfig(token))
	if err != nil {
		return nil, fmt.Errorf("make client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, err := dyn.Resource(vmiResource).Namespace(ns).List(ctx, metav1.ListOptions{Limit: maxList})
	if err != nil {
		return nil, fmt.Errorf("list VMIs in %s: %w", ns, err)
	}
	out := &VMIList{Namespace: ns, Items: make([]VMI, 0, len(l.Items)), Truncated: l.GetContinue() != ""}
	for _, o := range l.Items {
		phase, _, _ := unstructured.NestedString(o.Object, "status", "phase") // absent: not yet decided
		node, _, _ := unstructured.NestedString(o.Object, "status", "nodeName")
		if phase == "" {
			phase = "Pending"
		}
		out.Items = append(out.Items, VMI{Name: o.GetName(), Phase: phase, Node: node})
	}
	return out, nil
}

// refusal turns an error of a request to the kube-apiserver into the status and message the
// page shows: the kube-apiserver's own words when it answered.
func refusal(err error) (int, string) {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		s := st.Status()
		code := int(s.Code)
		if code < 400 || code > 599 {
			code = http.StatusBadGateway
		}
		msg := s.Message
		if msg == "" {
			msg = http.StatusText(code)
		}
		return code, msg
	}
	return http.StatusBadGateway, "the kube-apiserver did not answer"
}

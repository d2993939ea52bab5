package subresource

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// genericNotFound is what the kube-apiserver says of a path no API group serves.
const genericNotFound = "the server could not find the requested resource"

// Error is a request the server refused. It carries the server's metav1.Status, so
// apierrors.IsForbidden, IsNotFound and the like work on it (also when wrapped).
type Error struct {
	// Subresource, Resource, Namespace and Name say what was asked for.
	Subresource, Resource, Namespace, Name string
	// ServerStatus is the server's answer (made from the HTTP status when the body was not a
	// metav1.Status).
	ServerStatus metav1.Status
}

// Status implements apierrors.APIStatus.
func (e *Error) Status() metav1.Status { return e.ServerStatus }

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s %s/%s: %s", e.Subresource, kindOf(e.Resource), e.Namespace, e.Name, describe(e.ServerStatus))
}

// describe says plainly what a refusal means, with a hint where the server's words do not
// point at the cause.
func describe(s metav1.Status) string {
	msg := strings.TrimSpace(s.Message)
	if s.Details != nil {
		// A body that was not a metav1.Status is the only useful part of a generic answer.
		for _, c := range s.Details.Causes {
			if c.Type == metav1.CauseTypeUnexpectedServerResponse && strings.TrimSpace(c.Message) != "" {
				msg = strings.TrimSpace(c.Message)
			}
		}
	}
	msg = printable(msg, 1024)
	switch s.Reason {
	case metav1.StatusReasonForbidden:
		// `virtualmachineinstances.subresources.slimvirt.io "x" is forbidden: User "alice"
		// cannot ...`: the part before "forbidden:" repeats what the caller already says.
		if _, after, ok := strings.Cut(msg, "forbidden: "); ok {
			msg = after
		}
	case metav1.StatusReasonNotFound:
		if msg == "" || strings.HasPrefix(msg, genericNotFound) || msg == "404 page not found" {
			return fmt.Sprintf("not found: the cluster does not serve %s (is slimvirt's aggregated API registered? kubectl get apiservice %s)",
				subresources.Group, subresources.APIServiceName)
		}
	case metav1.StatusReasonServiceUnavailable:
		hint := fmt.Sprintf("service unavailable: slimvirt's aggregated API %s does not answer (kubectl get apiservice %s)",
			subresources.Group, subresources.APIServiceName)
		if msg == "" || strings.EqualFold(msg, "service unavailable") {
			return hint
		}
		return hint + ": " + msg
	}
	reason := reasonText(s)
	if msg == "" || strings.EqualFold(msg, reason) {
		return reason
	}
	return reason + ": " + msg
}

// reasonText turns a StatusReason ("MethodNotAllowed") into words ("method not allowed").
func reasonText(s metav1.Status) string {
	r := string(s.Reason)
	if r == "" || s.Reason == metav1.StatusReasonUnknown {
		if t := http.StatusText(int(s.Code)); t != "" {
			return strings.ToLower(t)
		}
		return fmt.Sprintf("HTTP %d", s.Code)
	}
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// requestError turns a REST client's error into an *Error when the server answered.
func requestError(sub, resource, namespace, name string, err error) error {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return &Error{Subresource: sub, Resource: resource, Namespace: namespace, Name: name, ServerStatus: st.Status()}
	}
	return fmt.Errorf("%s %s %s/%s: %w", sub, kindOf(resource), namespace, name, err)
}

// statusOf reads a refusal's status from an HTTP answer: its metav1.Status, or one made from
// the HTTP status and the (bounded, printable) body.
func statusOf(resp *http.Response) metav1.Status {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) // what was read is all there is to report
	var s metav1.Status
	if json.Unmarshal(body, &s) == nil && s.Kind == "Status" && s.Code != 0 {
		return s
	}
	generic := apierrors.NewGenericServerResponse(resp.StatusCode, http.MethodGet, schema.GroupResource{}, "", "", 0, false)
	return metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    int32(resp.StatusCode), //nolint:gosec // an HTTP status code fits
		Reason:  generic.ErrStatus.Reason,
		Message: printable(string(body), 512),
	}
}

// printable keeps at most n runes of s, without control characters: a body may come from
// anywhere on the way and ends up on the user's terminal.
func printable(s string, n int) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(strings.TrimSpace(s), "?") {
		if n == 0 {
			b.WriteString("...")
			break
		}
		if unicode.IsControl(r) {
			r = ' '
		}
		b.WriteRune(r)
		n--
	}
	return b.String()
}

// kindOf names a resource for messages: VMI, VM, DataVolume.
func kindOf(resource string) string {
	switch resource {
	case subresources.VMIs:
		return "VMI"
	case subresources.VMs:
		return "VM"
	case subresources.DataVolumes:
		return "DataVolume"
	}
	return resource
}

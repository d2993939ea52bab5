// Package launcherexec reaches a VM through its launcher pod with the Kubernetes exec API, so a
// user needs nothing but their namespace's rights on VMIs and pods/exec.
//
// The launcher answers these commands in its compute container (see docs/runtime.md):
// `slimvirt-launcher console` (stdio <-> the guest's serial console), `slimvirt-launcher vnc`
// (stdio <-> the VNC socket) and `slimvirt-launcher ctl ACTION` (pause, unpause, soft-reboot, reset).
package launcherexec

import (
	"context"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Launcher is the path of the launcher binary in the compute container.
const Launcher = "/usr/bin/slimvirt-launcher"

// Streams are the local ends of an exec session.
type Streams struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	TTY    bool
}

// Client execs into launcher pods.
type Client struct {
	Config *rest.Config
	Kube   kubernetes.Interface
	Client client.Client
}

// LauncherPod returns the name of the running launcher pod of a VMI, or an error that says
// why there is none.
func (c *Client) LauncherPod(ctx context.Context, namespace, vmi string) (string, error) {
	obj := &v1alpha1.VirtualMachineInstance{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: vmi}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("VMI %s not found in namespace %s", vmi, namespace)
		}
		return "", fmt.Errorf("get VMI %s/%s: %w", namespace, vmi, err)
	}
	if obj.Status.Phase != v1alpha1.Running || obj.Status.LauncherPod == "" {
		phase := obj.Status.Phase
		if phase == "" {
			phase = v1alpha1.Pending
		}
		return "", fmt.Errorf("VMI %s in namespace %s is not running (phase %s)", vmi, namespace, phase)
	}
	return obj.Status.LauncherPod, nil
}

// Exec runs the launcher with args in a pod's compute container, wired to s.
func (c *Client) Exec(ctx context.Context, namespace, pod string, args []string, s Streams) error {
	req := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).
		SubResource("exec").VersionedParams(&corev1.PodExecOptions{
		Container: launcherpod.ComputeContainer,
		Command:   append([]string{Launcher}, args...),
		Stdin:     s.Stdin != nil,
		Stdout:    s.Stdout != nil,
		Stderr:    s.Stderr != nil && !s.TTY,
		TTY:       s.TTY,
	}, scheme.ParameterCodec)
	exec, err := newExecutor(c.Config, req.URL().String())
	if err != nil {
		return fmt.Errorf("exec into pod %s/%s: %w", namespace, pod, err)
	}
	opts := remotecommand.StreamOptions{Stdin: s.Stdin, Stdout: s.Stdout, Tty: s.TTY}
	if !s.TTY {
		opts.Stderr = s.Stderr
	}
	if err := exec.StreamWithContext(ctx, opts); err != nil {
		return fmt.Errorf("exec %v in pod %s/%s: %w", args, namespace, pod, err)
	}
	return nil
}

// newExecutor prefers the websocket protocol and falls back to SPDY, as kubectl does.
func newExecutor(cfg *rest.Config, url string) (remotecommand.Executor, error) {
	u, err := neturl.Parse(url)
	if err != nil {
		return nil, err
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	if err != nil {
		return nil, err
	}
	ws, err := remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, url)
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, fallBackToSPDY)
}

// fallBackToSPDY tells whether the websocket executor failed in a way SPDY may not: the server
// refused the upgrade, or a proxy cannot carry websockets. The error type comes from
// k8s.io/streaming, which client-go's executors return; apimachinery's deprecated copy of the
// type does not match it.
func fallBackToSPDY(err error) bool {
	return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
}

package v1alpha1

// Start, stop and restart requests. KubeVirt serves these as subresources of an aggregated API
// server; slimvirt has none, so a client asks by annotating the VirtualMachine and the
// controller carries the request out with KubeVirt's semantics, then removes the annotation.
// `kubectl annotate vm NAME slimvirt.io/start-requested=now` works as well as slimctl.
const (
	// AnnotationStartRequested asks the VM to start (any value).
	AnnotationStartRequested = "slimvirt.io/start-requested"
	// AnnotationStopRequested asks the VM to stop (any value).
	AnnotationStopRequested = "slimvirt.io/stop-requested"
	// AnnotationRestartRequested asks for the VM's VMI to be replaced. Its value is the UID of
	// the VMI to replace; any other value is rewritten by the controller to the current VMI's
	// UID, so a request is carried out exactly once even across controller restarts.
	AnnotationRestartRequested = "slimvirt.io/restart-requested"
)

package charttest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// grant is one resource's verbs in one Role or ClusterRole, and why the chart grants them.
type grant struct {
	role     string // "ClusterRole name" or "Role name"
	resource string // group/resource; core resources without a group
	verbs    string // sorted, comma-separated
	reason   string
}

// reviewed is every right the chart grants, each with its reason, as reviewed. A rule added to
// a template, or a verb added to a rule, fails TestRBACReviewed until it is added here, with its
// reason, and to docs/security.md.
var reviewed = []grant{
	// The controller, cluster-wide.
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachineinstances", "create,delete,get,list,patch,watch", "VMs and replica sets make and delete their VMIs; every write is a patch"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachines", "create,delete,get,list,patch,watch", "reconciled; finalizers patched"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachineinstancereplicasets", "create,delete,get,list,patch,watch", "reconciled; finalizers patched"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/datavolumes", "create,delete,get,list,patch,watch", "a VM's dataVolumeTemplates are made and deleted with it"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachineinstances/status", "patch", "status written by the VMI reconciler"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachines/status", "patch", "status written by the VM reconciler"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachineinstancereplicasets/status", "patch", "status written by the replica set reconciler"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/datavolumes/status", "patch", "status written by the DataVolume reconciler"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachineinstances/finalizers", "update", "owner references with blockOwnerDeletion on launcher pods"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachines/finalizers", "update", "owner references on a VM's VMIs and DataVolumes"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachineinstancereplicasets/finalizers", "update", "owner references on a replica set's VMIs"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/datavolumes/finalizers", "update", "owner references on a DataVolume's PVC"},
	{"ClusterRole slimvirt-controller", "pods", "create,delete,get,list,patch,watch", "launcher pods (the cache holds launcher pods only); patch: sign a new launcher pod for its UID and lift its scheduling gate"},
	{"ClusterRole slimvirt-controller", "persistentvolumeclaims", "create,get,list,patch,watch", "a DataVolume's PVC; patch: the import-credentials finalizer"},
	{"ClusterRole slimvirt-controller", "persistentvolumes", "get,list,watch", "a clone source's node"},
	{"ClusterRole slimvirt-controller", "secrets", "get", "copy the Secret an import names (its own namespace) for the node; check a cloud-init Secret exists"},
	{"ClusterRole slimvirt-controller", "configmaps", "get", "copy the CA ConfigMap an import names (its own namespace) for the node"},
	{"ClusterRole slimvirt-controller", "storage.k8s.io/storageclasses", "get,list,watch", "the default StorageClass; late binding"},
	{"ClusterRole slimvirt-controller", "storage.k8s.io/csinodes", "get,list,watch", "nodes running the driver, for an immediate DataVolume"},
	{"ClusterRole slimvirt-controller", "storage.k8s.io/csistoragecapacities", "get,list,watch", "the node with the most free space, for an immediate DataVolume"},
	{"ClusterRole slimvirt-controller", "events", "create,patch", "leader election's events (core/v1)"},
	{"ClusterRole slimvirt-controller", "events.k8s.io/events", "create,patch", "the reconcilers' events"},
	{"ClusterRole slimvirt-controller", "nodes", "get", "the aggregated API reaches a VMI's node agent at its node's InternalIP"},
	{"ClusterRole slimvirt-controller", "apiregistration.k8s.io/apiservices[v1alpha1.subresources.slimvirt.io]", "get,patch", "the controller writes its CA into the aggregated API's caBundle"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachinesnapshots", "get,list,patch,watch", "reconciled; the snapshot's finalizer patched"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachinerestores", "get,list,patch,watch", "reconciled"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachinesnapshotcontents", "create,get,list,watch", "a snapshot's content, made by the controller only"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachinesnapshots/status", "patch", "status written by the snapshot reconciler"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachinesnapshotcontents/status", "patch", "status written by the snapshot reconciler"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachinerestores/status", "patch", "status written by the restore reconciler"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachinesnapshots/finalizers", "update", "owner reference on a snapshot's content"},
	{"ClusterRole slimvirt-controller", "slimvirt.io/virtualmachinesnapshotcontents/finalizers", "update", "owner references on a content's VolumeSnapshots"},
	{"ClusterRole slimvirt-controller", "snapshot.storage.k8s.io/volumesnapshots", "create,delete,get,list,watch", "one VolumeSnapshot per persistent disk of a snapshot"},
	{"ClusterRole slimvirt-controller", "snapshot.storage.k8s.io/volumesnapshotclasses", "get,list,watch", "the class of a disk's driver"},
	{"ClusterRole slimvirt-controller", "subresources.slimvirt.io/virtualmachineinstances/freeze", "update", "a running guest is frozen while its VolumeSnapshots are made"},
	{"ClusterRole slimvirt-controller", "subresources.slimvirt.io/virtualmachineinstances/unfreeze", "update", "and thawed right after"},
	// The controller, in the release namespace.
	{"Role slimvirt-controller", "coordination.k8s.io/leases", "create,get,update", "leader election"},
	{"Role slimvirt-controller", "secrets", "create,delete", "the per-volume import Secrets, made before an import and deleted when it ends; registry importer pods' token Secrets"},
	{"Role slimvirt-controller", "services[slimvirt-upload]", "get", "registry importer pods send their disk to the upload Service's cluster IP"},
	{"Role slimvirt-controller", "secrets[slimvirt-ca,slimvirt-node-access-tls,slimvirt-upload-token-key]", "get,update", "the CA, the node agents' serving certificate and the upload-token key, made and rotated by the controller"},
	{"Role slimvirt-controller", "apps/deployments[slimvirt-controller]", "get", "its own Deployment owns the certificates and keys it makes, so helm uninstall removes them"},
	{"Role slimvirt-controller", "configmaps", "create", "the upload-token public key, made once"},
	{"Role slimvirt-controller", "configmaps[slimvirt-upload-token-key]", "get,update", "the upload-token public key, for the upload endpoints"},
	{"Role slimvirt-upload-ca-reader", "configmaps[slimvirt-upload-ca]", "get", "every authenticated user reads the upload endpoint's CA, so uploads verify TLS"},
	// The node (agent, slimvirt-csi, external-provisioner, external-resizer), cluster-wide.
	{"ClusterRole slimvirt-node", "persistentvolumes", "create,delete,get,list,patch,watch", "external-provisioner makes and deletes PVs; external-resizer grows them; upload finds a PVC's node"},
	{"ClusterRole slimvirt-node", "persistentvolumeclaims", "get,list,patch,update,watch", "the sidecars watch claims; slimvirt-csi reads a PVC's source and reports progress on it"},
	{"ClusterRole slimvirt-node", "persistentvolumeclaims/status", "patch", "external-resizer reports the new size"},
	{"ClusterRole slimvirt-node", "events", "create,patch", "the sidecars' events"},
	{"ClusterRole slimvirt-node", "nodes", "get,list,watch", "external-provisioner's topology; upload finds a node's address"},
	{"ClusterRole slimvirt-node", "pods", "get,list,watch", "the node agent watches its node's launcher pods; external-resizer checks a volume is in use"},
	{"ClusterRole slimvirt-node", "pods/status", "patch", "the node agent sets a launcher pod's readiness gate"},
	{"ClusterRole slimvirt-node", "slimvirt.io/virtualmachineinstances", "get", "the node agent finds a launcher pod's VMI"},
	{"ClusterRole slimvirt-node", "slimvirt.io/virtualmachineinstances/status", "patch", "the node agent reports a VMI's status"},
	{"ClusterRole slimvirt-node", "storage.k8s.io/storageclasses", "get,list,watch", "the sidecars' informers"},
	{"ClusterRole slimvirt-node", "storage.k8s.io/csinodes", "get,list,watch", "external-provisioner's topology"},
	{"ClusterRole slimvirt-node", "storage.k8s.io/volumeattributesclasses", "get,list,watch", "the sidecars' informers"},
	{"ClusterRole slimvirt-node", "snapshot.storage.k8s.io/volumesnapshotclasses", "get,list,watch", "csi-snapshotter's informers"},
	{"ClusterRole slimvirt-node", "snapshot.storage.k8s.io/volumesnapshots", "get,list,watch", "external-provisioner reads the snapshot a claim is made from"},
	{"ClusterRole slimvirt-node", "snapshot.storage.k8s.io/volumesnapshotcontents", "get,list,patch,update,watch", "csi-snapshotter takes its node's snapshots and records their handles"},
	{"ClusterRole slimvirt-node", "snapshot.storage.k8s.io/volumesnapshotcontents/status", "patch,update", "csi-snapshotter reports a snapshot ready"},
	// The snapshot controller (snapshots.controller.enabled).
	{"ClusterRole slimvirt-snapshot-controller", "persistentvolumes", "get,list,watch", "a snapshot's source volume and its node"},
	{"ClusterRole slimvirt-snapshot-controller", "persistentvolumeclaims", "get,list,update,watch", "a snapshot's source claim holds a finalizer while it is snapshotted"},
	{"ClusterRole slimvirt-snapshot-controller", "events", "create,patch", "its events"},
	{"ClusterRole slimvirt-snapshot-controller", "nodes", "get,list,watch", "--enable-distributed-snapshotting: the node of a volume's affinity"},
	{"ClusterRole slimvirt-snapshot-controller", "snapshot.storage.k8s.io/volumesnapshotclasses", "get,list,watch", "the class a snapshot names, or the default"},
	{"ClusterRole slimvirt-snapshot-controller", "snapshot.storage.k8s.io/volumesnapshotcontents", "create,delete,get,list,patch,update,watch", "makes, binds and deletes contents"},
	{"ClusterRole slimvirt-snapshot-controller", "snapshot.storage.k8s.io/volumesnapshots", "create,delete,get,list,patch,update,watch", "binds snapshots to contents"},
	{"ClusterRole slimvirt-snapshot-controller", "snapshot.storage.k8s.io/volumesnapshotcontents/status", "patch,update", "a snapshot's state"},
	{"ClusterRole slimvirt-snapshot-controller", "snapshot.storage.k8s.io/volumesnapshots/status", "patch,update", "a snapshot's state"},
	{"Role slimvirt-snapshot-controller", "coordination.k8s.io/leases", "create,get,update", "leader election"},
	// The node, in the release namespace.
	{"Role slimvirt-node", "storage.k8s.io/csistoragecapacities", "create,delete,get,list,patch,update,watch", "external-provisioner publishes its node's free space"},
	{"Role slimvirt-node", "coordination.k8s.io/leases", "create,get,update", "external-resizer's leader election"},
	{"Role slimvirt-node", "pods", "get", "external-provisioner finds its pod, the capacity objects' owner"},
	{"Role slimvirt-node", "apps/daemonsets", "get,list,watch", "the capacity objects' owner; the node agent tells helm uninstall from a restart"},
	{"Role slimvirt-node", "secrets", "get", "the per-volume import Secret of a volume being imported (slimvirt-import-<pvc-uid>)"},
	{"Role slimvirt-node", "configmaps[slimvirt-upload-token-key]", "get", "the upload endpoint verifies upload tokens with the controller's public key"},
	// Namespace users, aggregated into the built-in admin, edit and view roles.
	{"ClusterRole slimvirt-edit", "slimvirt.io/virtualmachineinstances", "create,delete,deletecollection,get,list,patch,update,watch", "edit and admin manage VMs"},
	{"ClusterRole slimvirt-edit", "slimvirt.io/virtualmachines", "create,delete,deletecollection,get,list,patch,update,watch", "edit and admin manage VMs"},
	{"ClusterRole slimvirt-edit", "slimvirt.io/virtualmachineinstancereplicasets", "create,delete,deletecollection,get,list,patch,update,watch", "edit and admin manage VMs"},
	{"ClusterRole slimvirt-edit", "slimvirt.io/datavolumes", "create,delete,deletecollection,get,list,patch,update,watch", "edit and admin manage disks"},
	{"ClusterRole slimvirt-edit", "slimvirt.io/virtualmachineinstancereplicasets/scale", "get,patch,update", "kubectl scale"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachineinstances/console", "get", "the serial console through the aggregated API"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachineinstances/vnc", "get", "the screen through the aggregated API"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachineinstances/guestosinfo", "get", "what the guest agent says"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachineinstances/pause", "update", "power action"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachineinstances/unpause", "update", "power action"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachineinstances/softreboot", "update", "power action"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachines/start", "update", "power action"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachines/stop", "update", "power action"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachines/restart", "update", "power action"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/virtualmachines/migrate", "update", "asks for a migration"},
	{"ClusterRole slimvirt-edit", "subresources.slimvirt.io/datavolumes/uploadtoken", "create", "slimctl image-upload gets a token for one DataVolume's upload"},
	{"ClusterRole slimvirt-snapshot-edit", "slimvirt.io/virtualmachinesnapshots", "create,delete,deletecollection,get,list,patch,update,watch", "edit and admin snapshot their VMs"},
	{"ClusterRole slimvirt-snapshot-edit", "slimvirt.io/virtualmachinerestores", "create,delete,deletecollection,get,list,patch,update,watch", "edit and admin restore their VMs"},
	{"ClusterRole slimvirt-snapshot-edit", "slimvirt.io/virtualmachinesnapshotcontents", "get,list,watch", "read only: the controller alone writes a content, which a restore trusts"},
	{"ClusterRole slimvirt-snapshot-edit", "subresources.slimvirt.io/virtualmachineinstances/freeze", "update", "freeze the guest's filesystems, as KubeVirt's edit role may"},
	{"ClusterRole slimvirt-snapshot-edit", "subresources.slimvirt.io/virtualmachineinstances/unfreeze", "update", "thaw them"},
	{"ClusterRole slimvirt-snapshot-view", "slimvirt.io/virtualmachinesnapshots", "get,list,watch", "view reads snapshots"},
	{"ClusterRole slimvirt-snapshot-view", "slimvirt.io/virtualmachinesnapshotcontents", "get,list,watch", "view reads snapshots"},
	{"ClusterRole slimvirt-snapshot-view", "slimvirt.io/virtualmachinerestores", "get,list,watch", "view reads restores"},
	{"ClusterRole slimvirt-view", "slimvirt.io/virtualmachineinstances", "get,list,watch", "view reads VMs"},
	{"ClusterRole slimvirt-view", "slimvirt.io/virtualmachines", "get,list,watch", "view reads VMs"},
	{"ClusterRole slimvirt-view", "slimvirt.io/virtualmachineinstancereplicasets", "get,list,watch", "view reads VMs"},
	{"ClusterRole slimvirt-view", "slimvirt.io/datavolumes", "get,list,watch", "view reads disks"},
	{"ClusterRole slimvirt-view", "slimvirt.io/virtualmachineinstancereplicasets/scale", "get", "view reads the scale"},
	{"ClusterRole slimvirt-view", "subresources.slimvirt.io/virtualmachineinstances/guestosinfo", "get", "view reads what the guest agent says, as in KubeVirt"},
}

// grants flattens the rendered Roles and ClusterRoles into one grant per role and resource.
// A rule with nonResourceURLs or a wildcard is reported as an error: the table cannot review it.
func grants(t *testing.T, r rendered) []grant {
	t.Helper()
	var out []grant
	for _, o := range r {
		if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
			continue
		}
		var role rbacv1.ClusterRole // a Role's rules have the same shape
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
			t.Fatalf("convert %s: %v", o, err)
		}
		if role.AggregationRule != nil {
			t.Errorf("%s aggregates other roles: its rights cannot be reviewed here", o)
		}
		for _, rule := range role.Rules {
			if len(rule.NonResourceURLs) > 0 {
				t.Errorf("%s: rule %v has nonResourceURLs: the table cannot review them", o, rule)
			}
			// A rule limited to named objects is reviewed as resource[name,...].
			names := ""
			if len(rule.ResourceNames) > 0 {
				names = "[" + strings.Join(slices.Sorted(slices.Values(rule.ResourceNames)), ",") + "]"
			}
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					verbs := slices.Sorted(slices.Values(rule.Verbs))
					if g == "*" || res == "*" || slices.Contains(verbs, "*") {
						t.Errorf("%s grants a wildcard (%q %q %v)", o, g, res, verbs)
					}
					name := res + names
					if g != "" {
						name = g + "/" + res + names
					}
					out = append(out, grant{role: o.GetKind() + " " + o.GetName(), resource: name, verbs: strings.Join(verbs, ",")})
				}
			}
		}
	}
	return out
}

// TestRBACReviewed renders the chart and compares every right of every Role and ClusterRole
// with the reviewed table: nothing more, nothing less, and no verb granted twice.
func TestRBACReviewed(t *testing.T) {
	for _, v := range valueSets {
		t.Run(v.name, func(t *testing.T) {
			objs, err := cluster.helm.template(t.Context(), prepare(t, v))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, g := range grants(t, rendered(objs)) {
				key := g.role + " " + g.resource
				if _, dup := got[key]; dup {
					t.Errorf("%s: granted by two rules; merge them", key)
				}
				got[key] = g.verbs
			}
			want := map[string]string{}
			for _, g := range reviewed {
				want[g.role+" "+g.resource] = g.verbs
			}
			for key, verbs := range got {
				if w, ok := want[key]; !ok {
					t.Errorf("not reviewed: %s [%s]: add it, with its reason, to the table in rbac_test.go and to docs/security.md", key, verbs)
				} else if w != verbs {
					t.Errorf("%s grants [%s], reviewed [%s]", key, verbs, w)
				}
			}
			roles := map[string]bool{}
			for key := range got {
				role, _, _ := strings.Cut(key, " ")
				name, _, _ := strings.Cut(strings.TrimPrefix(key, role+" "), " ")
				roles[role+" "+name] = true
			}
			for key, verbs := range want {
				role, _, _ := strings.Cut(key, " ")
				name, _, _ := strings.Cut(strings.TrimPrefix(key, role+" "), " ")
				if v.name != "defaults" && !roles[role+" "+name] {
					continue // a role the value set leaves out (snapshots.controller.enabled=false)
				}
				if _, ok := got[key]; !ok {
					t.Errorf("reviewed but no longer granted: %s [%s]: drop it from the table", key, verbs)
				}
			}
		})
	}
}

// TestRBACNodeReadsNoTenantSecret checks what every account bound by the chart may do with
// Secrets and ConfigMaps: the node nothing cluster-wide, and neither lists or watches them
// anywhere.
func TestRBACNodeReadsNoTenantSecret(t *testing.T) {
	objs, err := cluster.helm.template(t.Context(), prepare(t, valueSets[0]))
	if err != nil {
		t.Fatal(err)
	}
	r := rendered(objs)
	byRole := map[string][]grant{}
	for _, g := range grants(t, r) {
		byRole[g.role] = append(byRole[g.role], g)
	}
	// Which roles each service account holds, and where.
	held := map[string][]string{} // account -> "ClusterRole x" (cluster-wide) or "Role x"
	for _, o := range r {
		if o.GetKind() != "RoleBinding" && o.GetKind() != "ClusterRoleBinding" {
			continue
		}
		var b rbacv1.RoleBinding
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
			t.Fatalf("convert %s: %v", o, err)
		}
		scope := "cluster-wide"
		if o.GetKind() == "RoleBinding" {
			scope = "in " + o.GetNamespace()
		}
		for _, s := range b.Subjects {
			held[s.Name] = append(held[s.Name], fmt.Sprintf("%s %s|%s", b.RoleRef.Kind, b.RoleRef.Name, scope))
		}
	}
	if len(held["slimvirt-node"]) == 0 {
		t.Fatal("no binding for the node's service account slimvirt-node")
	}
	for account, roles := range held {
		for _, rs := range roles {
			role, scope, _ := strings.Cut(rs, "|")
			for _, g := range byRole[role] {
				if base, _, _ := strings.Cut(g.resource, "["); base != "secrets" && base != "configmaps" {
					continue
				}
				if strings.Contains(g.verbs, "list") || strings.Contains(g.verbs, "watch") {
					t.Errorf("%s may %s %s %s (%s): no account lists or watches them", account, g.verbs, g.resource, scope, role)
				}
				if account == "slimvirt-node" && scope == "cluster-wide" {
					t.Errorf("the node may %s %s cluster-wide (%s): it may read only its namespace's per-volume import Secrets", g.verbs, g.resource, role)
				}
			}
		}
	}
}

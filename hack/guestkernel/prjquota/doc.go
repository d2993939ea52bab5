// Package prjquota holds the test that shows project quotas work in the guest kernel
// hack/guestkernel/run.sh boots: the host kernel has no XFS quota support and no quota
// format for ext4's quota files. Run it with
//
//	hack/guestkernel/run.sh -tags guestkernel ./hack/guestkernel/prjquota
package prjquota

// Package plugin is the slimvirt chained CNI plugin: ADD, DEL, CHECK, STATUS and GC for the
// bridge and masquerade bindings of launcher pods; every other pod is passed through untouched.
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/binding"
	"github.com/slimvirt/slimvirt/cni/netconf"
)

// Versions are the spec versions the plugin speaks (chaining needs 0.3.0 or later).
func Versions() version.PluginInfo {
	return version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
}

// errPluginNotAvailable is the CNI 1.1 STATUS code for a plugin that cannot take ADDs.
const errPluginNotAvailable uint = 50

// About is printed by VERSION without config.
const About = "slimvirt: bridge and masquerade bindings for slimvirt VMs"

// Funcs returns the plugin's commands for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: Add, Del: Del, Check: Check, Status: Status, GC: GC}
}

type request struct {
	conf   *netconf.Config
	store  *store
	ifaces []netconf.VMInterface
}

// load parses the config and decides whether the pod is ours. withPrev requires a prevResult.
func load(args *skel.CmdArgs, withPrev bool) (*request, error) {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if withPrev {
		if conf.RawPrevResult == nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "slimvirt must be chained after a plugin that gives the pod its IP (no prevResult)", "")
		}
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("parse prevResult: %v", err), "")
		}
	}
	req := &request{conf: conf}
	st, storeErr := newStore(conf)
	req.store = st
	// A pod without the annotation is never failed, whatever else is wrong on the node: the
	// plugin sits in every pod's chain.
	if _, ok := conf.RuntimeConfig.PodAnnotations[launcherpod.AnnotationInterfaces]; !ok {
		return req, nil
	}
	if storeErr != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, storeErr.Error(), "")
	}
	pod, err := netconf.ParseArgs(args.Args)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	key, err := netconf.LoadKey(conf.SigningKeyFile)
	if err != nil {
		return nil, err
	}
	req.ifaces, err = netconf.Interfaces(key, pod, conf.RuntimeConfig.PodAnnotations)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return req, nil
}

// Add wires a launcher pod's netns for its VM and passes every other pod through.
func Add(args *skel.CmdArgs) error {
	req, err := load(args, true)
	if err != nil {
		return err
	}
	if req.ifaces == nil {
		return passThrough(args.StdinData)
	}
	prev, err := current.NewResultFromResult(req.conf.PrevResult)
	if err != nil {
		return fmt.Errorf("convert prevResult: %w", err)
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidNetworkConfig, "no network namespace (CNI_NETNS) for a launcher pod", "")
	}
	if done, err := req.store.load(args.ContainerID, args.IfName); err != nil {
		return err
	} else if done != nil {
		// A repeated ADD (a runtime retrying after a timeout) gets the same answer when the
		// binding is whole, and an error, not a second binding, when it is not.
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error { return binding.Check(done.Attachment) })
		if err != nil {
			return fmt.Errorf("%s is already bound but broken (DEL it first): %w", args.IfName, err)
		}
		return types.PrintResult(describe(prev, done.Attachment, args.Netns), req.conf.CNIVersion)
	}
	iface := req.ifaces[0]
	self := record{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns}
	release := func() {}
	if iface.MAC != "" && iface.Binding == launcherpod.BindingBridge {
		lock, err := guardGuestMAC(args.StdinData, iface.MAC, req.store, self, prev)
		if err != nil {
			return err
		}
		release = lock.release
		defer release()
	}
	// The record is written before the netns is touched and removed again if ADD fails.
	persist := func(att *binding.Attachment) error {
		r := self
		r.Attachment = att
		err := req.store.save(&r)
		// Saved, the record shows the MAC to the next ADD's check.
		release()
		return err
	}
	var att *binding.Attachment
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		var err error
		switch iface.Binding {
		case launcherpod.BindingMasquerade:
			att, err = binding.SetupMasquerade(args.IfName, iface, persist)
		default:
			att, err = binding.SetupBridge(args.IfName, iface, persist)
		}
		return err
	})
	if err != nil {
		// The record goes with a clean rollback; after a failed one DEL needs it.
		if !errors.Is(err, binding.ErrRollback) {
			if rerr := req.store.remove(args.ContainerID, args.IfName); rerr != nil {
				err = fmt.Errorf("%w (and %w)", err, rerr)
			}
		}
		return fmt.Errorf("set up %s binding of %s: %w", iface.Binding, args.IfName, err)
	}
	return types.PrintResult(describe(prev, att, args.Netns), req.conf.CNIVersion)
}

// passThrough prints the prevResult exactly as it came in.
func passThrough(stdin []byte) error {
	var in struct {
		PrevResult json.RawMessage `json:"prevResult"`
	}
	if err := json.Unmarshal(stdin, &in); err != nil {
		return fmt.Errorf("read prevResult: %w", err)
	}
	if _, err := os.Stdout.Write(append(in.PrevResult, '\n')); err != nil {
		return fmt.Errorf("print result: %w", err)
	}
	return nil
}

// describe adds the VM's tap and bridge to the result; the pod's own interface and IPs stay
// first and unchanged, so the kubelet reports the same pod IP.
func describe(prev *current.Result, att *binding.Attachment, netns string) *current.Result {
	res := *prev
	res.Interfaces = append(append([]*current.Interface(nil), prev.Interfaces...),
		&current.Interface{Name: binding.BridgeName(att.IfName), Sandbox: netns},
		&current.Interface{Name: binding.TapName, Mac: att.GuestMAC, Sandbox: netns},
	)
	return &res
}

// Del undoes Add. It succeeds when the netns, the record or any piece is already gone, and when
// called again.
func Del(args *skel.CmdArgs) error {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	st, err := newStore(conf)
	if err != nil {
		// Without a usable state dir ADD acted on no pod.
		return nil
	}
	rec, err := st.load(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	var att *binding.Attachment
	if rec != nil {
		att = rec.Attachment
	}
	if err := teardownIn(args.Netns, args.IfName, att); err != nil {
		return err
	}
	return st.remove(args.ContainerID, args.IfName)
}

// teardownIn undoes an attachment in netns. Without a record it acts only when the bridge
// carries the plugin's own record, so a foreign k6t-eth0 is never touched.
func teardownIn(netns, ifName string, att *binding.Attachment) error {
	if netns == "" {
		return nil
	}
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		if att == nil {
			br, err := netlinksafe.LinkByName(binding.BridgeName(ifName))
			if err != nil {
				return nil
			}
			r, err := binding.DecodeRecord(br.Attrs().Alias)
			if err != nil {
				return nil
			}
			att = &binding.Attachment{Binding: r.Binding, IfName: ifName, GuestMAC: r.GuestMAC}
		}
		return binding.Teardown(att)
	})
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &notExist) || errors.As(err, &notNS) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tear down %s binding of %s: %w", attBinding(att), ifName, err)
	}
	return nil
}

func attBinding(att *binding.Attachment) launcherpod.Binding {
	if att == nil {
		return "slimvirt"
	}
	return att.Binding
}

// Check reports a launcher pod whose binding lost a piece. Other pods have nothing to check.
func Check(args *skel.CmdArgs) error {
	req, err := load(args, true)
	if err != nil {
		return err
	}
	if req.store == nil {
		return nil
	}
	rec, err := req.store.load(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	if rec == nil {
		if req.ifaces != nil {
			return fmt.Errorf("launcher pod %s has no slimvirt binding", args.ContainerID)
		}
		return nil
	}
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error { return binding.Check(rec.Attachment) })
	if err != nil {
		return fmt.Errorf("check %s binding of %s: %w", rec.Attachment.Binding, args.IfName, err)
	}
	return nil
}

// Status says whether the plugin can take ADDs: its state directory must be usable.
func Status(args *skel.CmdArgs) error {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if err := conf.CheckStateDir(); err != nil {
		return types.NewError(errPluginNotAvailable, err.Error(), "")
	}
	if err := os.MkdirAll(conf.StateDir, 0o700); err != nil {
		return types.NewError(errPluginNotAvailable, fmt.Sprintf("state directory %s: %v", conf.StateDir, err), "")
	}
	return nil
}

// GC tears down and forgets every attachment of the network that is not in the valid list.
func GC(args *skel.CmdArgs) error {
	conf, err := netconf.Parse(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	st, err := newStore(conf)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	valid := map[types.GCAttachment]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a] = true
	}
	recs, err := st.list()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		if valid[types.GCAttachment{ContainerID: r.ContainerID, IfName: r.IfName}] {
			continue
		}
		if err := teardownIn(r.Netns, r.IfName, r.Attachment); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := st.remove(r.ContainerID, r.IfName); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

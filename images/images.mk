# Container images and the test guest. docs/images.md and docs/guest.md describe them.

IMAGES_OUT := $(OUT)/images
IMAGEBUILD := $(OUT)/tools/imagebuild
IMAGEBUILD_SRC := $(wildcard images/ocitar/*.go images/cmd/imagebuild/*.go)

GUEST_OUT := $(OUT)/guest
GUEST_CACHE := $(SLIMVIRT_CACHE)/guest
GUEST_KERNEL := $(GUEST_CACHE)/kernel/current
GUEST_INITRD_SRC := $(addprefix images/guest/,init guest-lib.sh udhcpc.script power-button modules.txt modules-boot.txt build-initrd.sh)
GUEST_TAG := slimvirt.io/guest:dev

TEST_TARGETS += test-guest

##@ Images

.PHONY: guest
guest: $(GUEST_OUT)/vmlinuz $(GUEST_OUT)/vmlinux $(GUEST_OUT)/initrd.gz $(GUEST_OUT)/disk.raw $(GUEST_OUT)/disk.qcow2 $(IMAGES_OUT)/guest.tar ## Build the test guest: kernel, initrd, bootable disks, containerDisk image

.PHONY: test-guest
test-guest: guest ## Boot the test guest in QEMU (TCG): disk, kernel and qcow2 boots, DHCP, HTTP, cloud-init, power button, reboot
	SLIMVIRT_GUEST_DIR=$(GUEST_OUT) go test -count=1 -v -timeout 15m ./images/guest/

$(IMAGEBUILD): $(IMAGEBUILD_SRC) go.mod
	@mkdir -p $(@D)
	CGO_ENABLED=0 go build -trimpath -o $@ ./images/cmd/imagebuild

# The kernel package is downloaded and unpacked once; the cache outlives `make clean`.
$(GUEST_KERNEL)/vmlinuz:
	bash images/guest/fetch-kernel.sh $(GUEST_CACHE)

# Every guest file is replaced by a rename: tests of other modules may be booting it meanwhile.
$(GUEST_OUT)/vmlinuz: $(GUEST_KERNEL)/vmlinuz
	@mkdir -p $(@D)
	cp $< $@.tmp
	mv $@.tmp $@

# The same kernel unpacked: QEMU boots it through PVH without the slow in-guest decompression.
$(GUEST_OUT)/vmlinux: $(GUEST_OUT)/vmlinuz images/guest/extract-vmlinux.sh
	bash images/guest/extract-vmlinux.sh $< $@

$(GUEST_OUT)/initrd.gz: $(GUEST_INITRD_SRC) $(GUEST_KERNEL)/vmlinuz /bin/busybox
	bash images/guest/build-initrd.sh $(GUEST_KERNEL) $@

$(GUEST_OUT)/disk.raw: $(GUEST_OUT)/vmlinuz $(GUEST_OUT)/initrd.gz images/guest/syslinux.cfg images/guest/build-disk.sh
	bash images/guest/build-disk.sh $(GUEST_OUT)/vmlinuz $(GUEST_OUT)/initrd.gz $@

$(GUEST_OUT)/disk.qcow2: $(GUEST_OUT)/disk.raw
	qemu-img convert -f raw -O qcow2 $< $@.tmp
	mv $@.tmp $@

# KubeVirt's containerDisk layout: the disk is the only file, under /disk/, owned by the
# launcher's uid 107 (as `ADD --chown=107:107 disk.qcow2 /disk/` makes it).
$(IMAGES_OUT)/guest.tar: $(GUEST_OUT)/disk.qcow2 $(IMAGEBUILD)
	@mkdir -p $(@D)
	rm -rf $(GUEST_OUT)/containerdisk
	install -D -m 0444 -o 107 -g 107 $< $(GUEST_OUT)/containerdisk/disk/disk.qcow2
	chown 107:107 $(GUEST_OUT)/containerdisk/disk
	$(IMAGEBUILD) -tag $(GUEST_TAG) -o $@ -rootfs $(GUEST_OUT)/containerdisk
	rm -rf $(GUEST_OUT)/containerdisk

# The images the user guide's manifests name, served by the local cluster's registry under
# those names (cluster-registry-seed): the test guest stands in for
# kubevirt/fedora-cloud-container-disk-demo, and a small ISO for the virtio drivers of
# kubevirt/virtio-container-disk (/disk/virtio-win.iso, as that image has it).
GUIDE_IMAGES_OUT := $(OUT)/guide-images

$(GUIDE_IMAGES_OUT)/virtio-container-disk.tar: images/guest/virtio-readme.txt $(IMAGEBUILD) $(wildcard images/cmd/isobuild/*.go runtime/iso9660/*.go)
	@mkdir -p $(@D)
	rm -rf $(@D)/virtio
	mkdir -p $(@D)/virtio/disk
	go run ./images/cmd/isobuild -o $(@D)/virtio/disk/virtio-win.iso -label VIRTIO-WIN -add images/guest/virtio-readme.txt:README.TXT
	chown -R 107:107 $(@D)/virtio/disk && chmod 0444 $(@D)/virtio/disk/virtio-win.iso
	$(IMAGEBUILD) -tag kubevirt/virtio-container-disk:latest -o $@ -rootfs $(@D)/virtio
	rm -rf $(@D)/virtio

.PHONY: guide-images
guide-images: $(IMAGES_OUT)/guest.tar $(GUIDE_IMAGES_OUT)/virtio-container-disk.tar ## Build the images the user guide's manifests name (pushed to the local cluster's registry)

# --- Container images ---------------------------------------------------------------------

IMAGE_NAMES := launcher controller node toolbox guest
ROOTFS_OUT := $(OUT)/rootfs
ROOTFS_SRC := images/rootfs/build-rootfs.sh images/rootfs/trim-rootfs.sh

# Debian packages of the images built on a Debian rootfs (debootstrap minbase + these).
ROOTFS_PACKAGES_launcher := libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils libvirt-clients ovmf
ROOTFS_PACKAGES_node := qemu-utils util-linux e2fsprogs ca-certificates

.PHONY: images
images: $(addprefix $(IMAGES_OUT)/,$(addsuffix .tar,$(IMAGE_NAMES))) ## Build every image tarball into _output/images and list their sizes
	@printf '%-12s %-28s %10s %12s\n' IMAGE TAG TARBALL UNPACKED
	@for n in $(IMAGE_NAMES); do \
	  printf '%-12s %-28s %9sM %11sM\n' $$n slimvirt.io/$$n:dev \
	    $$(( $$(stat -c %s $(IMAGES_OUT)/$$n.tar) / 1048576 )) \
	    $$(( $$(tar -xOf $(IMAGES_OUT)/$$n.tar --wildcards '*.tar.gz' | gzip -dc | wc -c) / 1048576 )); \
	done

.PHONY: $(addprefix image-,$(IMAGE_NAMES))
$(addprefix image-,$(IMAGE_NAMES)): image-%: $(IMAGES_OUT)/%.tar

# The package list as a file that changes only when the list does, so the rootfs is
# unpacked again only then (the variable itself has no timestamp).
$(ROOTFS_OUT)/%.packages: FORCE
	@mkdir -p $(@D)
	@echo '$(ROOTFS_PACKAGES_$*)' | cmp -s - $@ || echo '$(ROOTFS_PACKAGES_$*)' >$@

.PHONY: FORCE
FORCE:

# Not intermediate files: make would delete them and then rebuild the trees every time.
.SECONDARY: $(ROOTFS_OUT)/launcher.packages $(ROOTFS_OUT)/node.packages

# A prepared Debian tree (cached under $(SLIMVIRT_CACHE)/rootfs, see build-rootfs.sh).
$(ROOTFS_OUT)/%.stamp: $(ROOTFS_OUT)/%.packages $(ROOTFS_SRC)
	bash images/rootfs/build-rootfs.sh $* $(ROOTFS_OUT)/$* $(ROOTFS_PACKAGES_$*)
	touch $@

$(IMAGES_OUT)/launcher.tar: $(ROOTFS_OUT)/launcher.stamp $(BIN)/slimvirt-launcher $(BIN)/slimvirt-diskcopy $(IMAGEBUILD)
	@mkdir -p $(@D)
	$(IMAGEBUILD) -tag slimvirt.io/launcher:dev -o $@ -rootfs $(ROOTFS_OUT)/launcher \
	  -add $(BIN)/slimvirt-launcher:/usr/bin/slimvirt-launcher:0755:cap_net_bind_service \
	  -add $(BIN)/slimvirt-diskcopy:/usr/bin/slimvirt-diskcopy:0755 \
	  -entrypoint /usr/bin/slimvirt-launcher

# The controller image: one static binary and an /etc/passwd naming its user (images/etc:
# root, nonroot 65532, nobody 65534; the toolbox has the same).
$(IMAGES_OUT)/controller.tar: $(BIN)/slimvirt-controller images/etc/passwd images/etc/group $(IMAGEBUILD)
	@mkdir -p $(@D)
	$(IMAGEBUILD) -tag slimvirt.io/controller:dev -o $@ \
	  -add images/etc/passwd:/etc/passwd:0644 -add images/etc/group:/etc/group:0644 \
	  -add $(BIN)/slimvirt-controller:/usr/bin/slimvirt-controller:0755 \
	  -user 65532:65532 -entrypoint /usr/bin/slimvirt-controller

# The toolbox: busybox with a link per applet, for client pods in tests.
$(ROOTFS_OUT)/toolbox.stamp: /bin/busybox images/etc/passwd images/etc/group
	rm -rf $(ROOTFS_OUT)/toolbox
	mkdir -p $(ROOTFS_OUT)/toolbox/bin $(ROOTFS_OUT)/toolbox/etc $(ROOTFS_OUT)/toolbox/tmp $(ROOTFS_OUT)/toolbox/root
	chmod 1777 $(ROOTFS_OUT)/toolbox/tmp
	install -m 0755 /bin/busybox $(ROOTFS_OUT)/toolbox/bin/busybox
	for a in $$(/bin/busybox --list); do [ $$a = busybox ] || ln -s busybox $(ROOTFS_OUT)/toolbox/bin/$$a; done
	install -m 0644 images/etc/passwd images/etc/group $(ROOTFS_OUT)/toolbox/etc/
	touch $@

$(IMAGES_OUT)/toolbox.tar: $(ROOTFS_OUT)/toolbox.stamp $(IMAGEBUILD)
	@mkdir -p $(@D)
	$(IMAGEBUILD) -tag slimvirt.io/toolbox:dev -o $@ -rootfs $(ROOTFS_OUT)/toolbox -entrypoint /bin/sh

# The node agent image: Debian with qemu-img and losetup for the CSI driver, the node agent,
# the CNI plugin it installs on the host, and the CSI driver when csi/csi.mk builds one.
# Secondary expansion: csi/csi.mk adds to BINS after this file is read.
NODE_IMAGE_ADDS = -add $(BIN)/slimvirt-node:/usr/bin/slimvirt-node:0755 \
  -add $(BIN)/slimvirt-cni:/opt/slimvirt/cni/slimvirt-cni:0755 \
  $(if $(filter $(BIN)/slimvirt-csi,$(BINS)),-add $(BIN)/slimvirt-csi:/usr/bin/slimvirt-csi:0755)

.SECONDEXPANSION:
$(IMAGES_OUT)/node.tar: $(ROOTFS_OUT)/node.stamp $(BIN)/slimvirt-node $(BIN)/slimvirt-cni $$(filter $(BIN)/slimvirt-csi,$$(BINS)) $(IMAGEBUILD)
	@mkdir -p $(@D)
	$(IMAGEBUILD) -tag slimvirt.io/node:dev -o $@ -rootfs $(ROOTFS_OUT)/node $(NODE_IMAGE_ADDS) \
	  -entrypoint /usr/bin/slimvirt-node

TEST_TARGETS += test-images

.PHONY: test-images
test-images: images ## Check the image tarballs' contents and boot the guest with the launcher image's own QEMU and firmware
	SLIMVIRT_IMAGES_DIR=$(IMAGES_OUT) SLIMVIRT_ROOTFS_DIR=$(ROOTFS_OUT) SLIMVIRT_GUEST_DIR=$(GUEST_OUT) SLIMVIRT_BIN_DIR=$(BIN) \
	  go test -count=1 -v -timeout 15m ./images/rootfs/

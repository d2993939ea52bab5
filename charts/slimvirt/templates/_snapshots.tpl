{{- /* The csi-snapshotter sidecar, beside slimvirt-csi in the node DaemonSet as
external-provisioner is: one per node (--node-deployment), so each takes the snapshots of the
volumes of its own node, the only node that has their data. snapshot-controller labels each
VolumeSnapshotContent with its volume's node (--enable-distributed-snapshotting) for it. */}}
{{- define "slimvirt.csiSnapshotter" -}}
- name: csi-snapshotter
  image: {{ .Values.images.csiSidecars }}
  imagePullPolicy: {{ .Values.images.pullPolicy }}
  command: [/usr/bin/csi-snapshotter]
  args:
    - --csi-address=/csi/csi.sock
    - --node-deployment
    - --timeout=60s
  env:
    - name: NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
  volumeMounts:
    - {name: plugin-dir, mountPath: /csi}
{{- end -}}

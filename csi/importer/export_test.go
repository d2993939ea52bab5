package importer

// QemuInfo lets the tests run qemu-img info as the importer does.
var QemuInfo = qemuInfo

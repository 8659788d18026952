"""CRX: the pod VM's software - the signed bundle (kernel, initramfs with the CRX init and guest agent),
its build and verification, the guest protocol and its host-side client, and QEMU microvm launch.

Modules: `bundle` (manifest, Ed25519 signature, verification), `build` (`podvisor crx build`), `kernel`
(Debian's cloud kernel from its .deb, module dependencies), `initramfs` (cpio writer), `protocol` (the
framed guest protocol), `client` (async `AgentClient`), `qemu` (command line, launch, QMP), `accel`
(KVM probe, TCG facts). The guest side is C in ``guest/``. hostd depends on this package; this package
depends on nothing of hostd.
"""

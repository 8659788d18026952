from tests.crx.harness import busybox_image, crx_copy, crx_dir, hostd  # noqa: F401

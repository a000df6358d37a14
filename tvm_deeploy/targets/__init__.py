"""Targets: platforms, the `deeploy` TVM target, HAL resources, and the RV32 / qemu runners."""

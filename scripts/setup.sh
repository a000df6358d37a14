#!/usr/bin/env bash
# Installs the system packages tvm-deeploy needs, only when missing: a C/C++ compiler for TVM's
# export_library and the generated C, and the RV32 cross toolchain, its C library and qemu for
# `make rv32` / `tvm-deeploy run OUT --on qemu`. Idempotent and quick when everything is present;
# run as root or with sudo available.
set -euo pipefail

packages=(gcc g++ make gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc)
missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# Installs the system packages tvm-deeploy needs, only when missing: a C/C++ compiler for TVM's
# export_library and the generated C, and the RV32 cross toolchain, its C library and qemu for
# `make rv32` / `tvm-deeploy run OUT --on qemu`, and Debian's clang for `make rv32 CC=clang` (clang
# compiles, the cross gcc links with GNU ld: no lld needed) and `tvm-deeploy ablate`'s compiler axis.
# Idempotent and quick when everything is present; run as root or with sudo available.
set -euo pipefail

packages=(gcc g++ make gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc clang)
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

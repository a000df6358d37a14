#!/usr/bin/env bash
# Installs the system packages tvm-deeploy needs (a C/C++ compiler for TVM's export_library and the
# generated C), only when missing. Idempotent; run as root or with sudo available.
set -euo pipefail

packages=(gcc g++ make)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# Installs what the optional RocksDB comparison (`--features rocksdb`) needs to build:
# librocksdb-sys runs bindgen, which loads libclang at build time. CI never builds that feature.
set -euo pipefail
if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* 2>/dev/null | grep -q 'libclang-[0-9.]*\.so\|libclang\.so'; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev clang >/dev/null
fi
echo "bench build deps present: $(ls /usr/lib/llvm-*/lib/libclang.so* 2>/dev/null | head -1)"

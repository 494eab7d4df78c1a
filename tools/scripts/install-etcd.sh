#!/usr/bin/env bash
# Installs etcd (Debian's etcd-server, 3.4 on bookworm) for the comparison benchmark
# (tools/scripts/etcd-compare.sh). Tests and CI never need it.
set -euo pipefail
if ! command -v etcd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
  # The package starts a default member on 2379/2380; the comparison runs its own.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop etcd >/dev/null 2>&1 || true; fi
  pkill -x etcd >/dev/null 2>&1 || true
fi
echo "etcd present: $(etcd --version | head -1)"

#!/usr/bin/env bash
# Installs etcd (Debian's etcd-server, 3.4 on bookworm) for the comparison benchmark
# (tools/scripts/etcd-compare.sh). Tests and CI never need it.
set -euo pipefail
if ! command -v etcd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # The package would start a default member on 2379/2380; the comparison runs its own. Debian's
  # policy-rc.d protocol (exit 101: "action forbidden") keeps the package's scripts from starting
  # it, so no process needs killing afterwards (killing by name would hit any etcd of the user's).
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
  # Under systemd the unit is enabled by the package: stop and disable that unit only.
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi
echo "etcd present: $(etcd --version | head -1)"

#!/usr/bin/env bash
# Install what madopd.sandbox needs (idempotent): bubblewrap (`bwrap`) and prlimit (util-linux).
# Debian/Ubuntu via apt; elsewhere install the `bubblewrap` package with the system's manager.
set -euo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v prlimit >/dev/null 2>&1 || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_sandbox: please install ${need[*]} (no apt-get here)" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
echo "setup_sandbox: $(bwrap --version), prlimit $(prlimit --version | awk '{print $NF}')"
# What this host can isolate (user namespaces, cgroups, seccomp) - printed, never assumed.
"${PYTHON:-python}" -c 'from madopd.sandbox import sandbox_info as s; i = s(); print("setup_sandbox:", {k: i[k] for k in ("userns", "cgroup", "seccomp", "missing")})' 2>/dev/null \
  || echo "setup_sandbox: isolation report skipped (madopd is not installed yet)"

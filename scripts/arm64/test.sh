#!/usr/bin/env bash
# npm run test:arm64 — the zoo's int8 Raspberry Pi bundles on onnxruntime's real arm64 kernels,
# under qemu as a Cortex-A72 (Pi 4) and a Cortex-A76 with dot-product (Pi 5). Correctness only:
# emulated time says nothing about a Pi's speed.
#   scripts/arm64/test.sh           full lane (every zoo model × rpi4/rpi5 × both CPUs, 500 test
#                                   images; Arm per-exit accuracy on the 3,000 calibration images)
#   scripts/arm64/test.sh --quick   the CI subset: fmnist-branchy only, each bundle on its own CPU
# Compiles on x86 (`edgeexit compile --key`), runs the same bundle under x86 and arm64 Node and
# compares image by image (compare.mjs); then `edgeexit run` and `edgeexit agent` under arm64 Node
# publish to a Mosquitto on 127.0.0.1, a JPEG goes through sharp's arm64 build, and a qemu
# instruction log shows which int8 kernels each CPU ran. Results: .arm64/work/summary.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

bash scripts/arm64/setup.sh
work="$root/.arm64/work"
rm -rf "$work"; mkdir -p "$work/probe" "$work/bundles"
app="$root/.arm64/app"
emu() { (cd "$app" && "$root/scripts/arm64/run.sh" "$@"); }

models=(fmnist-branchy fmnist-branchy-wide fmnist-cbnet)
((quick)) && models=(fmnist-branchy)
test_set=test:500
if [[ ! -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz && ! -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte ]]; then
  echo "test:arm64: Debian's dataset-fashion-mnist is not installed: using 500 calibration images for the x86/Arm comparison. Fix: apt-get install dataset-fashion-mnist" >&2
  test_set=calibration:500
fi

echo "== compile on x86 (int8, signed)"
node bin/edgeexit.js keygen --out "$work/keys/lane" >/dev/null
for m in "${models[@]}"; do
  src="models/$m/$m.onnx"; [[ -f "$src" ]] || src="models/$m"
  for d in rpi4 rpi5; do
    node bin/edgeexit.js compile "$src" --device "$d" --precision int8 --out "$work/bundles/$m-$d" \
      --key "$work/keys/lane.key" >"$work/bundles/$m-$d.compile.log" 2>&1 ||
      { cat "$work/bundles/$m-$d.compile.log" >&2; exit 1; }
  done
done

echo "== probes: x86 and arm64 Node over the same images"
pub="$work/keys/lane.pub"
for m in "${models[@]}"; do
  for d in rpi4 rpi5; do
    b="$work/bundles/$m-$d"
    node scripts/arm64/probe.mjs "$b" "$pub" "$test_set" "$work/probe/$m-$d.x64.test.json"
    for cpu in rpi4 rpi5; do
      ((quick)) && [[ "$cpu" != "$d" ]] && continue
      emu "$cpu" scripts/arm64/probe.mjs "$b" "$pub" "$test_set" "$work/probe/$m-$d.$cpu.test.json"
    done
    ((quick)) || emu "$d" scripts/arm64/probe.mjs "$b" "$pub" calibration "$work/probe/$m-$d.$d.calibration.json"
  done
done

echo "== where x86 and Arm int8 values first part (every QuantizeLinear output, 32 test images)"
mkdir -p "$work/diverge"
diverge_set=test:32; [[ "$test_set" == calibration* ]] && diverge_set=calibration:32
for m in "${models[@]}"; do
  for d in rpi4 rpi5; do
    b="$work/bundles/$m-$d" out="$work/diverge/$m-$d"
    node scripts/arm64/diverge.mjs dump "$b" "$diverge_set" "$out.x64.json"
    emu "$d" scripts/arm64/diverge.mjs dump "$b" "$diverge_set" "$out.$d.json"
    node scripts/arm64/diverge.mjs compare "$out.x64.json" "$out.$d.json" >"$out.txt" || true
    rm -f "$out.x64.json" "$out.$d.json"
  done
done

echo "== device commands under arm64 Node"
bash scripts/arm64/device-smoke.sh "$work"

echo "== which int8 kernels each CPU ran"
bash scripts/arm64/kernels.sh "$work"

node scripts/arm64/compare.mjs "$work" "$test_set"

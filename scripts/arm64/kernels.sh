#!/usr/bin/env bash
# Which int8 kernels the emulated Pi 4 and Pi 5 ran. qemu's `-d in_asm` logs every guest
# instruction it translates; SDOT/UDOT (Armv8.2 dot-product) are counted by their encodings,
# because qemu's disassembler prints them as `.byte`. onnxruntime (MLAS) picks its dot-product
# int8 kernels when cpuinfo reports asimddp, so: Pi 5 (Cortex-A76, HWCAP asimddp) → SDOT
# present; Pi 4 (Cortex-A72, which has no SDOT at all) → none, its int8 kernels widen with
# SMULL/SADALP instead. A control run under the A76 imports onnxruntime but runs no
# model at all, to show the SDOT come from inference, not from Node or the library load.
# Writes $work/kernels.json.   scripts/arm64/kernels.sh <work dir from test.sh>
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
work="$1"
app="$root/.arm64/app"
bundle="$work/bundles/fmnist-branchy-rpi5"
pub="$work/keys/lane.pub"
logs="$work/asm"
rm -rf "$logs"; mkdir -p "$logs"
for cpu in rpi4 rpi5; do
  (cd "$app" && EDGEEXIT_QEMU_ARGS="-d in_asm -D $logs/$cpu.asm" "$root/scripts/arm64/run.sh" "$cpu" \
    scripts/arm64/probe.mjs "$bundle" "$pub" calibration:20 "$logs/$cpu.json" 2>/dev/null)
  node scripts/arm64/count-dot.mjs "$logs/$cpu.asm" "$cpu" >"$logs/$cpu.count.json"
  rm -f "$logs/$cpu.asm"
done
# Control: arm64 Node with onnxruntime imported but no session run.
(cd "$app" && EDGEEXIT_QEMU_ARGS="-d in_asm -D $logs/control.asm" "$root/scripts/arm64/run.sh" rpi5 \
  --input-type=module -e "await import('onnxruntime-node')")
node scripts/arm64/count-dot.mjs "$logs/control.asm" "rpi5 (onnxruntime imported, no inference)" >"$logs/control.count.json"
rm -f "$logs/control.asm"
node -e '
const fs = require("fs"); const d = process.argv[1];
const rows = ["rpi4", "rpi5", "control"].map((k) => JSON.parse(fs.readFileSync(`${d}/${k}.count.json`, "utf8")));
fs.writeFileSync(`${d}/../kernels.json`, JSON.stringify(rows, null, 2));
for (const r of rows) console.log(`  ${r.run}: ${r.sdot} SDOT + ${r.udot} UDOT, ${r.smull} SMULL, ${r.sadalp} SADALP translated`);
' "$logs"

#!/usr/bin/env bash
# `edgeexit run` and `edgeexit agent` under arm64 Node (emulated Pi 5 and Pi 4), publishing to a
# Mosquitto on 127.0.0.1 (qemu-user shares the host's network) with an x86 collector acknowledging
# what it stores, and sharp's arm64 build decoding
# a JPEG and an upscaled PNG (which skip the built-in PNG fast path). Writes $work/device.json.
#   scripts/arm64/device-smoke.sh <work dir from test.sh>
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
work="$1"
app="$root/.arm64/app"
emu() { (cd "$app" && "$root/scripts/arm64/run.sh" "$@"); }
bundle="$work/bundles/fmnist-branchy-rpi5"
pub="$work/keys/lane.pub"
smoke="$work/smoke"
rm -rf "$smoke"; mkdir -p "$smoke/watch" "$smoke/state"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null || {
  echo "device-smoke: mosquitto and mosquitto_sub not found. Fix: apt-get install mosquitto mosquitto-clients" >&2; exit 1; }
port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$smoke/mosquitto.conf"
mosquitto -c "$smoke/mosquitto.conf" >"$smoke/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do mosquitto_sub -p "$port" -t x -C 1 -W 1 >/dev/null 2>&1 && break; [[ $? -eq 27 ]] && break; sleep 0.2; done
url="mqtt://127.0.0.1:$port"
# A collector on the host stores the windows and acknowledges them: a device's window leaves its
# outbox only on the collector's ack, and `run` exits 75 when its windows were not acknowledged.
node bin/edgeexit.js collect --broker "$url" --db "$smoke/fleet.db" --http off >"$smoke/collector.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^collecting ' "$smoke/collector.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^collecting ' "$smoke/collector.log" || { cat "$smoke/collector.log" >&2; echo "device-smoke: the collector did not start" >&2; exit 1; }

# Inputs for sharp: a JPEG at 4× and a PNG at 2× of two calibration images (made by the host's sharp).
node --input-type=module -e '
import sharp from "sharp";
const [out] = process.argv.slice(1);
await sharp("calibration/fashion-mnist/ankle_boot/" + (await import("node:fs")).readdirSync("calibration/fashion-mnist/ankle_boot")[0]).resize(112, 112).jpeg({ quality: 90 }).toFile(out + "/boot.jpg");
await sharp("calibration/fashion-mnist/trouser/" + (await import("node:fs")).readdirSync("calibration/fashion-mnist/trouser")[0]).resize(56, 56).png().toFile(out + "/trouser-56.png");
' "$smoke"
cp "$smoke/boot.jpg" "$smoke/trouser-56.png" "$smoke/watch/"

echo "-- edgeexit run under arm64 Node (Pi 5), telemetry to $url"
mosquitto_sub -p "$port" -t 'edgeexit/v1/lane/pi5-run/metrics' -C 1 -W 240 >"$smoke/run.metrics" &
sub=$!; pids+=($sub)
emu rpi5 bin/edgeexit.js run "$bundle" "$smoke/boot.jpg" "$smoke/trouser-56.png" --threshold 0.9,0.9 --json --key "$pub" \
  --telemetry "$url" --fleet lane --device-id pi5-run --window 1s --state-dir "$smoke/state/run" >"$smoke/run.arm64.jsonl"
wait "$sub" || { echo "device-smoke: no metrics window from 'edgeexit run' reached $url" >&2; exit 1; }
node bin/edgeexit.js run "$bundle" "$smoke/boot.jpg" "$smoke/trouser-56.png" --threshold 0.9,0.9 --json --key "$pub" >"$smoke/run.x64.jsonl"

echo "-- edgeexit agent under arm64 Node (Pi 4), watching a folder"
mosquitto_sub -p "$port" -t 'edgeexit/v1/lane/pi4-agent/metrics' -C 1 -W 240 >"$smoke/agent.metrics" &
sub=$!; pids+=($sub)
(cd "$app" && exec "$root/scripts/arm64/run.sh" rpi4 bin/edgeexit.js agent "$work/bundles/fmnist-branchy-rpi4" --watch "$smoke/watch" --loop \
  --telemetry "$url" --fleet lane --device-id pi4-agent --window 1s --state-dir "$smoke/state/agent" --key "$pub" >"$smoke/agent.log" 2>&1) &
agent=$!; pids+=($agent)
wait "$sub" || { cat "$smoke/agent.log" >&2; echo "device-smoke: no metrics window from 'edgeexit agent' reached $url" >&2; exit 1; }
kill -TERM "$agent"
agent_rc=0; wait "$agent" || agent_rc=$?

node --input-type=module -e '
import { readFileSync, writeFileSync } from "node:fs";
const [dir, rc, url] = process.argv.slice(1);
const rows = (f) => readFileSync(`${dir}/${f}`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
const arm = rows("run.arm64.jsonl"), x64 = rows("run.x64.jsonl");
const images = arm.map((a, i) => ({ file: a.file.split("/").pop(), arm64: { label: a.label, exit: a.exit, confidence: a.confidence }, x64: { label: x64[i].label, exit: x64[i].exit, confidence: x64[i].confidence } }));
const out = { broker: url, runWindowBytes: readFileSync(`${dir}/run.metrics`).length, agentWindowBytes: readFileSync(`${dir}/agent.metrics`).length, agentExit: Number(rc), sharpImages: images };
writeFileSync(`${dir}/../device.json`, JSON.stringify(out, null, 2));
for (const i of images) console.log(`  ${i.file}: arm64 ${i.arm64.label} exit ${i.arm64.exit} p=${i.arm64.confidence.toFixed(6)} | x86 ${i.x64.label} exit ${i.x64.exit} p=${i.x64.confidence.toFixed(6)}`);
console.log(`  run: one window (${out.runWindowBytes} B) reached ${url}; agent: one window (${out.agentWindowBytes} B), exit ${rc} after SIGTERM`);
' "$smoke" "$agent_rc" "$url"

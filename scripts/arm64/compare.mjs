// Compares the arm64 probes with the x86 probe of the same bundle (labels per exit, cascade label
// and exit decision, confidences bit for bit) and the Arm per-exit accuracy on the calibration
// images with the compile report's int8 figures; folds in the device smoke and the kernel counts.
// Writes <work>/summary.md and summary.json; exit code 1 when a check fails.
//   node compare.mjs <work dir> <test source>
import { readFileSync, readdirSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import path from 'node:path';

const [work, testSource] = process.argv.slice(2);
const ACCURACY_PP = 0.3;
const read = (f) => JSON.parse(readFileSync(f, 'utf8'));
const pct = (a, n) => (n ? (100 * a) / n : 0);
const agree = (a, b) => a.reduce((s, x, i) => s + (x === b[i] ? 1 : 0), 0);
const problems = [];

function pairRows() {
  const rows = [];
  const dir = path.join(work, 'probe');
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.x64.test.json')).sort()) {
    const x = read(path.join(dir, f));
    const bundle = f.replace('.x64.test.json', '');
    for (const cpu of ['rpi4', 'rpi5']) {
      const file = path.join(dir, `${bundle}.${cpu}.test.json`);
      if (!existsSync(file)) continue;
      const a = read(file);
      const exits = Object.keys(x.perExit);
      const perExit = exits.map((e) => pct(agree(x.perExit[e], a.perExit[e]), x.samples));
      const firstDiff = x.cascade.confidence.findIndex((c, i) => c !== a.cascade.confidence[i]);
      const row = {
        bundle, cpu: cpu === 'rpi4' ? 'Cortex-A72 (rpi4)' : 'Cortex-A76+dot (rpi5)', images: x.samples,
        labelAgreement: pct(agree(x.cascade.label, a.cascade.label), x.samples),
        exitAgreement: pct(agree(x.cascade.exit, a.cascade.exit), x.samples),
        perExitAgreement: Object.fromEntries(exits.map((e, i) => [e, perExit[i]])),
        confidencesIdentical: x.cascade.confidenceSha256 === a.cascade.confidenceSha256,
        firstDifferentImage: firstDiff,
        armMs: a.ms,
      };
      if (row.labelAgreement < 100 || row.exitAgreement < 100 || perExit.some((p) => p < 100)) {
        problems.push(`${bundle} on ${row.cpu}: x86/Arm disagree (labels ${row.labelAgreement.toFixed(1)}%, exits ${row.exitAgreement.toFixed(1)}%); see .arm64/work/diverge/${bundle}.txt for the first differing tensor`);
      }
      rows.push(row);
    }
  }
  return rows;
}

function accuracyRows() {
  const rows = [];
  const dir = path.join(work, 'probe');
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.calibration.json')).sort()) {
    const a = read(path.join(dir, f));
    const bundle = f.split('.')[0];
    const report = read(path.join(work, 'bundles', bundle, 'report.json'));
    for (const v of report.quantization.verify) {
      const got = a.perExit[v.exit];
      if (!got) { problems.push(`${bundle}: the report's exit ${v.exit} is not in the probe (exits ${Object.keys(a.perExit).join(', ')})`); continue; }
      const arm = pct(agree(got, a.truth), a.samples);
      const delta = arm - 100 * v.compiledTop1;
      rows.push({ bundle, cpu: a.cpu ?? f.split('.')[1], exit: v.exit, images: a.samples, reportSamples: v.samples, reportTop1: 100 * v.compiledTop1, armTop1: arm, deltaPp: delta });
      if (Math.abs(delta) > ACCURACY_PP) problems.push(`${bundle} ${v.exit}: Arm top-1 ${arm.toFixed(2)}% vs compile report ${(100 * v.compiledTop1).toFixed(2)}% (${delta.toFixed(2)} pp, limit ${ACCURACY_PP})`);
    }
  }
  return rows;
}

const pairs = pairRows();
const accuracy = accuracyRows();
const device = existsSync(path.join(work, 'device.json')) ? read(path.join(work, 'device.json')) : null;
const divergeDir = path.join(work, 'diverge');
const diverge = existsSync(divergeDir)
  ? Object.fromEntries(readdirSync(divergeDir).filter((f) => f.endsWith('.txt')).sort().map((f) => [f.replace('.txt', ''), readFileSync(path.join(divergeDir, f), 'utf8').trim()]))
  : {};
const kernels = existsSync(path.join(work, 'kernels.json')) ? read(path.join(work, 'kernels.json')) : null;
if (!pairs.length) problems.push(`no probe pairs in ${work}/probe: run scripts/arm64/test.sh`);
if (device) for (const s of device.sharpImages) if (s.arm64.label !== s.x64.label || s.arm64.exit !== s.x64.exit) problems.push(`sharp path: ${s.file} arm64 ${s.arm64.label}/exit ${s.arm64.exit} vs x86 ${s.x64.label}/exit ${s.x64.exit}`);
if (device && device.agentExit !== 0) problems.push(`edgeexit agent under arm64 exited ${device.agentExit} after SIGTERM (expected 0)`);
if (kernels) {
  const [pi4, pi5] = kernels;
  if (pi4.sdot + pi4.udot !== 0) problems.push(`Pi 4 (Cortex-A72) run translated ${pi4.sdot + pi4.udot} dot-product instructions; an A72 has none`);
  if (pi5.sdot === 0) problems.push('Pi 5 (Cortex-A76) run translated no SDOT: onnxruntime did not pick its dot-product int8 kernels (check the fake /proc/cpuinfo Features and HWCAP asimddp)');
}

const md = [];
md.push(`# arm64 lane: x86 vs emulated Arm (${new Date().toISOString()})`, '');
md.push(`Images: ${testSource}. Labels/exits: cascade at max-prob 0.9 (cbnet: hybrid 0.9), batch 1; per-exit: every image forced to each exit.`, '');
md.push('| bundle | CPU | images | label agree | exit agree | per-exit label agree (min) | confidences bit-identical |', '|---|---|---|---|---|---|---|');
for (const r of pairs) md.push(`| ${r.bundle} | ${r.cpu} | ${r.images} | ${r.labelAgreement.toFixed(1)}% | ${r.exitAgreement.toFixed(1)}% | ${Math.min(...Object.values(r.perExitAgreement)).toFixed(1)}% | ${r.confidencesIdentical ? 'yes' : `no (first: image ${r.firstDifferentImage})`} |`);
if (accuracy.length) {
  md.push('', `Per-exit int8 top-1 on the calibration images, Arm (the bundle's own CPU) vs the compile report (limit ±${ACCURACY_PP} pp):`, '');
  md.push('| bundle | exit | images | report | Arm | Δ pp |', '|---|---|---|---|---|---|');
  for (const r of accuracy) md.push(`| ${r.bundle} | ${r.exit} | ${r.images} | ${r.reportTop1.toFixed(2)}% | ${r.armTop1.toFixed(2)}% | ${r.deltaPp.toFixed(2)} |`);
}
if (Object.keys(diverge).length) {
  md.push('', 'First int8 tensor where x86 and Arm (the bundle\'s own CPU) part, over every QuantizeLinear output (diverge.mjs):', '');
  for (const [b, line] of Object.entries(diverge)) md.push(`- ${b}: ${line}`);
}
if (kernels) {
  md.push('', 'Translated instructions (qemu -d in_asm, 20 calibration images through fmnist-branchy-rpi5):', '');
  for (const k of kernels) md.push(`- ${k.run}: ${k.sdot} SDOT, ${k.udot} UDOT, ${k.smull} SMULL, ${k.sadalp} SADALP`);
}
if (device) {
  md.push('', `Device commands under arm64 Node, broker ${device.broker}: run window ${device.runWindowBytes} B, agent window ${device.agentWindowBytes} B, agent exit ${device.agentExit} on SIGTERM.`);
  for (const s of device.sharpImages) md.push(`- sharp ${s.file}: arm64 ${s.arm64.label} (exit ${s.arm64.exit}, p ${s.arm64.confidence}) / x86 ${s.x64.label} (exit ${s.x64.exit}, p ${s.x64.confidence})`);
}
md.push('', problems.length ? `FAILED:\n${problems.map((p) => `- ${p}`).join('\n')}` : 'PASSED');
const text = md.join('\n') + '\n';
for (const [name, body] of [['summary.md', text], ['summary.json', JSON.stringify({ pairs, accuracy, diverge, kernels, device, problems }, null, 2)]]) {
  writeFileSync(path.join(work, `${name}.tmp`), body);
  renameSync(path.join(work, `${name}.tmp`), path.join(work, name));
}
console.log(text);
process.exit(problems.length ? 1 : 0);

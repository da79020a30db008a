// `edgeexit compile <model.onnx> --device <profile> --out <bundle>`: float ONNX → a bundle of
// per-exit stages (fp32, or int8 for the device's quantisation scheme) with manifest, report and
// optional signature; or a CBNet folder → one bundle of kind cbnet. The work is in src/compiler;
// this file parses flags and prints the per-stage table (with this machine's float vs compiled
// latency unless --no-latency) and the per-exit (or, for CBNet, per-path) verification table.
import { CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD, DEFAULT_MAX_ACCURACY_DROP, compileModel, PRECISIONS, type CalibrationMethod, type CompileReport, type CompileResult, type Precision } from '../../compiler/index.js';
import { InputError, formatProblem, show } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { bytes, count, pct, table } from '../format.js';

export interface CompileCommandOptions {
  model: string;
  device: string;
  out: string;
  precision?: Precision;
  exits?: string;
  preprocess?: string;
  labels?: string;
  key?: string;
  calibration?: string;
  calibrationLimit?: number;
  calibrationMethod?: CalibrationMethod;
  maxAccuracyDrop?: number;
  mixedPrecision?: boolean;
  tolerance?: number;
  /** 'auto' (default), 'none', or stage indices "0,1". */
  recompute?: string;
  /** CBNet folders: the multi-exit model whose deeper stages the hybrid falls through to. */
  backbone?: string;
  /** Time each stage float vs compiled on this machine (default true; --no-latency skips it). */
  latency?: boolean;
  json?: boolean;
}

/** `a,b, c` → ['a','b','c']. Exit names may contain anything but a comma. */
export function parseExitList(s: string | undefined): string[] | undefined {
  if (s === undefined) return undefined;
  const names = s.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
  return names.length > 0 ? names : undefined;
}

/** `--recompute auto|none|0,1` → the compiler's option; InputError naming the bad part. */
export function parseRecompute(s: string | undefined): 'auto' | 'none' | number[] | undefined {
  if (s === undefined) return undefined;
  const v = s.trim();
  if (v === 'auto' || v === 'none') return v;
  const parts = v.split(',').map((x) => x.trim());
  const bad = parts.filter((x) => !/^\d+$/.test(x));
  if (bad.length > 0 || parts.length === 0) {
    throw new InputError(formatProblem({ where: '--recompute', expected: "'auto', 'none' or stage indices like 0 or 0,1", got: show(s) }));
  }
  return parts.map(Number);
}

export async function compileCommand(opts: CompileCommandOptions, io: CliIO): Promise<CompileResult> {
  const exits = parseExitList(opts.exits);
  const recompute = parseRecompute(opts.recompute);
  const result = await compileModel({
    model: opts.model,
    device: opts.device,
    out: opts.out,
    // Without --precision the device profile decides (int8 on a Pi, fp32 on the x86 host, …).
    precision: opts.precision ?? 'device',
    ...(exits ? { exits } : {}),
    ...(opts.preprocess !== undefined ? { preprocess: opts.preprocess } : {}),
    ...(opts.labels !== undefined ? { labels: opts.labels } : {}),
    ...(opts.key ? { key: opts.key } : {}),
    ...(opts.calibration ? { calibration: opts.calibration } : {}),
    ...(opts.calibrationLimit ? { calibrationLimit: opts.calibrationLimit } : {}),
    ...(opts.tolerance !== undefined ? { tolerance: opts.tolerance } : {}),
    ...(opts.calibrationMethod ? { calibrationMethod: opts.calibrationMethod } : {}),
    ...(opts.maxAccuracyDrop !== undefined ? { maxAccuracyDrop: opts.maxAccuracyDrop } : {}),
    ...(opts.mixedPrecision === false ? { mixedPrecision: false } : {}),
    ...(opts.latency === false ? { latency: false } : {}),
    ...(recompute !== undefined ? { recompute } : {}),
    ...(opts.backbone !== undefined ? { backbone: opts.backbone } : {}),
    ...(opts.json ? {} : { onProgress: (line: string) => io.err(line) }),
  });
  if (opts.json) io.out(JSON.stringify({ out: result.out, signed: result.signed, replaced: result.replaced, manifest: result.manifest, report: result.report }, null, 2));
  else io.out(renderCompile(result));
  return result;
}

const ms = (x: number | undefined): string => (x === undefined ? '-' : x >= 10 ? x.toFixed(1) : x.toFixed(3));

const diff = (x: number | undefined): string => (x === undefined ? '-' : x === 0 ? '0' : x.toExponential(1));

export function renderPrepare(p: CompileReport['prepare']): string {
  const parts = [`${p.nodesBefore} → ${p.nodesAfter} nodes`];
  const changed = p.nodesBefore !== p.nodesAfter || p.batchNormFolded.length > 0 || p.constantNodes > 0 || p.reshapesFolded.length > 0 || p.foldedTensors.length > 0;
  if (!changed && p.batchNormKept.length === 0) parts.push('nothing to fold or remove');
  if (p.batchNormFolded.length) parts.push(`folded ${p.batchNormFolded.length} BatchNormalization into Conv`);
  if (p.batchNormKept.length) parts.push(`kept ${p.batchNormKept.length} BatchNormalization`);
  const removed = Object.entries(p.removed).map(([op, n]) => `${n} ${op}`);
  if (removed.length) parts.push(`removed ${removed.join(', ')}`);
  if (p.constantNodes) parts.push(`${p.constantNodes} Constant → initializer`);
  if (p.reshapesFolded.length || p.foldedTensors.length) parts.push(`folded ${p.reshapesFolded.length + p.foldedTensors.length} shape computation(s)`);
  if (p.deadNodes) parts.push(`dropped ${p.deadNodes} dead node(s)`);
  return parts.join('; ');
}

function verifyRows(paths: NonNullable<CompileReport['quantization']>['verify']): (string | number)[][] {
  return paths.map((e) => [e.exit, pct(e.floatTop1, 2), pct(e.compiledTop1, 2), e.dropPp.toFixed(2), pct(e.agreement, 1), e.maxLogitError.toFixed(3)]);
}

/**
 * The one check line: what was compared, against what tolerance. At fp16 two checks ran (the fp32
 * split against the source, then the fp16 stages against the source), each with its own
 * tolerance; the line names both, with the fp16 stages' largest difference per exit.
 */
export function checkLine(rep: CompileReport): string {
  const c = rep.check;
  const cal = (rep.fp16?.check ?? c).calibration;
  const on = `on ${c.random.samples} ${c.random.source}${cal ? ` and ${cal.samples} images of ${cal.source}${cal.skipped?.length ? ` (${cal.skipped.length} unreadable, skipped)` : ''}` : ''}`;
  const f = rep.fp16?.check;
  if (!f) return `${c.passed ? 'passed' : 'FAILED'}: max |stage − source| within tolerance ${c.tolerance.toExponential()} ${on}`;
  const worst = f.random.exits.map((e, k) => Math.max(e.maxAbsDiff, f.calibration?.exits[k]?.maxAbsDiff ?? 0).toExponential(2)).join(' / ');
  return (
    `${c.passed && f.passed ? 'passed' : 'FAILED'}: fp32 split within tolerance ${c.tolerance.toExponential()} of the source; ` +
    `fp16 stages within tolerance ${f.tolerance.toExponential()} (max |fp16 − source| ${worst} per exit) ${on}`
  );
}

export function renderCompile(r: CompileResult): string {
  const rep = r.report;
  const m = r.manifest;
  const pre = m.input.preprocess;
  const lines: string[] = [];
  lines.push(`compiled  ${rep.model.file} (${rep.model.name} ${rep.model.version}) for ${rep.device.id} (${rep.device.name}), ${rep.precision}`);
  lines.push(
    `input     ${m.input.name} [${m.input.shape.join(',')}] ${pre.colorspace} ${pre.size[0]}x${pre.size[1]} (${rep.inputFrom.preprocess}); ${m.labels.length} labels (${rep.inputFrom.labels})`,
  );
  lines.push(`prepare   ${renderPrepare(rep.prepare)}`);
  lines.push('');
  // The diff columns show the check of the stages as written: the fp16 check at fp16 (the fp32
  // split's is 0 there by construction), the fp32 split's at fp32 and int8 (int8 has its own table).
  const shown = rep.fp16?.check ?? rep.check;
  const cal = shown.calibration;
  const quant = rep.precision === 'int8';
  const header = ['stage', 'file', 'inputs → outputs', 'MACs', 'cumulative', ...(quant ? ['fp32 bytes'] : []), 'bytes', `${quant ? 'fp32 split' : rep.precision} max|diff| random`];
  if (cal) header.push('max|diff| calib', 'top-1 agree calib');
  const lat = rep.latency;
  if (lat) header.push('fp32 ms', `${rep.precision} ms`, 'speed-up');
  lines.push(
    table(
      header,
      rep.stages.map((s, k) => {
        const row: (string | number)[] = [
          k,
          s.file,
          `${s.inputs.join(', ')} → ${s.outputs.join(', ')}`,
          count(s.macs),
          count(s.cumulativeMacs),
          ...(quant ? [bytes(s.floatBytes)] : []),
          bytes(s.bytes),
          diff(shown.random.exits[k]?.maxAbsDiff),
        ];
        if (cal) row.push(diff(cal.exits[k]?.maxAbsDiff), pct(cal.exits[k]?.top1Agreement ?? 0, 1));
        const l = lat?.stages[k];
        if (lat) row.push(ms(l?.floatMs), ms(l?.compiledMs), l ? `${l.speedup.toFixed(2)}x` : '-');
        return row;
      }),
    ),
  );
  lines.push('');
  const total = rep.stages.reduce((a, s) => a + s.macs, 0);
  // Recomputed stages (see --recompute) add their trunk's MACs again to the next stage.
  const extra = total - rep.sourceMacs;
  const recomputed = rep.recompute?.length ? ` + ${count(extra)} recomputed (stage ${rep.recompute.join(', ')})` : extra === 0 ? '' : ' (MISMATCH)';
  lines.push(`MACs      stages ${count(total)} = source ${count(rep.sourceMacs)}${recomputed}`);
  lines.push(`check     ${checkLine(rep)}`);
  if (lat) lines.push(`latency   median of ${lat.runs} interleaved runs per stage after ${lat.warmup} warm-up, batch ${lat.batch}, ${lat.threads} thread: ${lat.machine}`);
  const cb = rep.cbnet;
  if (cb) {
    const p = cb.pipeline;
    lines.push(`pipeline  cbnet: ${m.stages[p.converter.stage]?.file} → ${m.stages[p.classifier.stage]?.file}; hybrid: ${p.policies.hybrid.join(', then ')} (default policy ${p.default})`);
  }
  const q = rep.quantization;
  if (q && !cb) {
    const fb = rep.stages.reduce((a, s) => a + s.floatBytes, 0);
    const ib = rep.stages.reduce((a, s) => a + s.bytes, 0);
    lines.push(`int8      scheme ${q.scheme}, ${q.calibration.method} calibration on ${q.calibration.images} images of ${q.calibration.source}; stages ${bytes(ib)} = ${pct(ib / fb, 1)} of fp32 ${bytes(fb)}`);
    lines.push('');
    lines.push(
      table(
        ['exit', 'fp32 top-1', 'int8 top-1', 'drop (pp)', 'agreement', 'max |logit err|'],
        verifyRows(q.verify),
      ),
    );
    lines.push('');
    lines.push(`verify    every exit within ${q.maxAccuracyDropPp} pp of fp32 on the calibration images${q.keptFloat.length ? `, with ${q.keptFloat.length} node(s) kept float` : ''}`);
  }
  const f16 = rep.fp16?.verify;
  if (f16 && !cb) {
    lines.push('');
    lines.push(table(['exit', 'fp32 top-1', 'fp16 top-1', 'drop (pp)', 'agreement', 'max |logit err|'], verifyRows(f16.paths)));
    lines.push('');
    lines.push(`verify    every exit within ${f16.maxAccuracyDropPp} pp of fp32 on ${f16.images} images of ${f16.source}`);
  }
  if (q && cb) {
    const fb = rep.stages.reduce((a, s) => a + s.floatBytes, 0);
    const ib = rep.stages.reduce((a, s) => a + s.bytes, 0);
    lines.push(`int8      scheme ${q.scheme}, ${q.calibration.method} calibration on ${q.calibration.images} images of ${q.calibration.source}; stages ${bytes(ib)} = ${pct(ib / fb, 1)} of fp32 ${bytes(fb)}`);
  }
  if (cb?.verify) {
    const v = cb.verify;
    lines.push('');
    lines.push(
      table(
        ['path', 'fp32 top-1', `${rep.precision} top-1`, 'drop (pp)', 'agreement', 'max |logit err|'],
        verifyRows(v.paths),
      ),
    );
    lines.push('');
    lines.push(`verify    ${v.paths.length > 2 ? `all ${v.paths.length} exit points` : 'both paths'} within ${v.maxAccuracyDropPp} pp of fp32 on ${v.images} images of ${v.source}`);
  }
  // Contract breaches (src/compiler/contract.ts) come as notes starting "warning: "; show them as such.
  for (const n of rep.notes) lines.push(n.startsWith('warning: ') ? `warn      ${n.slice('warning: '.length)}` : `note      ${n}`);
  const sig = r.signed ? `signed with key ${r.signed.keyId}` : 'unsigned (pass --key <private key> to sign)';
  lines.push(`bundle    ${r.out}${r.replaced ? ' (replaced the previous bundle)' : ''}: manifest.json, ${m.stages.length} stage${m.stages.length === 1 ? '' : 's'}, report.json; ${sig}`);
  return lines.join('\n');
}

export function compileModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('model', { type: 'string', describe: 'Float ONNX model, one graph output per exit; or a CBNet folder holding converter.onnx and classifier.onnx', demandOption: true })
        .option('device', { type: 'string', describe: 'Device profile id (see `edgeexit devices`) or path', demandOption: true })
        .option('out', { type: 'string', describe: 'Bundle folder to write (replaced atomically if it is a bundle)', demandOption: true })
        .option('precision', { type: 'string', choices: PRECISIONS, describe: "Numeric precision (default: the device profile's)" })
        .option('exits', { type: 'string', describe: 'Exit outputs in stage order, comma-separated (default: every graph output)' })
        .option('preprocess', { type: 'string', describe: 'Preprocess spec, JSON text or file (default: the model\'s edgeexit.preprocess metadata)' })
        .option('labels', { type: 'string', describe: 'Labels file, JSON array or one per line (default: the model\'s edgeexit.labels metadata)' })
        .option('key', { type: 'string', describe: 'ed25519 private key (PEM) to sign the manifest with (`edgeexit keygen`)' })
        .option('calibration', { type: 'string', describe: 'ImageFolder of labelled images: int8 calibration, and the int8/fp16 per-exit accuracy check against fp32 (default calibration/fashion-mnist when the labels match); also the numeric check at fp32/fp16' })
        .option('calibration-limit', { type: 'number', describe: 'Images of --calibration used, spread over the classes (default: all for int8, 256 for the fp32 check)' })
        .option('calibration-method', { type: 'string', choices: CALIBRATION_METHODS, describe: `int8 activation ranges (default ${DEFAULT_CALIBRATION_METHOD})` })
        .option('max-accuracy-drop', { type: 'number', describe: `int8: largest top-1 loss per exit in percentage points (default ${DEFAULT_MAX_ACCURACY_DROP}); sensitive nodes stay float to meet it` })
        .option('mixed-precision', { type: 'boolean', describe: 'int8: keep sensitive nodes float to meet --max-accuracy-drop (default true; --no-mixed-precision fails instead)' })
        .option('tolerance', { type: 'number', describe: 'Largest accepted |stage − source| on any exit (default 1e-5 at fp32)' })
        .option('recompute', {
          type: 'string',
          describe:
            "Stages that hand nothing on, so the next stage recomputes their trunk from the image: 'auto' (default: stages whose trunk has ≤ 5 % of the MACs, where the hand-over copy costs more than recomputing), 'none', or indices like 0,1",
        })
        .option('backbone', {
          type: 'string',
          describe: "CBNet folders: the multi-exit model the light classifier is the first exit of; its deeper stages join the bundle and the hybrid falls through to them after the converter",
        })
        .option('latency', { type: 'boolean', describe: "Time each stage float vs compiled at batch 1 on this machine (default true; --no-latency skips it). This machine's numbers, not the device's" })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 compile models/fmnist-branchy/fmnist-branchy.onnx --device rpi4 --out build/branchy-rpi4', 'int8 (the Pi 4 default), calibrated on calibration/fashion-mnist')
        .example('$0 compile models/fmnist-branchy/fmnist-branchy.onnx --device rpi4 --precision fp32 --out build/branchy-rpi4-fp32', '')
        .example('$0 compile models/fmnist-cbnet --device rpi4 --out build/cbnet-rpi4', 'CBNet: converter + light classifier in one bundle (kind cbnet)')
        .example('$0 compile models/fmnist-cbnet --backbone models/fmnist-branchy/fmnist-branchy.onnx --device x86-host --out build/hybrid', 'CBNet whose hybrid falls through to the branchy model\'s deeper stages'),
    handler: async (args: CompileCommandOptions) => {
      await compileCommand(args, io);
    },
  });
}

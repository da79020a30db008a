// The bundle writer of every compile: stage reports from the compiled bytes, then manifest,
// report, stage files and signature written as one bundle atomically (src/bundle/files.ts).
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { packageRoot } from '../devices/index.js';
import type { PreprocessSpec } from '../backends/image.js';
import { edgeexitVersion } from '../bundle/version.js';
import { sha256Hex, writeBundleAtomic } from '../bundle/files.js';
import { MANIFEST_FILE, MANIFEST_FORMAT_VERSION, REPORT_FILE, SIGNATURE_FILE, encodeManifest, validateManifest, type CbnetPipeline, type Manifest } from '../bundle/manifest.js';
import { keyId, signManifest } from '../bundle/signing.js';
import { withBlockHashes } from '../bundle/blocks.js';
import { recordGolden } from './golden.js';
import type { CompileOptions, CompileReport, CompileResult, Precision, StageReport, StageShape } from './options.js';

export function defaultCommand(o: CompileOptions): string {
  const parts = ['edgeexit', 'compile', o.model, '--device', o.device, '--out', o.out];
  if (o.precision && o.precision !== 'device') parts.push('--precision', o.precision);
  if (o.exits?.length) parts.push('--exits', o.exits.join(','));
  if (o.preprocess !== undefined) parts.push('--preprocess', o.preprocess);
  if (o.labels !== undefined) parts.push('--labels', o.labels);
  if (o.key) parts.push('--key', o.key);
  if (o.calibration) parts.push('--calibration', o.calibration);
  if (o.calibrationLimit) parts.push('--calibration-limit', String(o.calibrationLimit));
  if (o.calibrationMethod) parts.push('--calibration-method', o.calibrationMethod);
  if (o.maxAccuracyDrop !== undefined) parts.push('--max-accuracy-drop', String(o.maxAccuracyDrop));
  return parts.map((p) => (/^[\w@%+=:,./-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** A path as the manifest records it: relative to the edgeexit package when inside it, else the folder's name (no host paths). */
export function portablePath(p: string): string {
  const rel = path.relative(packageRoot(), path.resolve(p));
  return rel.startsWith('..') || path.isAbsolute(rel) ? path.basename(p) : rel.split(path.sep).join('/');
}

/** What the pipeline hands to the bundle writer, for every model family. */
export interface BundleContents {
  kind: Manifest['kind'];
  name: string;
  version: string;
  device: string;
  precision: Precision;
  input: { name: string; shape: (number | string)[] };
  preprocess: PreprocessSpec;
  labels: string[];
  stages: readonly StageReport[];
  stageBytes: readonly Uint8Array[];
  report: CompileReport;
  pipeline?: CbnetPipeline;
  /** How many exit points the (uncalibrated) exit policy has: one temperature each. */
  exitPoints: number;
  source: { file: string; sha256: string };
  quantization?: { scheme: string; calibration: { method: string; images: number; source: string }; keptFloatNodes: string[] };
  key: KeyObject | undefined;
}

/**
 * Manifest, report, stage files and signature, written as one bundle atomically. One place, so
 * the model families cannot drift apart in what a bundle holds.
 */
export async function writeCompiledBundle(opts: CompileOptions, c: BundleContents): Promise<CompileResult> {
  const reportBytes = new TextEncoder().encode(JSON.stringify(c.report, null, 2) + '\n');
  const q = c.quantization;
  const base = validateManifest(
    {
      formatVersion: MANIFEST_FORMAT_VERSION,
      model: { name: c.name, version: c.version },
      kind: c.kind,
      target: { device: c.device, precision: c.precision },
      input: { name: c.input.name, dtype: 'float32', shape: c.input.shape, layout: 'NCHW', preprocess: c.preprocess },
      labels: c.labels,
      stages: c.stages.map((s) => ({ file: s.file, sha256: s.sha256, bytes: s.bytes, inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry, macs: s.macs })),
      ...(c.pipeline ? { pipeline: c.pipeline } : {}),
      files: [{ file: REPORT_FILE, sha256: sha256Hex(reportBytes), bytes: reportBytes.length }],
      exitPolicy: { metric: 'max-prob', thresholds: null, temperatures: Array.from({ length: c.exitPoints }, () => 1) },
      provenance: {
        source: c.source,
        edgeexitVersion: edgeexitVersion(),
        created: (opts.now ?? new Date()).toISOString(),
        command: opts.command ?? defaultCommand(opts),
        ...(q
          ? {
              quantization: {
                scheme: q.scheme,
                calibrationMethod: q.calibration.method,
                calibrationImages: q.calibration.images,
                calibrationSource: portablePath(q.calibration.source),
                keptFloat: q.keptFloatNodes,
              },
            }
          : {}),
      },
    },
    `${MANIFEST_FILE} (being written)`,
  );
  // Recorded from the very stage bytes written, so the device checks what it received.
  const recorded = await recordGolden(base, c.stageBytes);
  const bodies = [
    ...c.stages.map((s, k) => ({ name: s.file, data: c.stageBytes[k]! })),
    { name: REPORT_FILE, data: reportBytes },
    { name: recorded.golden.file, data: recorded.bytes },
  ];
  // Block hashes go into the manifest before it is signed: a device checks each downloaded block against them.
  const manifest = validateManifest(
    withBlockHashes(
      {
        ...base,
        files: [...base.files, { file: recorded.golden.file, sha256: sha256Hex(recorded.bytes), bytes: recorded.bytes.length }],
        golden: recorded.golden,
      },
      new Map(bodies.map((f) => [f.name, f.data])),
    ),
    `${MANIFEST_FILE} (being written)`,
  );
  const manifestBytes = encodeManifest(manifest);
  const files = [...bodies, { name: MANIFEST_FILE, data: manifestBytes }];
  if (c.key) files.push({ name: SIGNATURE_FILE, data: signManifest(manifestBytes, c.key) });
  const { replaced } = await writeBundleAtomic(opts.out, files, opts.write);
  return { out: opts.out, manifest, report: c.report, signed: c.key ? { keyId: keyId(c.key) } : null, replaced };
}

/**
 * One report per stage, numbered from `first`, with MACs summed from `cumulative` on (what a
 * sample leaving there cost) and sizes and hashes of the compiled and float bytes.
 */
export function stageReports(
  stages: readonly StageShape[],
  files: readonly string[],
  bytes: { compiled: readonly Uint8Array[]; float: readonly Uint8Array[] },
  start: { first: number; cumulative: number } = { first: 0, cumulative: 0 },
): StageReport[] {
  let cumulative = start.cumulative;
  return stages.map((s, k) => {
    cumulative += s.macs;
    return {
      index: start.first + k,
      file: files[k]!,
      exit: s.exit,
      inputs: s.inputs,
      outputs: s.outputs,
      carry: s.carry,
      nodes: s.nodes,
      macs: s.macs,
      cumulativeMacs: cumulative,
      bytes: bytes.compiled[k]!.length,
      floatBytes: bytes.float[k]!.length,
      sha256: sha256Hex(bytes.compiled[k]!),
    };
  });
}

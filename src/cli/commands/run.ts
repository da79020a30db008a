// `edgeexit run <bundle> <images…|folder>`: classify images with a bundle through the early-exit
// cascade and print a table (or one JSON object per input) plus a summary. The work is in
// src/runtime/bundle-runner.ts; this file collects the inputs, parses flags and prints.
//
// cbnet bundles take --policy (cbnet: converter → classifier for every image; hybrid: the
// classifier on the raw image first, the converter only for what it is not sure of).
//
// Unreadable images are reported by name and the rest are still classified; the command then
// fails (exit code 2) so a script notices, after everything else was printed.
//
// With --telemetry <mqtt-url> the images are classified in chunks so metric windows close on
// time while the run goes on; every prediction feeds the window aggregator (src/telemetry/
// device.ts, flags in src/cli/telemetry-flags.ts) and the run ends with the last window flushed and a clean death. Windows the broker
// did not take stay in the state dir's outbox (a warning says so; the run still succeeds).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { IMAGE_EXTENSIONS } from '../../data/imagefolder.js';
import { loadBundle, type BundleRunner, type ClassifyOptions, type ClassifyResult } from '../../runtime/bundle-runner.js';
import { describeSummary, undeliveredError, type DeviceTelemetry, type TelemetrySummary } from '../../telemetry/device.js';
import { CBNET_POLICIES, type CbnetPolicy } from '../../runtime/cbnet-cascade.js';
import { EXIT_METRICS, type ExitMetric } from '../../runtime/exit-policy.js';
import { InputError, formatProblem, show } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { TELEMETRY_CHUNK, classifyFiles, labelFromPath, startTelemetry, telemetryFlags, telemetryYargsOptions, type TelemetryCliOptions } from '../telemetry-flags.js';
import { pct, table } from '../format.js';

export interface RunCommandOptions extends TelemetryCliOptions {
  bundle: string;
  inputs: string[];
  json?: boolean;
  batch?: number;
  /** `t0,t1,…` (one per exit but the last) or `none` to run to the last exit. */
  threshold?: string;
  metric?: ExitMetric;
  /** cbnet bundles only: run order (default: the manifest's pipeline.default). */
  policy?: CbnetPolicy;
  key?: string;
  requireSignature?: boolean;
  trustDir?: string;
  allowUnsigned?: boolean;
  device?: string;
  threads?: number;
}

export interface RunCommandResult {
  files: string[];
  result: ClassifyResult;
  telemetry?: TelemetrySummary;
}


/** `0.9, 0.8` → [0.9, 0.8]; `none` → null. Range checks are the exit policy's (they name the exit). */
export function parseThresholds(s: string | undefined): number[] | null | undefined {
  if (s === undefined) return undefined;
  if (/^\s*(none|null)\s*$/i.test(s)) return null;
  return s.split(',').map((part, i) => {
    const t = part.trim();
    const v = t === '' ? NaN : Number(t);
    if (!Number.isFinite(v)) {
      throw new InputError(formatProblem({ where: `--threshold item ${i + 1}`, expected: 'a number (comma-separated, one per exit but the last) or "none"', got: show(t) }));
    }
    return v;
  });
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Every image file under `dir`, recursively. Only regular files (or links to them) count: a FIFO
 * or device named like an image would block the read forever, so it is skipped and `warn` gets one
 * line naming it.
 *
 * @example
 * const files = await imagesUnder('photos', (line) => console.error(line));
 */
export async function imagesUnder(dir: string, warn: (line: string) => void = () => undefined): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await imagesUnder(p, warn)));
    else if (IMAGE_EXTENSIONS.includes(path.extname(e.name).toLowerCase()) && (await isRegularFile(p, warn))) out.push(p);
  }
  return out;
}

async function isRegularFile(p: string, warn: (line: string) => void): Promise<boolean> {
  const st = await fsp.stat(p).catch(() => undefined);
  if (st?.isFile()) return true;
  warn(`warning: skipping ${p}: ${st ? 'not a regular file (a FIFO, socket or device)' : 'a broken link'}`);
  return false;
}

/**
 * Expand the arguments: a folder → every image under it (recursively, code-unit sorted so the
 * order is the same on every machine); a file → itself, whatever its extension (a non-image is
 * then reported as unreadable rather than silently skipped); a FIFO, socket or device → skipped
 * with a warning, since reading it could block forever.
 */
export async function collectInputs(args: readonly string[], warn: (line: string) => void = () => undefined): Promise<string[]> {
  const files: string[] = [];
  for (const a of args) {
    const st = await fsp.stat(a).catch(() => undefined);
    if (st?.isDirectory()) {
      const found = (await imagesUnder(a, warn)).sort(byCodeUnit);
      if (found.length === 0) throw new InputError(formatProblem({ where: a, message: 'no images in this folder', expected: `files ending in ${IMAGE_EXTENSIONS.join(', ')}` }));
      files.push(...found);
    } else if (st && !st.isFile()) warn(`warning: skipping ${a}: not a regular file (a FIFO, socket or device)`);
    else files.push(a);
  }
  return files;
}

const ms = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export function renderRun(r: RunCommandResult, exitNames: readonly string[] = r.result.exitNames): string {
  const res = r.result;
  const ok = res.items.filter((i) => i.ok);
  const lines: string[] = [];
  lines.push(
    table(
      ['file', 'label', 'confidence', 'exit', 'latency ms'],
      res.items.map((i) => (i.ok ? [i.name, i.label, i.confidence.toFixed(4), `${i.exit} (${i.exitName})`, ms(i.latencyMs)] : [i.name, 'UNREADABLE', '-', '-', '-'])),
    ),
  );
  lines.push('');
  const policy = res.thresholds === null ? `${res.metric}, thresholds none (every sample runs to the last exit)` : `${res.metric}, thresholds ${res.thresholds.join(', ')}`;
  if (res.policy) {
    const order = res.policy === 'hybrid' ? 'classifier on the image; converter → classifier for the rest' : 'converter → classifier for every image';
    lines.push(`run order ${res.policy} (${order})`);
  }
  lines.push(`policy    ${policy}`);
  const hist = res.exitCounts.map((n, k) => `${k} (${exitNames[k]}) ${n}${ok.length ? ` = ${pct(n / ok.length, 1)}` : ''}`).join(', ');
  lines.push(`exits     ${hist}`);
  const mean = ok.length ? ok.reduce((a, i) => a + i.latencyMs, 0) / ok.length : 0;
  const t = res.timing;
  const stageSum = t.stageMs.reduce((a, b) => a + b, 0);
  lines.push(`latency   mean ${ms(mean)} ms per image over ${ok.length} image${ok.length === 1 ? '' : 's'} in ${t.batches} batch${t.batches === 1 ? '' : 'es'}`);
  // With thresholds none a multi-exit bundle runs as its stages joined into one session (loadBundle's `chain`): its items carry no per-stage times.
  const joined = res.thresholds === null && ok.length > 0 && ok.every((i) => i.stageLatencyMs.length === 0);
  lines.push(`time      decode ${ms(t.preprocessMs)} ms; cascade ${ms(t.cascadeMs)} ms = stages ${ms(stageSum)} ms${joined ? ' (joined into one session)' : ''} + overhead ${ms(t.overheadMs)} ms`);
  if (t.runs?.length) lines.push(`runs      ${t.runs.map((x) => `${x.name} ${ms(x.ms)} ms on ${x.rows} image${x.rows === 1 ? '' : 's'}`).join('; ')}`);
  const failed = res.items.length - ok.length;
  if (failed) lines.push(`errors    ${failed} unreadable input${failed === 1 ? '' : 's'} (listed on stderr)`);
  return lines.join('\n');
}

/**
 * The bundle as `run` and `agent` load it: signed with --key or a key in the trust store
 * (--trust-dir) unless --allow-unsigned, on --device's providers and --threads.
 */
export function loadBundleFromFlags(
  opts: { bundle: string; key?: string; requireSignature?: boolean; trustDir?: string; allowUnsigned?: boolean; device?: string; threads?: number },
  io: CliIO,
): Promise<BundleRunner> {
  return loadBundle(opts.bundle, {
    ...(opts.key ? { publicKey: opts.key } : {}),
    ...(opts.requireSignature ? { requireSignature: true } : {}),
    ...(opts.trustDir !== undefined ? { trustDir: opts.trustDir } : {}),
    ...(opts.allowUnsigned ? { allowUnsigned: true } : {}),
    ...(opts.device ? { device: opts.device } : {}),
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    onWarning: (line) => io.err(line),
  });
}

export async function runCommand(opts: RunCommandOptions, io: CliIO): Promise<RunCommandResult> {
  const thresholds = parseThresholds(opts.threshold);
  const tflags = opts.telemetry !== undefined ? telemetryFlags({ ...opts, telemetry: opts.telemetry }) : undefined;
  const files = await collectInputs(opts.inputs, (line) => io.err(line));
  const runner = await loadBundleFromFlags(opts, io);
  let result: ClassifyResult;
  let telemetry: DeviceTelemetry | undefined;
  let summary: TelemetrySummary | undefined;
  try {
    if (opts.policy !== undefined && runner.manifest.kind !== 'cbnet') {
      throw new InputError(
        formatProblem({
          where: `--policy ${opts.policy}`,
          message: `only cbnet bundles take --policy (${CBNET_POLICIES.join(' or ')}); ${opts.bundle} is a ${runner.manifest.kind} bundle, whose exits run in stage order (${runner.manifest.stages.map((s) => s.exit).join(', ')})`,
          fix: 'drop --policy; --threshold t0,t1,… chooses where samples leave',
        }),
      );
    }
    const classifyOptions: ClassifyOptions = {
      ...(opts.policy ? { policy: opts.policy } : {}),
      batchSize: opts.batch ?? 1,
      ...(thresholds !== undefined ? { thresholds } : {}),
      ...(opts.metric ? { metric: opts.metric } : {}),
    };
    if (tflags) {
      telemetry = await startTelemetry(tflags, runner, opts.bundle, {
        ...(opts.device ? { profile: opts.device } : {}),
        ...(thresholds !== undefined ? { thresholds } : {}),
        ...(opts.policy ? { policy: opts.policy } : {}),
        onLog: (line) => io.err(line),
      });
      const t = telemetry;
      const labels = runner.manifest.labels;
      result = await classifyFiles(runner, files, classifyOptions, TELEMETRY_CHUNK, (items) => {
        for (const it of items) {
          if (!it.ok) continue;
          const label = labelFromPath(it.name, labels);
          t.record(it, label === undefined ? undefined : it.classIndex === label);
        }
      });
    } else result = await runner.classify(files, classifyOptions);
  } finally {
    try {
      if (telemetry) {
        summary = await telemetry.close(tflags!.drainMs);
        io.err(describeSummary(summary, tflags!.drainMs));
      }
    } finally {
      await runner.close();
    }
  }
  const r: RunCommandResult = { files, result, ...(summary ? { telemetry: summary } : {}) };
  if (opts.json) {
    for (const i of result.items) {
      io.out(
        JSON.stringify(
          i.ok
            ? {
                file: i.name,
                label: i.label,
                classIndex: i.classIndex,
                exit: i.exit,
                exitName: i.exitName,
                confidence: i.confidence,
                score: i.score,
                metric: result.metric,
                ...(result.policy ? { policy: result.policy } : {}),
                latencyMs: i.latencyMs,
                stageLatencyMs: i.stageLatencyMs,
                ...(i.runs ? { runs: i.runs } : {}),
              }
            : { file: i.name, error: i.error.message },
        ),
      );
    }
  } else io.out(renderRun(r));
  const failed = result.items.filter((i) => !i.ok);
  if (failed.length > 0) {
    for (const f of failed) if (!f.ok) io.err(`error: ${f.error.message}`);
    throw new InputError(`${failed.length} of ${result.items.length} input${result.items.length === 1 ? '' : 's'} could not be read: ${failed.map((f) => f.name).join(', ')}`);
  }
  // A run that was asked to report and could not must not look like one that did.
  const undelivered = summary ? undeliveredError(summary, tflags!.drainMs) : undefined;
  if (undelivered) throw undelivered;
  return r;
}

export function runModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder or .tar', demandOption: true })
        .positional('inputs', { type: 'string', array: true, describe: 'Image files and/or folders (searched recursively)', demandOption: true })
        .option('json', { type: 'boolean', describe: 'One JSON object per input (file, label, exit, confidence, latencyMs, …)' })
        .option('batch', { type: 'number', describe: 'Images per cascade run; exited samples are dropped after each stage (default 1)' })
        .option('threshold', { type: 'string', describe: 'Thresholds t0,t1,… one per exit but the last, or "none" to run to the last exit (default: the manifest\'s)' })
        .option('metric', { type: 'string', choices: EXIT_METRICS, describe: 'Exit confidence: max-prob (exit when ≥ t), entropy (normalised, exit when ≤ t), margin (top1 − top2, exit when ≥ t)' })
        .option('policy', {
          type: 'string',
          choices: CBNET_POLICIES,
          describe: "cbnet bundles only: cbnet (converter → classifier for every image) or hybrid (classifier on the image first; the converter only for samples under --threshold) (default: the manifest's)",
        })
        .option('key', { type: 'string', describe: 'Public key (PEM) the bundle must be signed with (instead of the trust store)' })
        .option('require-signature', { type: 'boolean', describe: 'Refuse an unsigned bundle (the default; kept for scripts)' })
        .option('trust-dir', { type: 'string', describe: 'Trust store of accepted signing keys (default: $EDGEEXIT_TRUST_DIR, else ~/.config/edgeexit/trust)' })
        .option('allow-unsigned', { type: 'boolean', describe: 'Run a bundle whose signature cannot be checked (unsigned or untrusted key), with a warning' })
        .option('device', { type: 'string', describe: "Device profile for execution providers and threads (default: the bundle's target)" })
        .option('threads', { type: 'number', describe: 'Intra-op threads (default: the device profile\'s, at most the cores here)' })
        .option('telemetry', { type: 'string', describe: 'Publish metric windows, birth and death to this MQTT broker (mqtt://host:1883, mqtts://…)' })
        .options(telemetryYargsOptions)
        .example('$0 run build/branchy-rpi4 calibration/fashion-mnist/bag --threshold 0.9,0.9', '')
        .example('$0 run build/branchy-rpi4 photo.png --json', '')
        .example('$0 run build/branchy-rpi4 calibration/fashion-mnist --telemetry mqtt://collector.local --fleet lab --device-id pi-07', '')
        .example('$0 run build/cbnet-rpi4 calibration/fashion-mnist/shirt --policy hybrid --threshold 0.9', ''),
    // sysRoot (the /sys tree for energy and thermal readings) is for programmatic callers; it has no flag.
    handler: async (args: Omit<RunCommandOptions, 'sysRoot'>) => {
      await runCommand(args, io);
    },
  });
}


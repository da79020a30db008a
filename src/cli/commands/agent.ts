// `edgeexit agent <bundle> --watch <folder> --telemetry <url>`: the long-running device agent.
// Classifies images as they appear in the folder (or re-runs it with --loop), publishes metric
// windows over MQTT, and on SIGINT/SIGTERM (or the AbortSignal given to agentCommand) flushes the
// open window to the outbox and closes with a clean death. The loop is src/fleet/agent.ts; the
// telemetry session is src/telemetry/device.ts; this file resolves flags and prints. With --root
// it runs the bundle store's current bundle and swaps its runner in place when an install moves
// the pointer (src/agent/swappable.ts).
import { promises as fsp } from 'node:fs';
import { runAgentLoop, type AgentStats } from '../../agent/loop.js';
import { BundleStore } from '../../agent/store.js';
import { recoverIfIdle } from '../../agent/install.js';
import { SwappableRunner } from '../../agent/swappable.js';
import { JobAgent } from '../../agent/jobs.js';
import { LatencyWatch } from '../../agent/trial.js';
import { defaultTrustDir } from '../../bundle/trust.js';
import type { ClassifyItem } from '../../runtime/bundle-runner.js';
import { CBNET_POLICIES, type CbnetPolicy } from '../../runtime/cbnet-cascade.js';
import { EXIT_METRICS, type ExitMetric } from '../../runtime/exit-policy.js';
import { describeSummary, readTls, type DeviceTelemetry, type TelemetrySummary } from '../../telemetry/device.js';
import type { WindowInput } from '../../telemetry/mqtt/publisher.js';
import { InputError, formatProblem, show } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { TELEMETRY_CHUNK, labelFromPath, startTelemetry, telemetryFlags, telemetryYargsOptions, type TelemetryCliOptions } from '../telemetry-flags.js';
import { imagesUnder, loadBundleFromFlags, parseThresholds } from './run.js';
import { untilStopped } from '../signals.js';

export interface AgentCommandOptions extends TelemetryCliOptions {
  /** Bundle folder or .tar; or, with `root`, none: the store's current bundle. */
  bundle?: string;
  /** Bundle store (edgeexit install): run its current bundle and switch when an install moves it. */
  root?: string;
  /** How often (ms) the store's current pointer is checked (default 1000). */
  storePollMs?: number;
  /** Folder the images arrive in (searched recursively). */
  watch: string;
  telemetry: string;
  /** Re-run the folder pass after pass instead of waiting for new images. */
  loop?: boolean;
  threshold?: string;
  metric?: ExitMetric;
  policy?: CbnetPolicy;
  batch?: number;
  key?: string;
  requireSignature?: boolean;
  trustDir?: string;
  allowUnsigned?: boolean;
  /** Device profile (providers, threads, energy sensor, power model); default: the bundle's target. */
  device?: string;
  threads?: number;
  /** Folder poll interval in ms (default 250). */
  pollMs?: number;
  /** With --root: run flash jobs from the broker (default true; --no-jobs turns it off). */
  jobs?: boolean;
  /** Earlier bundles a flash job keeps for rollback (default 2). */
  keep?: number;
  /** A flash job's self-test fails when a stage takes longer than this on one golden image here. */
  latencyBudgetMs?: number;
  /** A flash job's self-test fails when the bundle takes more memory than this here. */
  memoryBudgetMib?: number;
  /** Flash job trial length in ms when the job names none (default 10000). */
  trialMs?: number;
  /** Roll a flash job back when its p95 per image exceeds the previous bundle's by this factor (default 1.5). */
  trialMaxP95Ratio?: number;
  /** Told after each classify call (tests wait on it). */
  onItems?: (items: readonly ClassifyItem[]) => void;
}

export interface AgentCommandResult {
  stats: AgentStats;
  telemetry: TelemetrySummary;
}

function windowLine(w: WindowInput): string {
  const e = w.latencyMs.endToEnd;
  const acc = w.accuracy ? `, top-1 ${((100 * w.accuracy.correct) / Math.max(1, w.accuracy.labelled)).toFixed(1)}% of ${w.accuracy.labelled}` : '';
  return `window: ${w.count} inferences, exits ${w.exitHistogram.join('/')}, p50/p95 ${e.p50.toFixed(3)}/${e.p95.toFixed(3)} ms, ${w.energy.joules.toFixed(3)} J (${w.energy.source})${w.temperatureC !== undefined ? `, ${w.temperatureC.toFixed(1)} °C` : ''}${acc}`;
}

/** The bundle to run: the one named, or the store's current one (after finishing an interrupted install). */
async function bundleSource(opts: AgentCommandOptions): Promise<{ bundle: string; store?: BundleStore; id?: string }> {
  if (opts.root === undefined) {
    if (typeof opts.bundle !== 'string') throw new InputError(formatProblem({ where: 'agent', expected: 'a bundle folder or .tar, or --root <bundle store>', got: 'neither', fix: 'edgeexit agent <bundle> …, or edgeexit agent --root /var/lib/edgeexit …' }));
    return { bundle: opts.bundle };
  }
  if (opts.bundle !== undefined) throw new InputError(formatProblem({ where: `agent ${opts.bundle} --root ${opts.root}`, message: 'give a bundle or a store, not both', fix: 'install the bundle into the store (`edgeexit install`), then run `edgeexit agent --root`' }));
  const store = await BundleStore.open(opts.root);
  await recoverIfIdle(store);
  const id = await store.current();
  if (!id) throw new InputError(formatProblem({ where: `--root ${opts.root}`, message: 'the bundle store has no current bundle', fix: `install one first: edgeexit install <bundle> --root ${opts.root}` }));
  return { bundle: store.bundleDir(id), store, id };
}

/**
 * Follow the store's current pointer: when an install moves it, load the new bundle (verified
 * again) and swap it in; calls in flight finish on the old runner. A bundle that fails to load
 * here is logged and the running one kept.
 */
function followStore(store: BundleStore, start: string, runner: SwappableRunner, opts: AgentCommandOptions, io: CliIO, signal: AbortSignal): { stop: () => Promise<void>; checkNow: () => Promise<void> } {
  let running = start;
  let busy: Promise<void> = Promise.resolve();
  const check = async (): Promise<void> => {
    const id = await store.current().catch(() => running);
    if (!id || id === running) return;
    try {
      const next = await loadBundleFromFlags({ ...opts, bundle: store.bundleDir(id) }, io);
      await runner.swap(next);
      io.err(`agent: switched to ${next.manifest.model.name} ${next.manifest.model.version} (${id.slice(0, 12)}) without a restart`);
    } catch (err) {
      io.err(`agent: could not switch to ${id.slice(0, 12)}: ${(err as Error).message}; still running ${running.slice(0, 12)}`);
    }
    running = id;
  };
  const timer = setInterval(() => {
    busy = busy.then(check);
  }, opts.storePollMs ?? 1000);
  const stop = async (): Promise<void> => {
    clearInterval(timer);
    await busy;
  };
  signal.addEventListener('abort', () => clearInterval(timer), { once: true });
  // A flash job switches at once (and its trial must measure the new bundle), not at the next poll.
  const checkNow = (): Promise<void> => (busy = busy.then(check));
  return { stop, checkNow };
}

function checkJobFlags(o: AgentCommandOptions): void {
  const bad = (flag: string, v: number | undefined, ok: (n: number) => boolean, expected: string): void => {
    if (v !== undefined && !ok(v)) throw new InputError(formatProblem({ where: flag, expected, got: String(v) }));
  };
  bad('--keep', o.keep, (n) => Number.isInteger(n) && n >= 0, 'an integer ≥ 0');
  bad('--trial-ms', o.trialMs, (n) => Number.isInteger(n) && n >= 0 && n <= 3_600_000, 'whole milliseconds from 0 to 3600000');
  bad('--latency-budget-ms', o.latencyBudgetMs, (n) => Number.isFinite(n) && n > 0, 'milliseconds > 0');
  bad('--memory-budget-mib', o.memoryBudgetMib, (n) => Number.isFinite(n) && n > 0, 'MiB > 0');
  bad('--trial-max-p95-ratio', o.trialMaxP95Ratio, (n) => Number.isFinite(n) && n >= 1, 'a factor ≥ 1 (1.5: 50 % slower is too slow)');
}

/** Flash jobs for this device over the telemetry broker, with the same credentials (see agent/jobs.ts). */
async function startJobs(opts: AgentCommandOptions, flags: ReturnType<typeof telemetryFlags>, t: DeviceTelemetry, runner: SwappableRunner, checkNow: () => Promise<void>, io: CliIO): Promise<JobAgent> {
  const tls = await readTls(flags.tls);
  const jobs = new JobAgent({
    root: opts.root!,
    brokerUrl: flags.url,
    fleet: t.info.fleet,
    device: t.info.device,
    ...(flags.username !== undefined ? { username: flags.username } : {}),
    ...(flags.password !== undefined ? { password: flags.password } : {}),
    ...(tls ? { tls } : {}),
    trustDir: opts.trustDir ?? defaultTrustDir(),
    ...(opts.device !== undefined ? { deviceProfile: opts.device } : {}),
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    ...(opts.keep !== undefined ? { keep: opts.keep } : {}),
    selfTest: { ...(opts.latencyBudgetMs !== undefined ? { latencyBudgetMs: opts.latencyBudgetMs } : {}), ...(opts.memoryBudgetMib !== undefined ? { memoryBudgetMiB: opts.memoryBudgetMib } : {}) },
    trial: { ...(opts.trialMs !== undefined ? { durationMs: opts.trialMs } : {}), ...(opts.trialMaxP95Ratio !== undefined ? { maxP95Ratio: opts.trialMaxP95Ratio } : {}) },
    watch: new LatencyWatch(runner),
    switchNow: checkNow,
    onLog: (line) => io.err(line),
  });
  await jobs.start();
  return jobs;
}

/** Run the agent until `signal` aborts; resolves once the last window is in the outbox and the publisher is closed. */
export async function agentCommand(opts: AgentCommandOptions, io: CliIO, signal: AbortSignal): Promise<AgentCommandResult> {
  if (typeof opts.telemetry !== 'string')
    throw new InputError(formatProblem({ where: '--telemetry', expected: 'the MQTT broker to publish to', got: 'nothing', fix: 'add --telemetry mqtt://host:1883' }));
  const flags = telemetryFlags(opts);
  // Checked before the bundle is loaded, so a typo fails in milliseconds.
  const st = typeof opts.watch === 'string' ? await fsp.stat(opts.watch).catch(() => undefined) : undefined;
  if (!st?.isDirectory())
    throw new InputError(formatProblem({ where: '--watch', expected: 'a folder images arrive in', got: opts.watch === undefined ? 'nothing' : show(opts.watch), fix: 'create the folder, or point --watch at an existing one' }));
  const thresholds = parseThresholds(opts.threshold);
  checkJobFlags(opts);
  if (opts.batch !== undefined && !(Number.isInteger(opts.batch) && opts.batch >= 1)) throw new InputError(formatProblem({ where: '--batch', expected: 'a positive integer', got: String(opts.batch) }));
  const source = await bundleSource(opts);
  const loaded = await loadBundleFromFlags({ ...opts, bundle: source.bundle }, io);
  const runner = new SwappableRunner(loaded);
  const follow = source.store ? followStore(source.store, source.id!, runner, opts, io, signal) : undefined;
  let telemetry: DeviceTelemetry | undefined;
  let jobs: JobAgent | undefined;
  let stats: AgentStats | undefined;
  let summary: TelemetrySummary | undefined;
  try {
    if (opts.policy !== undefined && runner.manifest.kind !== 'cbnet')
      throw new InputError(formatProblem({ where: `--policy ${opts.policy}`, message: `only cbnet bundles take --policy; ${source.bundle} is a ${runner.manifest.kind} bundle`, fix: 'drop --policy' }));
    telemetry = await startTelemetry(flags, runner, source.bundle, {
      ...(opts.device ? { profile: opts.device } : {}),
      ...(thresholds !== undefined ? { thresholds } : {}),
      ...(opts.policy ? { policy: opts.policy } : {}),
      onLog: (line) => io.err(line),
      onWindow: (w) => io.err(windowLine(w)),
    });
    const t = telemetry;
    if (follow && opts.jobs !== false) jobs = await startJobs(opts, flags, t, runner, follow.checkNow, io);
    io.err(
      `agent: ${opts.loop ? 're-running' : 'watching'} ${opts.watch} with ${runner.manifest.model.name} ${runner.manifest.model.version}; ` +
        `telemetry to ${t.info.url} as ${t.info.fleet}/${t.info.device} every ${(t.aggregator.windowMs / 1000).toFixed(1)} s (state ${t.info.stateDir}); energy: ${t.meter.describe()}; stop with Ctrl-C`,
    );
    const labels = runner.manifest.labels;
    stats = await runAgentLoop(
      {
        runner,
        telemetry: t,
        folder: opts.watch,
        classify: {
          batchSize: opts.batch ?? 1,
          ...(opts.policy ? { policy: opts.policy } : {}),
          ...(thresholds !== undefined ? { thresholds } : {}),
          ...(opts.metric ? { metric: opts.metric } : {}),
        },
        chunk: TELEMETRY_CHUNK,
        ...(opts.loop ? { loop: true } : {}),
        ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
        list: async (dir) => (await imagesUnder(dir)).sort(),
        labelOf: (f) => labelFromPath(f, labels),
        onLog: (line) => io.err(line),
        ...(opts.onItems ? { onItems: opts.onItems } : {}),
      },
      signal,
    );
  } finally {
    await jobs?.close();
    try {
      if (telemetry) {
        summary = await telemetry.close(flags.drainMs);
        io.err(describeSummary(summary, flags.drainMs));
      }
    } finally {
      await follow?.stop();
      await runner.close();
    }
  }
  io.err(`agent stopped: ${stats.classified} classified, ${stats.failed} unreadable`);
  return { stats, telemetry: summary! };
}

export function agentModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder or .tar (or --root)' })
        .option('root', { type: 'string', describe: 'Bundle store (edgeexit install): run its current bundle, switching in place when an install moves it' })
        .option('watch', { type: 'string', describe: 'Folder new images arrive in (searched recursively)', demandOption: true })
        .option('telemetry', { type: 'string', describe: 'MQTT broker to publish to (mqtt://host:1883, mqtts://…)', demandOption: true })
        .option('loop', { type: 'boolean', describe: 'Re-run every image in the folder, pass after pass, instead of waiting for new ones' })
        .options(telemetryYargsOptions)
        .option('threshold', { type: 'string', describe: 'Thresholds t0,t1,… or "none" (default: the manifest\'s)' })
        .option('metric', { type: 'string', choices: EXIT_METRICS, describe: 'Exit confidence metric (default: the manifest\'s)' })
        .option('policy', { type: 'string', choices: CBNET_POLICIES, describe: 'cbnet bundles only: run order' })
        .option('batch', { type: 'number', describe: 'Images per cascade run (default 1)' })
        .option('key', { type: 'string', describe: 'Public key (PEM) the bundle must be signed with (instead of the trust store)' })
        .option('require-signature', { type: 'boolean', describe: 'Refuse an unsigned bundle (the default; kept for scripts)' })
        .option('trust-dir', { type: 'string', describe: 'Trust store of accepted signing keys (default: $EDGEEXIT_TRUST_DIR, else ~/.config/edgeexit/trust)' })
        .option('allow-unsigned', { type: 'boolean', describe: 'Run a bundle whose signature cannot be checked (unsigned or untrusted key), with a warning' })
        .option('device', { type: 'string', describe: "Device profile: providers, threads, energy sensor, power model (default: the bundle's target)" })
        .option('threads', { type: 'number', describe: 'Intra-op threads' })
        .option('jobs', { type: 'boolean', describe: 'With --root: run flash jobs published for this device (`edgeexit flash`); --no-jobs turns it off', default: true })
        .option('keep', { type: 'number', describe: 'With --root: earlier bundles a flash job keeps for rollback (default 2)' })
        .option('latency-budget-ms', { type: 'number', describe: "With --root: a flash job's self-test fails when a stage takes longer than this on one golden image here" })
        .option('memory-budget-mib', { type: 'number', describe: "With --root: a flash job's self-test fails when the bundle takes more memory than this here" })
        .option('trial-ms', { type: 'number', describe: 'Flash job trial length when the job names none (default 10000)' })
        .option('trial-max-p95-ratio', { type: 'number', describe: "Roll a flash job back when the new bundle's p95 per image exceeds the previous one's by this factor (default 1.5)" })
        .example('$0 agent bundles/branchy-rpi4 --watch /var/spool/camera --telemetry mqtt://collector.local --fleet lab --device-id pi-07', '')
        .example('$0 agent --root /var/lib/edgeexit --watch /var/spool/camera --telemetry mqtt://collector.local', 'run what `edgeexit install` put there')
        .example('$0 agent bundles/branchy-rpi4 --watch calibration/fashion-mnist --loop --telemetry mqtt://127.0.0.1:1883', 'soak test'),
    // sysRoot, pollMs and onItems are for programmatic callers (tests); the command line has no flag for them.
    handler: async (args: Omit<AgentCommandOptions, 'sysRoot' | 'pollMs' | 'onItems' | 'storePollMs'>) => {
      await untilStopped((signal) => agentCommand(args, io, signal));
    },
  });
}

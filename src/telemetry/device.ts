// The device side of fleet telemetry in one object: given a loaded bundle, it finds the energy
// meter (the profile's sensor, else an auto-detected one, else the profile's power model, said in
// one warning line), builds the birth (profile, bundle name/version/manifest sha256/precision/
// thresholds, runtime versions), starts the publisher (bdSeq and outbox in the state dir) and a
// window aggregator that feeds it. `run --telemetry`, the agent, the quick start and the
// telemetry benchmark all go through here, so they publish the same thing.
//
// Unreachable broker: windows are never thrown away for it. They are written to the outbox, the
// publisher keeps retrying in the background, and close() waits at most `drainMs` for the broker
// to acknowledge them; what is left stays on disk and goes out on the next start with the same
// state dir. close() reports how many are left and the last connection error.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { onnxruntimeVersion } from '../backends/onnxruntime.js';
import { loadBundleFiles, sha256Hex } from '../bundle/files.js';
import { edgeexitVersion } from '../bundle/version.js';
import { MANIFEST_FILE, type Manifest } from '../bundle/manifest.js';
import { loadDeviceProfile } from '../devices/load.js';
import type { DeviceProfile } from '../devices/schema.js';
import { EdgeExitError, InputError, formatProblem, show } from '../util/errors.js';
import { detectEnergyMeter } from './energy/detect.js';
import type { EnergyMeter } from './energy/meter.js';
import { isProtocolRefusal, type MqttTls } from './mqtt/client.js';
import { TelemetryPublisher, type Backoff, type BirthInfo, type WindowInput } from './mqtt/publisher.js';
import { checkId } from './payloads.js';
import { BusyTime, DEFAULT_WINDOW_MS, WindowAggregator, thermalReader, type InferenceRecord } from './window.js';

export const DEFAULT_FLEET = 'default';
export const DEFAULT_DRAIN_MS = 10_000;
const MQTT_PROTOCOLS = ['mqtt:', 'mqtts:', 'ws:', 'wss:'];

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `10s`, `1.5m`, `1h`; a bare number is seconds. Refuses anything under `minMs`. */
export function parseDurationMs(option: string, text: string | number, minMs = 100): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(String(text));
  const ms = m ? Number(m[1]) * UNITS[m[2] ?? 's']! : NaN;
  if (!Number.isFinite(ms) || ms < minMs)
    throw new InputError(
      formatProblem({ where: option, expected: `a duration of at least ${minMs} ms, like 10s, 500ms or 1m`, got: show(text), fix: `e.g. ${option} 10s` }),
    );
  return Math.round(ms);
}

/** Catch a mistyped broker URL before anything is loaded (MQTT.js would only fail at connect). */
export function checkBrokerUrl(option: string, url: string): void {
  let u: URL | undefined;
  try {
    u = new URL(url);
  } catch {
    u = undefined;
  }
  if (!u || !MQTT_PROTOCOLS.includes(u.protocol) || u.hostname === '')
    throw new InputError(formatProblem({ where: option, expected: `a broker URL ${MQTT_PROTOCOLS.map((p) => p + '//host[:port]').join(', ')}`, got: show(url), fix: 'e.g. mqtt://broker.local:1883' }));
}

/** A device id from the host name, made topic-safe. */
export function defaultDeviceId(): string {
  const h = os.hostname().replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);
  return h || 'device';
}

export function defaultStateDir(device: string): string {
  return path.join('.edgeexit', 'agent', device);
}

/** checkId with the command-line option named, so the message says which flag to change. */
export function checkIdOption(option: string, what: 'fleet' | 'device', id: string): void {
  try {
    checkId(what, id);
  } catch (err) {
    if (err instanceof InputError) throw new InputError(`${option}: ${err.message}`, err.problems.map((p) => ({ ...p, where: option })));
    throw err;
  }
}

/** Exit bins and stage slots of the windows a bundle produces under a cbnet policy (or its stages). */
export function windowShape(manifest: Manifest, policy?: 'cbnet' | 'hybrid'): { exits: number; stages: number } {
  const p = manifest.pipeline;
  if (manifest.kind !== 'cbnet' || !p) return { exits: manifest.stages.length, stages: manifest.stages.length };
  const order = (policy ?? p.default) === 'cbnet' ? p.policies.cbnet : p.policies.hybrid;
  // A converter exit point runs two models (converter, then classifier), each a stageLatencyMs entry.
  return { exits: order.length, stages: order.reduce((a, e) => a + (e === 'classifier<-image' ? 1 : 2), 0) };
}

export async function manifestSha256(bundle: string): Promise<string> {
  const files = await loadBundleFiles(bundle);
  const m = files.files.get(MANIFEST_FILE);
  if (!m) throw new InputError(`${bundle}: no ${MANIFEST_FILE}`);
  return sha256Hex(m);
}

export interface TlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

/** Read the PEM files named by --tls-ca/--tls-cert/--tls-key; errors name the option. */
export async function readTls(files: TlsFiles | undefined): Promise<MqttTls | undefined> {
  if (!files || (files.ca === undefined && files.cert === undefined && files.key === undefined)) return undefined;
  if ((files.cert === undefined) !== (files.key === undefined))
    throw new InputError(formatProblem({ where: files.cert === undefined ? '--tls-cert' : '--tls-key', message: 'missing: a client certificate needs its key and the other way round', fix: 'give both --tls-cert and --tls-key' }));
  const read = async (option: string, f: string | undefined) => {
    if (f === undefined) return undefined;
    try {
      return await fsp.readFile(f);
    } catch (err) {
      throw new InputError(formatProblem({ where: option, message: `cannot read ${f} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, expected: 'a PEM file' }), [], { cause: err });
    }
  };
  const [ca, cert, key] = await Promise.all([read('--tls-ca', files.ca), read('--tls-cert', files.cert), read('--tls-key', files.key)]);
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
}

export interface DeviceTelemetryOptions {
  /** Broker URL (mqtt://, mqtts://, ws://, wss://). */
  url: string;
  fleet?: string;
  device?: string;
  /** bdSeq and outbox (default .edgeexit/agent/<device>). */
  stateDir?: string;
  /** Bundle folder or archive (for the manifest hash) and its manifest. */
  bundle: string;
  manifest: Manifest;
  /** Device profile id or file whose sensor and power model apply (default: the bundle's target). */
  profile?: string;
  /** Thresholds in use (birth). Default: the manifest's. */
  thresholds?: readonly number[] | null;
  /** cbnet bundles: the run-order policy in use. */
  policy?: 'cbnet' | 'hybrid';
  windowMs?: number;
  maxCount?: number;
  username?: string;
  password?: string;
  tls?: TlsFiles;
  /** Root the sysfs paths (energy sensors, thermal zones) are read under (default `/`). */
  sysRoot?: string;
  /** Use this meter instead of detecting one. */
  meter?: EnergyMeter;
  /** MQTT 5, 3.1.1 (4), or 'auto' (default: 5, and 3.1.1 when the broker refuses 5, as `collect`'s embedded one does). */
  protocolVersion?: 4 | 5 | 'auto';
  backoff?: Partial<Backoff>;
  connectTimeoutMs?: number;
  /** Warnings and connection trouble, one line each. */
  onLog: (line: string) => void;
  /** Each window as it goes into the outbox. */
  onWindow?: (w: WindowInput) => void;
}

export interface TelemetrySummary {
  url: string;
  device: string;
  fleet: string;
  stateDir: string;
  windows: number;
  /** Windows the collector acknowledged (stored) during this session (resends of older windows included). */
  acked: number;
  /** Windows left in the outbox for the next start. */
  queued: number;
  lastError?: string;
  meter: string;
}

/**
 * A device's telemetry session (see the header): birth, metric windows from what is recorded,
 * the outbox, the energy meter and a clean death on close. From a loaded bundle,
 * startDeviceTelemetry is the short way to start one.
 *
 * @example
 * ```ts
 * import { DeviceTelemetry, loadBundle } from 'edgeexit';
 * const runner = await loadBundle('bundles/branchy-rpi4');
 * const telemetry = await DeviceTelemetry.start({
 *   url: 'mqtts://broker.example:8883', fleet: 'lab', device: 'pi-07', bundle: runner.source, manifest: runner.manifest,
 *   tls: { ca: 'ca.pem' }, windowMs: 30_000, onLog: console.error,
 * });
 * telemetry.record({ exit: 0, stageLatencyMs: [0.3], latencyMs: 0.3 }, true);
 * console.log(await telemetry.close(5_000)); // { windows, acked, queued, … }
 * ```
 */
export class DeviceTelemetry {
  private lastError: string | undefined;
  private readonly logged = new Set<string>();

  private constructor(
    readonly publisher: TelemetryPublisher,
    readonly aggregator: WindowAggregator,
    readonly meter: EnergyMeter,
    readonly birth: BirthInfo,
    readonly info: { url: string; device: string; fleet: string; stateDir: string },
  ) {}

  static async start(opts: DeviceTelemetryOptions): Promise<DeviceTelemetry> {
    checkBrokerUrl('--telemetry', opts.url);
    const fleet = opts.fleet ?? DEFAULT_FLEET;
    const device = opts.device ?? defaultDeviceId();
    checkIdOption('--fleet', 'fleet', fleet);
    checkIdOption('--device-id', 'device', device);
    const stateDir = opts.stateDir ?? defaultStateDir(device);
    const tls = await readTls(opts.tls);
    const m = opts.manifest;

    let profile: DeviceProfile;
    const profileId = opts.profile ?? m.target.device;
    try {
      profile = await loadDeviceProfile(profileId);
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      throw new InputError(
        formatProblem({
          where: '--device',
          message: `telemetry needs a device profile for the energy sensor and power model, and '${profileId}' is not one (${err.message.split('\n')[0]})`,
          fix: 'pass --device <profile id or profile.json>',
        }),
        [],
        { cause: err },
      );
    }

    const busy = new BusyTime();
    let meter = opts.meter;
    if (!meter) {
      const found = await detectEnergyMeter({ profile, ...(opts.sysRoot ? { root: opts.sysRoot } : {}), utilisation: () => busy.utilisation() });
      if (found.warning) opts.onLog(found.warning);
      meter = found.meter;
    }

    const thresholds = opts.thresholds === undefined ? m.exitPolicy.thresholds : opts.thresholds;
    const birth: BirthInfo = {
      profile: profile.id,
      bundle: { name: m.model.name, version: m.model.version, manifestSha256: await manifestSha256(opts.bundle), precision: m.target.precision, thresholds: [...(thresholds ?? [])] },
      runtime: { edgeexit: edgeexitVersion(), node: process.versions.node, ...(onnxruntimeVersion() ? { onnxruntime: onnxruntimeVersion() } : {}) },
    };

    let self: DeviceTelemetry | undefined;
    const publisher = await TelemetryPublisher.start({
      url: opts.url,
      fleet,
      device,
      stateDir,
      birth,
      ...(opts.username !== undefined ? { username: opts.username } : {}),
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      ...(tls ? { tls } : {}),
      ...(opts.backoff ? { backoff: opts.backoff } : {}),
      ...(opts.protocolVersion ? { protocolVersion: opts.protocolVersion } : {}),
      connectTimeoutMs: opts.connectTimeoutMs ?? 5_000,
      onError: (err) => self?.noteError(err, opts.onLog),
    });
    const pending: unknown[] = [];
    let aggregator: WindowAggregator;
    try {
      aggregator = await WindowAggregator.start({
        ...windowShape(m, opts.policy),
        meter,
        busy,
        windowMs: opts.windowMs ?? DEFAULT_WINDOW_MS,
        ...(opts.maxCount !== undefined ? { maxCount: opts.maxCount } : {}),
        temperature: thermalReader(opts.sysRoot),
        onWindow: async (w) => {
          await publisher.enqueueWindow(w);
          opts.onWindow?.(w);
        },
        onError: (err) => (self ? self.noteError(err, opts.onLog) : pending.push(err)),
      });
    } catch (err) {
      await publisher.close();
      throw err;
    }
    self = new DeviceTelemetry(publisher, aggregator, meter, birth, { url: opts.url, device, fleet, stateDir });
    for (const e of pending) self.noteError(e, opts.onLog);
    return self;
  }

  /** The inference path; see WindowAggregator.add. */
  record(r: InferenceRecord, correct?: boolean): void {
    this.aggregator.add(r, correct);
  }

  /** Close the open window into the outbox. */
  flush(): Promise<void> {
    return this.aggregator.flush();
  }

  /**
   * Flush the open window, give the collector up to `drainMs` to acknowledge the outbox, then publish
   * a clean death (when connected) and close. Unacknowledged windows stay in the state dir.
   */
  async close(drainMs = DEFAULT_DRAIN_MS): Promise<TelemetrySummary> {
    await this.aggregator.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.publisher.drained(), new Promise<void>((r) => (timer = setTimeout(r, drainMs)))]);
    clearTimeout(timer);
    await this.publisher.close();
    const s = this.publisher.getStats();
    return {
      ...this.info,
      windows: this.aggregator.windowsSent,
      acked: s.acked,
      queued: s.queued,
      ...(this.lastError ? { lastError: this.lastError } : {}),
      meter: this.meter.describe(),
    };
  }

  private noteError(err: unknown, log: (line: string) => void): void {
    const msg = (err as Error)?.message ?? String(err);
    this.lastError = msg;
    // A broker that is down fails every retry the same way; one line per distinct cause is enough.
    if (this.logged.has(msg) || this.logged.size > 20) return;
    this.logged.add(msg);
    const hint = isProtocolRefusal(err) ? '; this broker refuses the MQTT version asked for: drop --mqtt-version to let the device negotiate it' : '';
    log(`telemetry: ${msg} (windows stay in the outbox; retrying${hint})`);
  }
}

/**
 * A session ended with windows the broker did not acknowledge. They are safe in the outbox, so
 * the exit code is EX_TEMPFAIL (75): the work is done, its report is not, and a retry sends it.
 *
 * @example if (summary.queued > 0) throw new TelemetryUndeliveredError('3 windows wait in the outbox');
 */
export class TelemetryUndeliveredError extends EdgeExitError {
  override readonly exitCode = 75;
}

/**
 * The error for a summary with unacknowledged windows, or undefined when all went out.
 *
 * @example const e = undeliveredError(await telemetry.close(drainMs), drainMs); if (e) throw e;
 */
export function undeliveredError(s: TelemetrySummary, drainMs: number): TelemetryUndeliveredError | undefined {
  if (s.queued === 0) return undefined;
  const outbox = path.join(s.stateDir, 'outbox');
  return new TelemetryUndeliveredError(
    formatProblem({
      where: `--telemetry ${s.url}`,
      message: `${s.queued} of the telemetry windows were not acknowledged within ${(drainMs / 1000).toFixed(1)} s${s.lastError ? ` (last error: ${s.lastError})` : ''}; they wait in ${outbox}`,
      fix: `check that the broker is up and reachable and a collector (\`edgeexit collect\`) is running, then send them with the next \`edgeexit run\` or \`edgeexit agent\` with --state-dir ${s.stateDir}, or give it longer with --drain-timeout`,
    }),
  );
}

/**
 * One line for stderr after a session: where the windows went, or where they wait.
 *
 * @example
 * ```ts
 * import { describeSummary } from 'edgeexit/telemetry';
 * console.error(describeSummary(await telemetry.close(10_000), 10_000));
 * ```
 */
export function describeSummary(s: TelemetrySummary, drainMs: number): string {
  const base = `telemetry: ${s.windows} window${s.windows === 1 ? '' : 's'} from ${s.fleet}/${s.device} to ${s.url}`;
  if (s.queued === 0) return `${base}, all acknowledged (energy: ${s.meter})`;
  return (
    `warn: ${base}: ${s.queued} not acknowledged within ${(drainMs / 1000).toFixed(1)} s` +
    `${s.lastError ? ` (last error: ${s.lastError})` : ''}; they stay in ${path.join(s.stateDir, 'outbox')} and go out on the next run or agent start with --state-dir ${s.stateDir}`
  );
}

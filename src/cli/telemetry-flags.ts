// Telemetry on the command line, shared by `run`, `agent` and the quick start: the flags (checked
// before anything is loaded, so a typo fails in milliseconds), starting a DeviceTelemetry session
// for a loaded bundle, and classifying a list of files in chunks so windows close on time while
// predictions stream into the session.
import path from 'node:path';
import type { BundleRunner, ClassifyItem, ClassifyOptions, ClassifyResult } from '../runtime/bundle-runner.js';
import type { CbnetPolicy } from '../runtime/cbnet-cascade.js';
import { DEFAULT_DRAIN_MS, DeviceTelemetry, checkBrokerUrl, checkIdOption, defaultDeviceId, parseDurationMs } from '../telemetry/device.js';
import type { WindowInput } from '../telemetry/mqtt/publisher.js';
import { InputError, formatProblem, show } from '../util/errors.js';
import { matcherFor } from '../data/labels.js';

/** The telemetry flags as yargs hands them over; telemetry is on when `telemetry` (the broker URL) is given. */
export interface TelemetryCliOptions {
  /** Broker URL. */
  telemetry?: string;
  fleet?: string;
  /** Device id in topics (default: the host name). */
  deviceId?: string;
  /** Window length, e.g. `10s` (default 10 s). */
  window?: string;
  /** Most inferences per window (default 10 000). */
  windowCount?: number;
  /** bdSeq and outbox (default .edgeexit/agent/<device id>). */
  stateDir?: string;
  username?: string;
  password?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** How long to wait at the end for the broker to acknowledge the windows (default 10 s). */
  drainTimeout?: string;
  /** MQTT protocol: 5 or 4 (3.1.1); default: 5, falling back to 3.1.1 when the broker refuses 5. */
  mqttVersion?: number;
  /** Root for /sys (energy sensors, thermal zones); tests point it at a fixture tree. */
  sysRoot?: string;
}

/** Telemetry options checked and resolved before anything is loaded, so bad flags fail fast. */
export interface TelemetryFlags {
  url: string;
  fleet?: string;
  device: string;
  windowMs?: number;
  maxCount?: number;
  stateDir?: string;
  username?: string;
  password?: string;
  tls?: { ca?: string; cert?: string; key?: string };
  drainMs: number;
  protocolVersion?: 4 | 5;
  sysRoot?: string;
}

export function telemetryFlags(o: TelemetryCliOptions & { telemetry: string }): TelemetryFlags {
  checkBrokerUrl('--telemetry', o.telemetry);
  if (o.fleet !== undefined) checkIdOption('--fleet', 'fleet', o.fleet);
  const device = o.deviceId ?? defaultDeviceId();
  checkIdOption('--device-id', 'device', device);
  if (o.windowCount !== undefined && !(Number.isSafeInteger(o.windowCount) && o.windowCount >= 1))
    throw new InputError(formatProblem({ where: '--window-count', expected: 'a positive integer', got: show(o.windowCount) }));
  if (o.mqttVersion !== undefined && o.mqttVersion !== 4 && o.mqttVersion !== 5)
    throw new InputError(formatProblem({ where: '--mqtt-version', expected: '5 (MQTT 5) or 4 (MQTT 3.1.1)', got: show(o.mqttVersion) }));
  // A password on the command line shows up in `ps`; the environment variable does not.
  const password = o.password ?? process.env.EDGEEXIT_MQTT_PASSWORD;
  return {
    url: o.telemetry,
    device,
    drainMs: o.drainTimeout !== undefined ? parseDurationMs('--drain-timeout', o.drainTimeout, 0) : DEFAULT_DRAIN_MS,
    ...(o.fleet !== undefined ? { fleet: o.fleet } : {}),
    ...(o.window !== undefined ? { windowMs: parseDurationMs('--window', o.window) } : {}),
    ...(o.windowCount !== undefined ? { maxCount: o.windowCount } : {}),
    ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}),
    ...(o.username !== undefined ? { username: o.username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(o.tlsCa || o.tlsCert || o.tlsKey ? { tls: { ca: o.tlsCa, cert: o.tlsCert, key: o.tlsKey } } : {}),
    ...(o.sysRoot !== undefined ? { sysRoot: o.sysRoot } : {}),
    ...(o.mqttVersion !== undefined ? { protocolVersion: o.mqttVersion as 4 | 5 } : {}),
  };
}

/** Start device telemetry for a loaded bundle with resolved flags. */
export function startTelemetry(
  f: TelemetryFlags,
  runner: BundleRunner,
  bundle: string,
  extra: { profile?: string; thresholds?: readonly number[] | null; policy?: CbnetPolicy; onLog: (line: string) => void; onWindow?: (w: WindowInput) => void },
): Promise<DeviceTelemetry> {
  const profile = extra.profile ?? runner.device ?? undefined;
  return DeviceTelemetry.start({
    url: f.url,
    device: f.device,
    bundle,
    manifest: runner.manifest,
    ...(f.fleet !== undefined ? { fleet: f.fleet } : {}),
    ...(f.stateDir !== undefined ? { stateDir: f.stateDir } : {}),
    ...(f.windowMs !== undefined ? { windowMs: f.windowMs } : {}),
    ...(f.maxCount !== undefined ? { maxCount: f.maxCount } : {}),
    ...(f.username !== undefined ? { username: f.username } : {}),
    ...(f.password !== undefined ? { password: f.password } : {}),
    ...(f.tls ? { tls: f.tls } : {}),
    ...(f.sysRoot !== undefined ? { sysRoot: f.sysRoot } : {}),
    ...(f.protocolVersion !== undefined ? { protocolVersion: f.protocolVersion } : {}),
    ...(profile !== undefined ? { profile } : {}),
    ...(extra.thresholds !== undefined ? { thresholds: extra.thresholds } : {}),
    ...(extra.policy ? { policy: extra.policy } : {}),
    onLog: extra.onLog,
    ...(extra.onWindow ? { onWindow: extra.onWindow } : {}),
  });
}

/**
 * The label index an ImageFolder path implies (`…/<class>/x.png`), when its folder matches one of
 * the bundle's labels under the rule eval, compile and calibrate use (src/data/labels.ts), so a
 * folder `T-shirt_top` counts for the label 'T-shirt/top' here as it does there.
 */
export function labelFromPath(file: string, labels: readonly string[]): number | undefined {
  return matcherFor(labels).indexOf(path.basename(path.dirname(file)));
}

/** Files per classify call when telemetry is on: small enough that windows close on time. */
export const TELEMETRY_CHUNK = 64;

/**
 * Classify `files` in chunks of `chunk`, handing each chunk's items to `onItems` as soon as it is
 * done, and return one result as a single classify call would (indices over all files, sums of
 * counts and timings).
 */
export async function classifyFiles(
  runner: BundleRunner,
  files: readonly string[],
  options: ClassifyOptions,
  chunk: number,
  onItems: (items: readonly ClassifyItem[]) => void,
): Promise<ClassifyResult> {
  let merged: ClassifyResult | undefined;
  for (let start = 0; start === 0 || start < files.length; start += chunk) {
    const r = await runner.classify(files.slice(start, start + chunk), options);
    const items = start === 0 ? r.items : r.items.map((it) => ({ ...it, index: it.index + start }));
    onItems(items);
    if (!merged) {
      merged = { ...r, items: [...items], exitCounts: [...r.exitCounts], timing: { ...r.timing, stageMs: [...r.timing.stageMs], ...(r.timing.runs ? { runs: r.timing.runs.map((x) => ({ ...x })) } : {}) } };
      continue;
    }
    const m = merged;
    m.items.push(...items);
    r.exitCounts.forEach((n, k) => (m.exitCounts[k]! += n));
    const t = m.timing;
    t.preprocessMs += r.timing.preprocessMs;
    t.cascadeMs += r.timing.cascadeMs;
    t.overheadMs += r.timing.overheadMs;
    t.batches += r.timing.batches;
    r.timing.stageMs.forEach((ms, k) => (t.stageMs[k]! += ms));
    for (const run of r.timing.runs ?? []) {
      const x = t.runs?.find((y) => y.name === run.name);
      if (x) {
        x.ms += run.ms;
        x.rows += run.rows;
      } else t.runs?.push({ ...run });
    }
  }
  return merged!;
}

/** Telemetry flags shared by `run` and `agent` (`--telemetry` itself is declared by each). */
export const telemetryYargsOptions = {
  fleet: { type: 'string', describe: 'Fleet id in the topics (default "default")' },
  'device-id': { type: 'string', describe: 'Device id in the topics: 1–64 of [A-Za-z0-9._-] (default: the host name)' },
  window: { type: 'string', describe: 'Metric window length, e.g. 10s, 500ms, 1m (default 10s)' },
  'window-count': { type: 'number', describe: 'Close a window early once it holds this many inferences (default 10000)' },
  'state-dir': { type: 'string', describe: 'bdSeq and the outbox of unsent windows (default .edgeexit/agent/<device id>)' },
  username: { type: 'string', describe: 'MQTT user name' },
  password: { type: 'string', describe: 'MQTT password (or set EDGEEXIT_MQTT_PASSWORD, which `ps` does not show)' },
  'tls-ca': { type: 'string', describe: 'PEM CA file to trust for mqtts:// (a private broker CA)' },
  'tls-cert': { type: 'string', describe: 'PEM client certificate for brokers that authenticate devices by certificate' },
  'tls-key': { type: 'string', describe: 'PEM key of --tls-cert' },
  'mqtt-version': { type: 'number', describe: 'MQTT protocol: 5 or 4 (3.1.1) only (default: 5, falling back to 3.1.1 when the broker refuses 5, as `edgeexit collect`\'s embedded one does)' },
  'drain-timeout': { type: 'string', describe: 'At exit, wait this long for the collector to acknowledge the windows (stored); the rest stay in the outbox and `run` exits 75 (default 10s)' },
} as const;

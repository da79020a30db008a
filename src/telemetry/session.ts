// Device telemetry from a library caller's point of view: start it from a loaded BundleRunner
// with a broker URL and little else. DeviceTelemetry.start wants the bundle path, its manifest,
// the device profile and a log sink separately because the CLI resolves each from flags; a
// program that already holds a runner has all of them in it.
import type { BundleRunner } from '../runtime/bundle-runner.js';
import { checkBrokerUrl, checkIdOption, DeviceTelemetry, type DeviceTelemetryOptions } from './device.js';

/** Options of {@link startDeviceTelemetry}: those of DeviceTelemetry.start that the runner does not already say. */
export interface StartTelemetryOptions extends Omit<DeviceTelemetryOptions, 'bundle' | 'manifest' | 'onLog'> {
  /** Warnings (e.g. no energy sensor found) and broker trouble, one line each. Default: stderr. */
  onLog?: (line: string) => void;
}

/**
 * Start publishing telemetry for a loaded bundle: birth on connect, then one metrics window every
 * `windowMs` (default 10 s) built from what you `record`, through a persistent outbox in
 * `stateDir` (default `.edgeexit/agent/<device>`), so windows survive a broker outage or a
 * restart. The device profile (energy sensor, power model) is the runner's; `device` defaults to
 * the host name and `fleet` to `default`. Call `close()` at the end: it flushes the open window
 * and waits up to 10 s for the broker to acknowledge what is queued.
 *
 * @example
 * ```ts
 * import { loadBundle, startDeviceTelemetry } from 'edgeexit';
 *
 * const runner = await loadBundle('bundles/fmnist-branchy');
 * const telemetry = await startDeviceTelemetry(runner, { url: 'mqtt://broker.local:1883', device: 'cam-01' });
 * const { items } = await runner.classify(['frame-0001.png']);
 * for (const it of items) if (it.ok) telemetry.record(it);
 * const summary = await telemetry.close(); // { windows, acked, queued, ... }
 * await runner.close();
 * ```
 */
export async function startDeviceTelemetry(runner: Pick<BundleRunner, 'source' | 'manifest' | 'device'>, options: StartTelemetryOptions): Promise<DeviceTelemetry> {
  // Checked here so that an error names this function's fields, not the CLI's flags.
  checkBrokerUrl('url', options.url);
  if (options.fleet !== undefined) checkIdOption('fleet', 'fleet', options.fleet);
  if (options.device !== undefined) checkIdOption('device', 'device', options.device);
  const profile = options.profile ?? runner.device ?? undefined;
  return DeviceTelemetry.start({
    ...options,
    bundle: runner.source,
    manifest: runner.manifest,
    ...(profile !== undefined ? { profile } : {}),
    onLog: options.onLog ?? ((line) => void process.stderr.write(line + '\n')),
  });
}

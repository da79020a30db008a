// The latest flash job state each device reported, kept by the collector from the retained
// job/state messages it receives anyway on its namespace subscription. In memory, not in the
// fleet database: the broker retains every device's last state, so a restarted collector has them
// all again the moment it subscribes.
import { decodeJobState, type JobStateReport } from '../agent/job-protocol.js';
import type { MqttMessage } from '../telemetry/mqtt/client.js';
import { parseTopic } from '../telemetry/payloads.js';

/** Devices whose job state is kept at most (a bound on memory, whatever the broker sends). */
export const MAX_JOB_DEVICES = 100_000;

export interface DeviceJobState extends JobStateReport {
  fleet: string;
  device: string;
}

/**
 * Latest job state per device.
 *
 * @example
 * ```ts
 * import { JobStates } from 'edgeexit/fleet';
 * const jobs = new JobStates();
 * conn.onMessage((m) => jobs.take(m));
 * jobs.all(); // [{ fleet: 'lab', device: 'pi-07', state: 'succeeded', … }]
 * ```
 */
export class JobStates {
  private readonly byDevice = new Map<string, DeviceJobState>();

  /** Keep `m` if it is a job/state message; true for every job/state or job/desired topic (not telemetry). */
  take(m: MqttMessage): boolean {
    // Every telemetry message passes here first: a job topic has a `job` level, so the rest skip parsing.
    if (!m.topic.includes('/job/')) return false;
    const t = parseTopic(m.topic);
    if (!t || (t.kind !== 'job/state' && t.kind !== 'job/desired')) return false;
    if (t.kind === 'job/desired') return true;
    const key = `${t.fleet}/${t.device}`;
    // An empty retained message clears the topic: the device is gone from the job view.
    if (m.payload.length === 0) return (this.byDevice.delete(key), true);
    const s = decodeJobState(m.payload);
    if (!s) return true;
    if (!this.byDevice.has(key) && this.byDevice.size >= MAX_JOB_DEVICES) return true;
    this.byDevice.set(key, { fleet: t.fleet, device: t.device, ...s });
    return true;
  }

  get(fleet: string, device: string): DeviceJobState | undefined {
    return this.byDevice.get(`${fleet}/${device}`);
  }

  all(): DeviceJobState[] {
    return [...this.byDevice.values()].sort((a, b) => `${a.fleet}/${a.device}`.localeCompare(`${b.fleet}/${b.device}`));
  }
}

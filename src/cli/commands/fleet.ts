// `edgeexit fleet status [--db file] [--json]`: what `edgeexit collect` has recorded, one row per
// device. Reads the database only; it refuses to create one where none exists.
import { fleetStatus, type FleetStatus } from '../../fleet/status.js';
import { openFleetStore } from '../../fleet/store.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { pct, table } from '../format.js';
import { safeText } from '../../util/safe-text.js';
import { DEFAULT_DB } from './collect.js';

export interface FleetStatusOptions {
  db?: string;
  json?: boolean;
}

export async function fleetStatusCommand(opts: FleetStatusOptions, io: CliIO): Promise<FleetStatus> {
  const store = openFleetStore(opts.db ?? DEFAULT_DB, { mustExist: true });
  let s: FleetStatus;
  try {
    s = fleetStatus(store);
  } finally {
    store.close();
  }
  if (opts.json) io.out(JSON.stringify(s, null, 2));
  else io.out(renderFleetStatus(s));
  return s;
}

export function renderFleetStatus(s: FleetStatus): string {
  if (s.devices.length === 0) return 'no devices recorded yet';
  // Bundle names and versions are whatever the device's birth said: one inert line each.
  const rows = s.devices.map((d) => [
    safeText(d.device),
    d.online ? 'online' : 'offline',
    d.bundle ? safeText(`${d.bundle.name} ${d.bundle.version}`) : '-',
    d.p95LatencyMs === null ? '-' : d.p95LatencyMs.toFixed(1),
    d.exitRates.length ? d.exitRates.map((r) => pct(r, 0)).join(' / ') : '-',
    d.joulesPerInference === null ? '-' : d.joulesPerInference.toFixed(3),
    d.accuracy === null ? '-' : pct(d.accuracy, 1),
    d.temperatureC === null ? '-' : d.temperatureC.toFixed(1),
    isoOrDash(d.lastSeen),
  ]);
  const c = Object.entries(s.counters)
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return `${table(['device', 'status', 'bundle', 'p95 ms', 'exit rates', 'J/inference', 'accuracy', 'temp °C', 'last seen'], rows)}\n\ncounters  ${c || 'none'}`;
}

function isoOrDash(ms: number): string {
  const t = new Date(ms);
  return Number.isNaN(t.getTime()) ? '-' : t.toISOString();
}

function fleetStatusModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('db', { type: 'string', describe: 'Fleet database file', default: DEFAULT_DB })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' }),
    handler: async (args: FleetStatusOptions) => {
      await fleetStatusCommand(args, io);
    },
  });
}

export function fleetModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .command({
          command: 'status',
          describe: 'One row per device: online, bundle, p95 latency, exit rates, J per inference, accuracy, temperature, last seen',
          ...fleetStatusModule(io),
        })
        .demandCommand(1, 'Name a fleet subcommand, e.g. `edgeexit fleet status`.'),
    // The subcommand's handler does the work; `fleet` alone is refused by demandCommand.
    handler: async (_args: object) => undefined,
  });
}

// `edgeexit fleet status [--db file] [--json]`: what `edgeexit collect` has recorded, one row per
// device. Reads the database only; it refuses to create one where none exists.
// `fleet broker-config`, `fleet enroll`, `fleet revoke`: the Mosquitto configuration, per-device
// and collector credentials and the topic ACL (src/fleet/broker-auth.ts, docs/security.md).
import {
  DEFAULT_BROKER_DIR,
  DEFAULT_BROKER_LISTEN,
  collectorPrincipal,
  enrol,
  parseDeviceRef,
  revoke,
  writeBrokerConfig,
  type EnrolResult,
  type Principal,
} from '../../fleet/broker-auth.js';
import { parseHttpListen } from '../../fleet/http.js';
import { fleetStatus, type FleetStatus } from '../../fleet/status.js';
import { openStore } from '../../fleet/open.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { pct, table } from '../format.js';
import { safeText } from '../../util/safe-text.js';
import { InputError, formatProblem } from '../../util/errors.js';
import { DEFAULT_DB } from './collect.js';

export interface FleetStatusOptions {
  db?: string;
  json?: boolean;
}

export async function fleetStatusCommand(opts: FleetStatusOptions, io: CliIO): Promise<FleetStatus> {
  const store = await openStore(opts.db ?? DEFAULT_DB, { mustExist: true });
  let s: FleetStatus;
  try {
    s = await fleetStatus(store);
  } finally {
    await store.close();
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

export interface EnrolOptions {
  /** `<fleet>/<device>`; or leave it out and name a collector. */
  device?: string;
  collector?: string;
  dir?: string;
  rotate?: boolean;
  /** Broker URL shown in the device's command line. */
  broker?: string;
  json?: boolean;
}

function principalOf(where: string, o: { device?: string; collector?: string }): Principal {
  if ((o.device === undefined) === (o.collector === undefined))
    throw new InputError(formatProblem({ where, expected: 'a device as <fleet>/<device>, or --collector <name>', got: o.device === undefined ? 'neither' : 'both', fix: `e.g. \`edgeexit fleet ${where} lab/pi-07\`` }));
  return o.device !== undefined ? parseDeviceRef(o.device) : collectorPrincipal(o.collector!);
}

/** `fleet enroll`: issue a credential and print what its holder needs (the password only here). */
export async function fleetEnrolCommand(opts: EnrolOptions, io: CliIO): Promise<EnrolResult> {
  const who = principalOf('enroll', opts);
  const r = await enrol(opts.dir ?? DEFAULT_BROKER_DIR, who, { rotate: opts.rotate ?? false });
  const broker = opts.broker ?? `mqtt://<broker-host>:${DEFAULT_BROKER_LISTEN.port}`;
  const flags =
    who.kind === 'device'
      ? `--telemetry ${broker} --fleet ${who.fleet} --device-id ${who.device} --username ${r.username}`
      : `--broker ${broker} --username ${r.username}`;
  if (opts.json) {
    io.out(JSON.stringify({ username: r.username, password: r.password, passwordFile: r.passwordFile, aclFile: r.aclFile, rotated: r.rotated, flags }, null, 2));
    return r;
  }
  const cmd = who.kind === 'device' ? `edgeexit agent <bundle> --watch <folder> ${flags}` : `edgeexit collect ${flags}`;
  io.out(
    [
      `${r.rotated ? 'rotated' : 'enrolled'} ${who.kind} ${r.username} in ${r.passwordFile} (ACL ${r.aclFile})`,
      `  username  ${r.username}`,
      `  password  ${r.password}`,
      '  (shown once: only its hash is stored; enrol again with --rotate if it is lost)',
      'reload the broker to apply: kill -HUP <mosquitto pid>, or systemctl reload mosquitto',
      `on the ${who.kind === 'device' ? 'device' : 'collector host'} (the environment variable keeps the password out of \`ps\`):`,
      `  EDGEEXIT_MQTT_PASSWORD='${r.password}' ${cmd}`,
    ].join('\n'),
  );
  return r;
}

/** `fleet revoke`: remove a credential; exit 2 when it was not enrolled. */
export async function fleetRevokeCommand(opts: { device?: string; collector?: string; dir?: string }, io: CliIO): Promise<void> {
  const who = principalOf('revoke', opts);
  const dir = opts.dir ?? DEFAULT_BROKER_DIR;
  const name = who.kind === 'device' ? `${who.fleet}/${who.device}` : who.name;
  if (!(await revoke(dir, who)))
    throw new InputError(formatProblem({ where: dir, message: `${name} is not enrolled here`, fix: 'check --dir and the name (`<fleet>/<device>` or --collector <name>)' }));
  io.out(`revoked ${who.kind} ${name}; reload the broker to apply (kill -HUP <mosquitto pid>, or systemctl reload mosquitto): Mosquitto 2 then disconnects it`);
}

/** `fleet broker-config`: mosquitto.conf and acl (passwd kept) in one folder. */
export async function fleetBrokerConfigCommand(opts: { dir?: string; listen?: string }, io: CliIO): Promise<void> {
  const listen = opts.listen !== undefined ? parseListen(opts.listen) : DEFAULT_BROKER_LISTEN;
  const f = await writeBrokerConfig(opts.dir ?? DEFAULT_BROKER_DIR, { listen });
  io.out(
    [
      `wrote ${f.conf} (listener ${listen.host}:${listen.port}, no anonymous clients), ${f.acl}; credentials in ${f.passwd}`,
      'next: `edgeexit fleet enroll --collector collector`, `edgeexit fleet enroll <fleet>/<device>` per device,',
      `then: mosquitto -c ${f.conf}   (the broker's user must be able to read ${f.passwd})`,
    ].join('\n'),
  );
}

function parseListen(v: string): { host: string; port: number } {
  try {
    const l = parseHttpListen(v);
    if (l) return l;
  } catch {
    // reworded below for this flag
  }
  throw new InputError(formatProblem({ where: '--listen', expected: 'host:port or a port, e.g. 127.0.0.1:1883', got: JSON.stringify(v) }));
}

function fleetStatusModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('db', { type: 'string', describe: 'Fleet database: a SQLite file, or a postgres:// URL', default: DEFAULT_DB })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' }),
    handler: async (args: FleetStatusOptions) => {
      await fleetStatusCommand(args, io);
    },
  });
}

function fleetEnrolModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('device', { type: 'string', describe: 'The device as <fleet>/<device>, e.g. lab/pi-07 (its MQTT username)' })
        .option('collector', { type: 'string', describe: 'Enrol a collector with this name instead (reads every fleet)' })
        .option('dir', { type: 'string', describe: 'Folder with the broker files (passwd, acl)', default: DEFAULT_BROKER_DIR })
        .option('rotate', { type: 'boolean', describe: 'Replace an existing credential with a new password' })
        .option('broker', { type: 'string', describe: 'Broker URL to show in the printed command line' })
        .option('json', { type: 'boolean', describe: 'Machine-readable output (holds the password)' }),
    handler: async (args: EnrolOptions) => {
      await fleetEnrolCommand(args, io);
    },
  });
}

function fleetRevokeModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('device', { type: 'string', describe: 'The device as <fleet>/<device>' })
        .option('collector', { type: 'string', describe: 'Revoke this collector instead' })
        .option('dir', { type: 'string', describe: 'Folder with the broker files (passwd, acl)', default: DEFAULT_BROKER_DIR }),
    handler: async (args: { device?: string; collector?: string; dir?: string }) => {
      await fleetRevokeCommand(args, io);
    },
  });
}

function fleetBrokerConfigModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('dir', { type: 'string', describe: 'Folder for mosquitto.conf, acl and passwd', default: DEFAULT_BROKER_DIR })
        .option('listen', { type: 'string', describe: 'Plain MQTT listener host:port', default: `${DEFAULT_BROKER_LISTEN.host}:${DEFAULT_BROKER_LISTEN.port}` }),
    handler: async (args: { dir?: string; listen?: string }) => {
      await fleetBrokerConfigCommand(args, io);
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
        .command({
          command: 'enroll [device]',
          describe: 'Issue an MQTT credential for a device (<fleet>/<device>) or a collector (--collector name) and print what it needs',
          ...fleetEnrolModule(io),
        })
        .command({
          command: 'revoke [device]',
          describe: 'Remove the MQTT credential of a device (<fleet>/<device>) or a collector (--collector name)',
          ...fleetRevokeModule(io),
        })
        .command({
          command: 'broker-config',
          describe: 'Write a Mosquitto configuration for the fleet: mosquitto.conf (no anonymous clients, loopback listener) and the topic ACL',
          ...fleetBrokerConfigModule(io),
        })
        .demandCommand(1, 'Name a fleet subcommand, e.g. `edgeexit fleet status`.'),
    // The subcommand's handler does the work; `fleet` alone is refused by demandCommand.
    handler: async (_args: object) => undefined,
  });
}

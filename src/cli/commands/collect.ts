// `edgeexit collect [--broker url] [--db file] [--port 1883] [--http 127.0.0.1:9464]`: run the
// fleet collector until SIGINT/SIGTERM (or the given AbortSignal). Without --broker an embedded
// MQTT broker is started on --port so devices can publish to this machine with nothing else
// installed; --http serves Prometheus /metrics and the dashboard.
import { startCollector, type Collector } from '../../fleet/collector.js';
import { DEFAULT_HTTP, parseHttpListen } from '../../fleet/http.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { untilStopped } from '../signals.js';
import { readTls } from '../../telemetry/device.js';
import { InputError, formatProblem } from '../../util/errors.js';

export const DEFAULT_DB = 'fleet.db';

export interface CollectOptions {
  broker?: string;
  db?: string;
  port?: number;
  fleet?: string;
  retentionDays?: number;
  /** `host:port`, a port, or `off`. The CLI defaults it to 127.0.0.1:9464; left out here it is off,
   *  so programmatic and test callers never contend for the fixed port. */
  http?: string | false;
  /** For a --broker that wants them; the password may come from EDGEEXIT_MQTT_PASSWORD instead. */
  username?: string;
  password?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** Collect until `signal` aborts; resolves with the final counters once everything is closed. */
export async function collectCommand(opts: CollectOptions, io: CliIO, signal: AbortSignal): Promise<ReturnType<Collector['counters']>> {
  // `--no-http` reaches here as false.
  const http = opts.http === undefined || opts.http === false ? false : parseHttpListen(String(opts.http));
  const secured = opts.username !== undefined || opts.password !== undefined || opts.tlsCa !== undefined || opts.tlsCert !== undefined || opts.tlsKey !== undefined;
  if (secured && opts.broker === undefined) {
    throw new InputError(formatProblem({ where: '--username/--password/--tls-*', message: 'apply to --broker; the embedded broker takes anonymous connections on this machine', fix: 'pass --broker mqtts://… or leave them out' }));
  }
  // A password on the command line shows up in `ps`; the environment variable does not.
  const password = opts.password ?? (opts.broker !== undefined ? process.env.EDGEEXIT_MQTT_PASSWORD : undefined);
  const tls = await readTls({ ca: opts.tlsCa, cert: opts.tlsCert, key: opts.tlsKey });
  const c = await startCollector({
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(tls ? { tls } : {}),
    http,
    dbFile: opts.db ?? DEFAULT_DB,
    onLog: (line) => io.err(line),
    ...(opts.broker !== undefined ? { brokerUrl: opts.broker } : { port: opts.port ?? 1883 }),
    ...(opts.fleet !== undefined ? { fleet: opts.fleet } : {}),
    ...(opts.retentionDays !== undefined ? { retentionDays: opts.retentionDays } : {}),
  });
  if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  const counters = c.counters();
  await c.close();
  io.err(`collector stopped after ${c.handled()} messages; counters ${JSON.stringify(counters)}`);
  return counters;
}

export function collectModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('broker', { type: 'string', describe: 'mqtt:// URL of an existing broker (default: start an embedded one)' })
        .option('db', { type: 'string', describe: 'Fleet database file', default: DEFAULT_DB })
        .option('port', { type: 'number', describe: 'Port of the embedded broker', default: 1883 })
        .option('fleet', { type: 'string', describe: 'Collect this fleet only (default: every fleet)' })
        .option('http', { type: 'string', describe: 'Serve Prometheus /metrics and the dashboard on host:port (port 0: any free one; off: none)', default: `${DEFAULT_HTTP.host}:${DEFAULT_HTTP.port}` })
        .option('retention-days', { type: 'number', describe: 'Delete windows older than this many days' })
        .option('username', { type: 'string', describe: 'MQTT user name for --broker' })
        .option('password', { type: 'string', describe: 'MQTT password for --broker (or set EDGEEXIT_MQTT_PASSWORD, which `ps` does not show)' })
        .option('tls-ca', { type: 'string', describe: 'PEM CA file to trust for an mqtts:// --broker' })
        .option('tls-cert', { type: 'string', describe: 'PEM client certificate, for brokers that authenticate by certificate' })
        .option('tls-key', { type: 'string', describe: 'PEM key of --tls-cert' })
        .example('$0 collect --db fleet.db', 'embedded broker on :1883, telemetry into fleet.db, dashboard on http://127.0.0.1:9464/'),
    handler: async (args: CollectOptions) => {
      await untilStopped((signal) => collectCommand(args, io, signal));
    },
  });
}

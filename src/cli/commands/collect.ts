// `edgeexit collect [--broker url] [--db file] [--port 1883] [--listen 127.0.0.1] [--http 127.0.0.1:9464]`:
// run the fleet collector until SIGINT/SIGTERM (or the given AbortSignal). Without --broker an
// embedded MQTT broker is started on --listen:--port so devices can publish to this machine with
// nothing else installed (loopback unless --listen says otherwise, and then only with
// --username/--password); --http serves Prometheus /metrics and the dashboard.
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
  /** Address of the embedded broker (default 127.0.0.1); any other needs username and password. */
  listen?: string;
  fleet?: string;
  /** Seconds a device clock may run ahead of this machine's (default 300). */
  maxSkew?: number;
  /** Bearer token the HTTP server requires; EDGEEXIT_HTTP_TOKEN works too (and stays out of `ps`). */
  httpToken?: string;
  /** Extra names the HTTP server answers to (the Host header), e.g. the machine's DNS name. */
  httpAllowHost?: string[];
  retentionDays?: number;
  /** MQTT client id: fixed, so a restarted collector resumes its persistent session (default: from host name and --db). */
  clientId?: string;
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
  const listen = opts.http === undefined || opts.http === false ? false : parseHttpListen(String(opts.http));
  const token = opts.httpToken ?? process.env.EDGEEXIT_HTTP_TOKEN;
  const http = listen && { ...listen, ...(token ? { token } : {}), ...(opts.httpAllowHost?.length ? { allowedHosts: opts.httpAllowHost } : {}) };
  const tlsGiven = opts.tlsCa !== undefined || opts.tlsCert !== undefined || opts.tlsKey !== undefined;
  if (tlsGiven && opts.broker === undefined) {
    throw new InputError(formatProblem({ where: '--tls-*', message: 'apply to --broker; the embedded broker speaks plain MQTT', fix: 'pass --broker mqtts://… or leave them out' }));
  }
  if (opts.listen !== undefined && opts.broker !== undefined) {
    throw new InputError(formatProblem({ where: '--listen', message: 'sets the embedded broker\'s address; with --broker none is started', fix: 'leave out --listen or --broker' }));
  }
  if (opts.maxSkew !== undefined && !(Number.isFinite(opts.maxSkew) && opts.maxSkew >= 0)) {
    throw new InputError(formatProblem({ where: '--max-skew', expected: 'seconds ≥ 0', got: String(opts.maxSkew), fix: 'pass --max-skew 300' }));
  }
  // A password on the command line shows up in `ps`; the environment variable does not.
  // For the embedded broker, user name and password are what it requires of every client.
  const password = opts.password ?? (opts.broker !== undefined || opts.username !== undefined ? process.env.EDGEEXIT_MQTT_PASSWORD : undefined);
  if (opts.broker === undefined && (opts.username === undefined) !== (password === undefined)) {
    throw new InputError(formatProblem({ where: opts.username === undefined ? '--password' : '--username', message: 'the embedded broker needs both a user name and a password to require them', fix: 'pass --username <name> and set EDGEEXIT_MQTT_PASSWORD (or --password)' }));
  }
  const tls = await readTls({ ca: opts.tlsCa, cert: opts.tlsCert, key: opts.tlsKey });
  const c = await startCollector({
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(tls ? { tls } : {}),
    http,
    dbFile: opts.db ?? DEFAULT_DB,
    onLog: (line) => io.err(line),
    ...(opts.broker !== undefined ? { brokerUrl: opts.broker } : { port: opts.port ?? 1883, ...(opts.listen !== undefined ? { host: opts.listen } : {}) }),
    ...(opts.maxSkew !== undefined ? { limits: { maxFutureSkewMs: opts.maxSkew * 1000 } } : {}),
    ...(opts.fleet !== undefined ? { fleet: opts.fleet } : {}),
    ...(opts.retentionDays !== undefined ? { retentionDays: opts.retentionDays } : {}),
    ...(opts.clientId !== undefined ? { clientId: opts.clientId } : {}),
  });
  if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  const counters = await c.counters();
  await c.close();
  io.err(`collector stopped after ${c.handled()} messages; counters ${JSON.stringify(counters)}`);
  return counters;
}

export function collectModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('broker', { type: 'string', describe: 'mqtt:// URL of an existing broker (default: start an embedded one)' })
        .option('db', { type: 'string', describe: 'Fleet database: a SQLite file, or a postgres:// URL (several collectors may share one)', default: DEFAULT_DB })
        .option('port', { type: 'number', describe: 'Port of the embedded broker', default: 1883 })
        .option('listen', { type: 'string', describe: 'Address of the embedded broker (default 127.0.0.1; any other needs --username and --password)' })
        .option('max-skew', { type: 'number', describe: 'Seconds a device clock may run ahead of this one; later timestamps are refused and counted (default 300)' })
        .option('fleet', { type: 'string', describe: 'Collect this fleet only (default: every fleet)' })
        .option('http', { type: 'string', describe: 'Serve Prometheus /metrics and the dashboard on host:port (port 0: any free one; off: none)', default: `${DEFAULT_HTTP.host}:${DEFAULT_HTTP.port}` })
        .option('http-token', { type: 'string', describe: 'Token the HTTP server requires (Authorization: Bearer, or open /?token=… once); or set EDGEEXIT_HTTP_TOKEN' })
        .option('http-allow-host', { type: 'string', array: true, describe: 'Another name the HTTP server answers to in the Host header (default: its address and localhost)' })
        .option('retention-days', { type: 'number', describe: 'Delete windows older than this many days' })
        .option('client-id', { type: 'string', describe: 'MQTT client id; keep it fixed across restarts (the broker queues for it) and give each collector its own (default: from host name and --db)' })
        .option('username', { type: 'string', describe: 'MQTT user name for --broker, or the one the embedded broker requires' })
        .option('password', { type: 'string', describe: 'MQTT password to go with --username (or set EDGEEXIT_MQTT_PASSWORD, which `ps` does not show)' })
        .option('tls-ca', { type: 'string', describe: 'PEM CA file to trust for an mqtts:// --broker' })
        .option('tls-cert', { type: 'string', describe: 'PEM client certificate, for brokers that authenticate by certificate' })
        .option('tls-key', { type: 'string', describe: 'PEM key of --tls-cert' })
        .example('$0 collect --db fleet.db', 'embedded broker on 127.0.0.1:1883, telemetry into fleet.db, dashboard on http://127.0.0.1:9464/')
        .example('EDGEEXIT_MQTT_PASSWORD=… $0 collect --listen 0.0.0.0 --username fleet', 'embedded broker for devices on the LAN, password required'),
    handler: async (args: CollectOptions) => {
      await untilStopped((signal) => collectCommand(args, io, signal));
    },
  });
}

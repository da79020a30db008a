// The collector: one MQTT subscriber that validates every telemetry message with the shared
// wire schemas and writes it to a FleetStore. Bad input is data, not a crash: every malformed,
// invalid, oversized or misplaced message is counted in the store and logged in one line, and
// the next message is handled as usual.
//
// Policies:
// - Metrics from a device with no birth on record are stored (the birth may predate this
//   collector) and counted under `unknownDevice`; nothing a device sent is thrown away.
// - A death marks the device offline only when its bdSeq is the current session's: the broker
//   can deliver an old session's last will after the new session's birth.
// - With MQTT 5 the subscription is shared ($share/edgeexit-collectors/…), so several collectors
//   split the load; brokers that refuse MQTT 5 get a plain subscription over 3.1.1.
// - A persistent MQTT session under a fixed client id (by default derived from host and database
//   path): while the collector is down (crashed, or the connection lost) the broker queues its
//   messages, and redelivers any it did not PUBACK; close() ends the session (MQTT 5). Mosquitto keeps at most `max_queued_messages` (default 1000) per client and drops
//   the rest: raise it for the collector (README: collector deployment). What it drops is not
//   lost (devices resend windows the collector has not acked) but costs resends.
// - Writes are batched, one transaction per batch (src/fleet/ingest.ts). After each commit the
//   stored windows are acked to their devices on `…/<device>/ack` (publisher.ts); a birth or death
//   is committed before its PUBACK, so the broker redelivers it if the collector dies first.
//   `handled()` counts committed messages.
// - With no brokerUrl an embedded aedes broker is started (MQTT 3.1.1 only, so a plain
//   subscription), so the quick start needs no broker install. It listens on 127.0.0.1 unless
//   told another host, and on any other host it requires a user name and password from every
//   client: an open broker on the LAN would let anyone speak for any device.
// - Schema-valid messages are also checked against limits (src/fleet/bounds.ts); each refusal
//   is counted under its reason.
import { createHash, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Aedes } from 'aedes';
import { connectMqtt, type MqttConnection, type MqttMessage, type MqttTls } from '../telemetry/mqtt/client.js';
import { DEFAULT_BACKOFF, backoffDelay, type Backoff } from '../telemetry/mqtt/publisher.js';
import { MAX_ACK_IDS, subscriptionFor, topicFor } from '../telemetry/payloads.js';
import { EdgeExitError, InputError, formatProblem } from '../util/errors.js';
import type { Limits } from './bounds.js';
import type { Counters, FleetStore } from './fleet-store.js';
import { openStore, storeKind } from './open.js';
import { BatchedIngest, IngestGuard, PG_BATCH, type BatchOptions, type SettledWindows } from './ingest.js';
import { startFleetHttp, type FleetHttpServer, type HttpListen } from './http.js';

export const SHARE_GROUP = 'edgeexit-collectors';

export interface CollectorOptions {
  /** mqtt:// URL of an existing broker; omit to start an embedded one. */
  brokerUrl?: string;
  /** SQLite file, or a postgres:// URL (src/fleet/open.ts). */
  dbFile: string;
  /** Collect one fleet only (default: every fleet). */
  fleet?: string;
  /** Port of the embedded broker (default 1883; 0 picks a free one). */
  port?: number;
  /** Host the embedded broker listens on (default 127.0.0.1; any other needs username and password). */
  host?: string;
  clientId?: string;
  /** Credentials and TLS for a broker that wants them; for the embedded broker, username and password are what it requires of every client. */
  username?: string;
  password?: string;
  tls?: MqttTls;
  /** Reconnect delays after the broker connection drops. */
  backoff?: Partial<Backoff>;
  /** Delete windows older than this many days, on start and hourly (default: keep everything). */
  retentionDays?: number;
  onLog: (line: string) => void;
  now?: () => number;
  /** How received messages are grouped into transactions (src/fleet/ingest.ts: what a crash loses; default DEFAULT_BATCH, PG_BATCH on PostgreSQL). */
  batch?: BatchOptions;
  /** Serve /metrics and the dashboard here (src/fleet/http.ts); off unless given. */
  http?: (HttpListen & { token?: string; allowedHosts?: readonly string[] }) | false;
  /** What the collector accepts beyond the wire schema (defaults: DEFAULT_LIMITS). */
  limits?: Partial<Limits>;
}

export interface Collector {
  /** URL devices publish to (the embedded broker's when one was started). */
  readonly url: string;
  readonly store: FleetStore;
  /** 5 when the shared subscription is in use, 4 otherwise. */
  readonly protocolVersion: 4 | 5;
  readonly subscription: string;
  /** Base URL of the HTTP server (/metrics, dashboard at /) when `http` was given. */
  readonly httpUrl: string | undefined;
  /** Messages handled and committed so far (valid or not). */
  handled(): number;
  counters(): Promise<Counters>;
  close(): Promise<void>;
}

interface EmbeddedBroker {
  url: string;
  close(): Promise<void>;
}

/** 127.0.0.1, ::1, localhost: reachable from this machine only. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1');
  return h === 'localhost' || h === '::1' || (net.isIPv4(h) && h.startsWith('127.'));
}

const sameSecret = (a: Buffer, b: Buffer): boolean => a.length === b.length && timingSafeEqual(a, b);

async function startEmbeddedBroker(port: number, host: string, auth: { username: string; password: string } | undefined): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker(
    auth
      ? {
          authenticate: (_client, username, password, done) =>
            done(null, username !== undefined && password !== undefined && sameSecret(Buffer.from(username), Buffer.from(auth.username)) && sameSecret(password, Buffer.from(auth.password))),
        }
      : {},
  );
  const server = net.createServer(aedes.handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new EdgeExitError(`embedded broker cannot listen on port ${port}: ${err.message}`, [{ where: '--port', fix: 'pick a free port or pass --broker' }], { cause: err })));
    server.listen(port, host, () => resolve());
  });
  const actual = (server.address() as net.AddressInfo).port;
  return {
    url: `mqtt://127.0.0.1:${actual}`,
    close: () =>
      new Promise<void>((resolve) => {
        aedes.close(() => server.close(() => resolve()));
        // server.close waits for open sockets; aedes.close ends its clients, so this returns promptly.
      }),
  };
}

/**
 * Start the fleet collector: subscribe to the telemetry namespace on a broker (or start an
 * embedded one), validate, de-duplicate and store every message in SQLite, and optionally serve
 * /metrics and the dashboard.
 *
 * @example
 * ```ts
 * import { startCollector } from 'edgeexit/fleet';
 * const collector = await startCollector({ dbFile: 'fleet.db', port: 1883, http: { host: '127.0.0.1', port: 9464 }, onLog: console.error });
 * console.log(`devices publish to ${collector.url}; dashboard at ${collector.httpUrl}`);
 * process.once('SIGINT', () => void collector.close());
 * ```
 */
export async function startCollector(opts: CollectorOptions): Promise<Collector> {
  const now = opts.now ?? Date.now;
  const store = await openStore(opts.dbFile);
  let embedded: EmbeddedBroker | undefined;
  let httpServer: FleetHttpServer | undefined;
  let conn: MqttConnection | undefined;
  let closing = false;
  let pruneTimer: NodeJS.Timeout | undefined;
  const log = opts.onLog;
  const filter = subscriptionFor(opts.fleet);
  const clientId = opts.clientId ?? defaultClientId(opts.dbFile);
  const backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
  // Persistent, so the broker queues while the collector is away. In a shared group the broker
  // keeps handing a persistent session its share after that collector is gone for good (seen with
  // mosquitto 2): retire a collector by connecting once with its client id and a clean session,
  // or let Mosquitto's persistent_client_expiration end it. Devices resend what sits there unacked.
  const persistentSession = true;

  // Store failures (disk full, locked file) are logged per message inside the ingest; the
  // subscriber itself never stops.
  const batch = opts.batch ?? (storeKind(opts.dbFile) === 'postgres' ? PG_BATCH : undefined);
  const ingest = new BatchedIngest(store, log, now, batch, new IngestGuard(opts.limits), (settled) => {
    for (const s of settled) sendAck(s);
  });
  const sendAck = (s: SettledWindows): void => {
    const c = conn;
    // Not connected: the device times out and resends; the duplicate is acked then.
    if (!c || c.closed) return;
    for (let i = 0; i < s.ids.length; i += MAX_ACK_IDS) {
      const payload = Buffer.from(JSON.stringify({ ids: s.ids.slice(i, i + MAX_ACK_IDS) }));
      c.publish(topicFor(s.fleet, s.device, 'ack'), payload, { qos: 1 }).catch(() => undefined);
    }
  };
  // Acks from other collectors in the group come back on the wildcard subscription: dropped unread.
  const handle = (m: MqttMessage): void => {
    if (!m.topic.endsWith('/ack')) ingest.push(m);
  };
  // A birth or death is stored before the broker hears it was received (see ingest.ts).
  const beforeAck = (m: MqttMessage): Promise<void> | undefined => {
    if (m.topic.endsWith('/birth') || m.topic.endsWith('/death')) return ingest.flush();
    return undefined;
  };

  try {
    // First, so a busy port fails the start before any broker connection is made.
    if (opts.http) {
      httpServer = await startFleetHttp({ ...opts.http, store, onLog: log, now });
      log(`dashboard at ${httpServer.url}/, Prometheus metrics at ${httpServer.url}/metrics`);
    }
    if (opts.brokerUrl === undefined) {
      const host = opts.host ?? '127.0.0.1';
      const brokerAuth = opts.username !== undefined && opts.password !== undefined ? { username: opts.username, password: opts.password } : undefined;
      if (!isLoopbackHost(host) && !brokerAuth)
      {
        const problem = { where: '--listen', expected: 'a loopback address, or --username with --password (or EDGEEXIT_MQTT_PASSWORD)', got: host, fix: `pass --listen ${host} --username <name> and set EDGEEXIT_MQTT_PASSWORD, or run Mosquitto and pass --broker` };
        throw new InputError(`the embedded broker would take anonymous connections on ${host}: ${formatProblem(problem)}`, [problem]);
      }
      embedded = await startEmbeddedBroker(opts.port ?? 1883, host, brokerAuth);
      log(`embedded MQTT broker listening on ${embedded.url.replace('127.0.0.1', host)}${brokerAuth ? ' (user name and password required)' : ''}`);
    }
    const url = opts.brokerUrl ?? embedded!.url;

    // Try MQTT 5 first (shared subscription); fall back to 3.1.1 when the broker refuses it.
    const auth = {
      ...(opts.username !== undefined ? { username: opts.username } : {}),
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      ...(opts.tls ? { tls: opts.tls } : {}),
    };
    const connect = async (): Promise<{ c: MqttConnection; v: 4 | 5 }> => {
      if (embedded) return { c: await connectMqtt({ url, clientId, protocolVersion: 4, persistentSession, onMessage: handle, beforeAck, ...auth }), v: 4 };
      try {
        return { c: await connectMqtt({ url, clientId, protocolVersion: 5, persistentSession, onMessage: handle, beforeAck, ...auth }), v: 5 };
      } catch (err) {
        log(`MQTT 5 connect to ${url} failed (${(err as Error).message}); trying MQTT 3.1.1 with a plain subscription`);
        return { c: await connectMqtt({ url, clientId, protocolVersion: 4, persistentSession, onMessage: handle, beforeAck, ...auth }), v: 4 };
      }
    };
    const first = await connect();
    const protocolVersion = first.v;
    const subscription = protocolVersion === 5 ? `$share/${SHARE_GROUP}/${filter}` : filter;

    const attach = async (c: MqttConnection): Promise<void> => {
      conn = c;
      await c.subscribe(subscription, 1);
      c.onClose((err) => {
        if (closing) return;
        log(`connection to ${url} lost${err ? `: ${err.message}` : ''}; reconnecting`);
        void reconnect();
      });
    };
    // The adapter never reconnects by itself; the collector keeps trying with backoff until closed.
    const reconnect = async (): Promise<void> => {
      for (let attempt = 0; !closing; attempt++) {
        await new Promise((r) => setTimeout(r, backoffDelay(attempt, backoff)));
        if (closing) return;
        try {
          const c = await connectMqtt({ url, clientId, protocolVersion, persistentSession, onMessage: handle, beforeAck, ...auth });
          if (closing) return void (await c.end());
          await attach(c);
          log(`reconnected to ${url}`);
          return;
        } catch (err) {
          log(`reconnect to ${url} failed: ${(err as Error).message}`);
        }
      }
    };
    await attach(first.c);
    log(`collecting ${subscription} from ${url} into ${store.file}`);

    if (opts.retentionDays !== undefined) {
      const days = opts.retentionDays;
      const prune = async (): Promise<void> => {
        const n = await store.prune(days, now());
        if (n > 0) log(`retention: deleted ${n} window${n === 1 ? '' : 's'} older than ${days} days`);
      };
      await prune();
      pruneTimer = setInterval(() => prune().catch((err: Error) => log(`retention: prune failed: ${err.message}`)), 3_600_000);
      pruneTimer.unref();
    }

    return {
      url,
      store,
      protocolVersion,
      subscription,
      httpUrl: httpServer?.url,
      handled: () => ingest.handled(),
      counters: () => store.counters(),
      async close() {
        if (closing) return;
        closing = true;
        if (pruneTimer) clearInterval(pruneTimer);
        await httpServer?.close();
        // A clean stop ends the session: in a shared group the broker would otherwise keep handing
        // this collector's share to a queue nobody reads. A crash keeps it (the broker queues).
        await conn?.end({ endSession: true });
        await embedded?.close();
        await ingest.close();
        await store.close();
      },
    };
  } catch (err) {
    closing = true;
    await httpServer?.close().catch(() => undefined);
    await conn?.end().catch(() => undefined);
    await embedded?.close().catch(() => undefined);
    await store.close();
    throw err;
  }
}

function defaultClientId(dbFile: string): string {
  const host = os.hostname().replace(/[^A-Za-z0-9._-]/g, '').slice(0, 32) || 'host';
  // A URL as given (resolving it as a path would make the id depend on the working directory).
  const db = createHash('sha256').update(/^postgres(ql)?:\/\//i.test(dbFile) ? dbFile : path.resolve(dbFile)).digest('hex').slice(0, 8);
  // Fixed across restarts, so a restarted collector resumes its persistent session. Two collectors
  // on one host and database would share it (the broker disconnects the older): pass clientId.
  return `edgeexit-collector-${host}-${db}`;
}

// The collector's HTTP side (node:http only): Prometheus `/metrics`, the fleet dashboard at `/`
// and the JSON it draws from (`/api/fleet`, `/api/devices/<id>/windows`). Read-only over the
// FleetStore. A bad request gets a 4xx that says what was wrong; no request can take the
// collector down, since the HTTP server lives in the collector's process.
//
// Two guards run before any route. The Host header must name this server (its listen address,
// localhost, or a name given with allowedHosts): a web page the operator visits could otherwise
// point its own DNS name at 127.0.0.1 (DNS rebinding) and read the fleet from the browser. And
// with a token, every request must carry it (Authorization: Bearer, or the cookie that opening
// `/?token=…` once sets, so the dashboard works in a browser).
import type { DeviceJobState } from './job-states.js';
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import { EdgeExitError, InputError } from '../util/errors.js';
import { DASHBOARD_HTML, DASHBOARD_SCRIPT } from './dashboard.js';
import type { FleetStore, WindowRow } from './fleet-store.js';
import { METRICS_CONTENT_TYPE, renderMetrics } from './metrics.js';
import { fleetStatus, type DeviceStatus } from './status.js';

/** Port 9464 is in Prometheus' exporter range; loopback unless the user says otherwise. */
export const DEFAULT_HTTP = { host: '127.0.0.1', port: 9464 } as const;
export const DEFAULT_WINDOW_LIMIT = 500;
export const MAX_WINDOW_LIMIT = 10_000;

// Same rule as topic ids (src/telemetry/payloads.ts): anything else cannot be a stored device.
const DEVICE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface HttpListen {
  host: string;
  /** 0 picks a free port. */
  port: number;
}

export interface FleetHttpOptions extends HttpListen {
  store: FleetStore;
  /** Latest flash job state per device, served at /api/jobs (the collector's JobStates). */
  jobs?: () => readonly DeviceJobState[];
  onLog: (line: string) => void;
  now?: () => number;
  /** When given, every request needs it: `Authorization: Bearer <token>`, or the cookie `/?token=<token>` sets. */
  token?: string;
  /** Host names the Host header may carry besides the listen address and localhost (e.g. the machine's DNS name). */
  allowedHosts?: readonly string[];
  /** Cap on /metrics series (src/fleet/metrics.ts DEFAULT_MAX_SERIES). */
  maxSeries?: number;
}

const TOKEN_COOKIE = 'edgeexit_token';

export interface FleetHttpServer {
  /** Base URL, e.g. http://127.0.0.1:9464 (the real port when 0 was asked for). */
  readonly url: string;
  close(): Promise<void>;
}

export interface FleetApiDevice extends DeviceStatus {
  /** Inferences per exit over every window stored, pruned ones included (exitRates as counts). */
  exits: number[];
}

export interface FleetApi {
  generatedAt: number;
  devices: FleetApiDevice[];
  counters: Awaited<ReturnType<FleetStore['counters']>>;
}

export interface WindowsApi {
  device: string;
  limit: number;
  /** Oldest first, the latest `limit` windows. */
  windows: (Pick<WindowRow, 'id' | 'windowStart' | 'windowEnd' | 'count' | 'exitHistogram' | 'joules' | 'meanWatts' | 'energySource' | 'temperatureC' | 'accuracy'> & {
    latencyMs: { p50: number; p95: number; p99: number };
    joulesPerInference: number | null;
  })[];
}

// The dashboard's one inline script is allowed by its hash, so nothing injected can run.
const SCRIPT_HASH = createHash('sha256').update(DASHBOARD_SCRIPT, 'utf8').digest('base64');
const DASHBOARD_CSP = `default-src 'none'; script-src 'sha256-${SCRIPT_HASH}'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'`;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function fleetApi(store: FleetStore, now: number): Promise<FleetApi> {
  const s = await fleetStatus(store);
  const exits = new Map((await store.totals()).map((t) => [t.device, t.exits]));
  return { generatedAt: now, devices: s.devices.map((d) => ({ ...d, exits: exits.get(d.device) ?? [] })), counters: s.counters };
}

export async function windowsApi(store: FleetStore, device: string, limit: number): Promise<WindowsApi> {
  const rows = (await store.latestWindows(device, limit)).reverse();
  return {
    device,
    limit,
    windows: rows.map((w) => ({
      id: w.id,
      windowStart: w.windowStart,
      windowEnd: w.windowEnd,
      count: w.count,
      exitHistogram: w.exitHistogram,
      latencyMs: { p50: w.latencyP50, p95: w.latencyP95, p99: w.latencyP99 },
      joules: w.joules,
      meanWatts: w.meanWatts,
      energySource: w.energySource,
      joulesPerInference: w.count > 0 ? w.joules / w.count : null,
      // Only when the device sent them (JSON.stringify would drop an undefined anyway; this keeps the object clean).
      ...(w.temperatureC !== undefined ? { temperatureC: w.temperatureC } : {}),
      ...(w.accuracy !== undefined ? { accuracy: w.accuracy } : {}),
    })),
  };
}

function parseLimit(raw: string | null): number {
  if (raw === null) return DEFAULT_WINDOW_LIMIT;
  if (!/^\d{1,6}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_WINDOW_LIMIT)
    throw new HttpError(400, `bad limit ${JSON.stringify(raw)}: expected an integer from 1 to ${MAX_WINDOW_LIMIT}, e.g. ?limit=${DEFAULT_WINDOW_LIMIT}`);
  return Number(raw);
}

function deviceParam(raw: string): string {
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, `bad device id ${JSON.stringify(raw)}: not valid percent-encoding; expected 1–64 characters [A-Za-z0-9._-] starting with a letter or digit`);
  }
  if (!DEVICE_RE.test(id)) throw new HttpError(400, `bad device id ${JSON.stringify(id)}: expected 1–64 characters [A-Za-z0-9._-] starting with a letter or digit`);
  return id;
}

interface Reply {
  status: number;
  type: string;
  body: string;
  headers?: Record<string, string>;
}

const json = (v: unknown, status = 200): Reply => ({ status, type: 'application/json; charset=utf-8', body: JSON.stringify(v) });

/** The names a Host header may carry for a server listening on `host`. */
export function allowedHostNames(host: string, extra: readonly string[] = []): Set<string> {
  const bare = (h: string) => h.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  const names = new Set(['localhost', '127.0.0.1', '::1', ...extra.map(bare)]);
  // A wildcard listen address answers on every address of the machine.
  if (host === '0.0.0.0' || host === '::' || host === '') for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) names.add(bare(a.address));
  else names.add(bare(host));
  return names;
}

/** The host part of a Host header (`name`, `name:port`, `[v6]:port`), lower case. */
function hostOf(header: string): string {
  const m = /^\[([^\]]*)\](?::\d*)?$/.exec(header) ?? /^([^:]*)(?::\d*)?$/.exec(header);
  return (m?.[1] ?? header).toLowerCase();
}

function checkAccess(req: http.IncomingMessage, url: URL, names: Set<string>, token: Buffer | undefined): Record<string, string> {
  const host = hostOf(req.headers.host ?? '');
  if (!names.has(host))
    throw new HttpError(403, `Host ${JSON.stringify(req.headers.host ?? '')} is not a name of this collector: expected one of ${[...names].slice(0, 6).join(', ')}; start it with --http-allow-host ${host || '<name>'} to allow this name`);
  if (!token) return {};
  const offered: string[] = [];
  const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (bearer) offered.push(bearer[1]!);
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === TOKEN_COOKIE) offered.push(decodeURIComponent(v.join('=')));
  }
  const query = url.pathname === '/' ? url.searchParams.get('token') : null;
  if (query !== null) offered.push(query);
  if (!offered.some((o) => sameToken(Buffer.from(o), token))) throw new HttpError(401, 'this collector wants its token: send Authorization: Bearer <token>, or open /?token=<token> once in the browser');
  // Opened with ?token=: remember it for the dashboard's own requests (HttpOnly: the page's script never sees it).
  return query !== null ? { 'Set-Cookie': `${TOKEN_COOKIE}=${encodeURIComponent(query)}; HttpOnly; SameSite=Strict; Path=/` } : {};
}

const sameToken = (a: Buffer, b: Buffer): boolean => a.length === b.length && timingSafeEqual(a, b);

async function route(method: string, rawUrl: string, store: FleetStore, now: number, maxSeries?: number, jobs?: () => readonly DeviceJobState[]): Promise<Reply> {
  const url = new URL(rawUrl, 'http://collector.invalid');
  const p = url.pathname;
  if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, `method ${method} not allowed: this server is read-only; use GET`);
  if (p === '/' || p === '/index.html') return { status: 200, type: 'text/html; charset=utf-8', body: DASHBOARD_HTML, headers: { 'Content-Security-Policy': DASHBOARD_CSP } };
  if (p === '/metrics') return { status: 200, type: METRICS_CONTENT_TYPE, body: await renderMetrics(store, maxSeries !== undefined ? { maxSeries } : {}) };
  if (p === '/api/fleet') return json(await fleetApi(store, now));
  if (p === '/api/jobs') return json({ jobs: jobs?.() ?? [] });
  const m = /^\/api\/devices\/([^/]*)\/windows$/.exec(p);
  if (m) {
    const device = deviceParam(m[1]!);
    const limit = parseLimit(url.searchParams.get('limit'));
    if (!(await store.devices()).some((d) => d.device === device))
      throw new HttpError(404, `no device ${JSON.stringify(device)} recorded: see /api/fleet for the devices this collector knows`);
    return json(await windowsApi(store, device, limit));
  }
  throw new HttpError(404, `no such path ${JSON.stringify(p)}: try / (dashboard), /metrics, /api/fleet, /api/jobs or /api/devices/<id>/windows`);
}

/**
 * Serve a fleet store over HTTP: Prometheus /metrics, the dashboard at /, and the JSON API
 * (/api/fleet, /api/devices/<id>/windows).
 *
 * @example
 * ```ts
 * import { openFleetStore, startFleetHttp } from 'edgeexit/fleet';
 * const server = await startFleetHttp({ store: openFleetStore('fleet.db', { mustExist: true }), host: '127.0.0.1', port: 0, onLog: console.error });
 * console.log(`${server.url}/metrics`);
 * ```
 */
export async function startFleetHttp(opts: FleetHttpOptions): Promise<FleetHttpServer> {
  const now = opts.now ?? Date.now;
  const names = allowedHostNames(opts.host, opts.allowedHosts);
  const token = opts.token ? Buffer.from(opts.token) : undefined;
  const server = http.createServer((req, res) => void answer(req, res));
  const answer = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    let reply: Reply;
    try {
      const extra = checkAccess(req, new URL(req.url ?? '/', 'http://collector.invalid'), names, token);
      reply = await route(method, req.url ?? '/', opts.store, now(), opts.maxSeries, opts.jobs);
      reply.headers = { ...reply.headers, ...extra };
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500;
      const message = err instanceof HttpError ? err.message : `internal error: ${(err as Error).message}`;
      if (status === 500) opts.onLog(`http: ${method} ${req.url}: ${message}`);
      const api = (req.url ?? '').startsWith('/api/');
      reply = api ? json({ error: message }, status) : { status, type: 'text/plain; charset=utf-8', body: message + '\n' };
      if (status === 405) reply.headers = { Allow: 'GET, HEAD' };
      if (status === 401) reply.headers = { 'WWW-Authenticate': 'Bearer' };
    }
    const body = Buffer.from(reply.body, 'utf8');
    res.writeHead(reply.status, {
      'Content-Type': reply.type,
      'Content-Length': String(body.length),
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      ...reply.headers,
    });
    res.end(method === 'HEAD' ? undefined : body);
  };
  // Garbage on the socket (not HTTP at all, oversized headers) is answered, never thrown.
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = `${opts.host}:${opts.port}`;
      const why = err.code === 'EADDRINUSE' ? `port ${opts.port} is in use` : err.code === 'EADDRNOTAVAIL' ? `${opts.host} is not an address of this machine` : err.message;
      reject(new EdgeExitError(`collector HTTP server cannot listen on ${where}: ${why}`, [{ where: '--http', got: where, fix: 'pass --http <host>:<free port> (port 0 picks one) or --http off' }], { cause: err }));
    });
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address() as net.AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // A dashboard tab keeps a keep-alive socket open; close would wait for it otherwise.
        server.closeAllConnections();
      }),
  };
}

/**
 * `--http` value: `host:port`, `[v6]:port`, a bare port (loopback) or `off`.
 *
 * @example
 * ```ts
 * import { parseHttpListen } from 'edgeexit/fleet';
 * parseHttpListen('0.0.0.0:9464'); // { host: '0.0.0.0', port: 9464 }
 * parseHttpListen('9464'); // { host: '127.0.0.1', port: 9464 }
 * parseHttpListen('off'); // false
 * ```
 */
export function parseHttpListen(value: string): HttpListen | false {
  const v = value.trim();
  if (v === 'off' || v === 'false' || v === 'none') return false;
  const m = /^(?:(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]*)):)?(\d{1,5})$/.exec(v);
  if (!m || Number(m[3]) > 65535)
    throw new InputError(`--http ${JSON.stringify(value)} is not a listen address`, [
      { where: '--http', expected: 'host:port (e.g. 127.0.0.1:9464, 0.0.0.0:9464, [::1]:9464), a port, or off', got: JSON.stringify(value), fix: `pass --http ${DEFAULT_HTTP.host}:${DEFAULT_HTTP.port}` },
    ]);
  return { host: m[1] ?? (m[2] || DEFAULT_HTTP.host), port: Number(m[3]) };
}

// The collector's HTTP side (node:http only): Prometheus `/metrics`, the fleet dashboard at `/`
// and the JSON it draws from (`/api/table`, `/api/fleet`, `/api/rollouts`, `/api/devices/<id>/windows`). Read-only over the
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
import { MAX_ROLLOUTS_LIMIT, rolloutsApi } from './rollouts-api.js';
import { fleetStatus, type DeviceStatus, type FleetStatus } from './status.js';

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
  /** Devices recorded; `devices` is the page [offset, offset + limit) of them, in device order. */
  total: number;
  offset: number;
  limit: number;
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

export const DEFAULT_TABLE_LIMIT = 100;
export const MAX_TABLE_LIMIT = 500;
export const TABLE_SORT_KEYS = ['device', 'fleet', 'class', 'bundle', 'online', 'p95', 'exit0', 'jpi', 'accuracy', 'temperature', 'lastSeen', 'inferences'] as const;
export type TableSortKey = (typeof TABLE_SORT_KEYS)[number];

export interface TableQuery {
  sort: TableSortKey;
  dir: 'asc' | 'desc';
  /** Case-insensitive substring of device, fleet, class or bundle. */
  q: string;
  deviceClass?: string;
  online?: boolean;
  /** Only devices of a class that drifts. */
  drifting?: boolean;
  offset: number;
  limit: number;
}

/** Per hardware class, over the devices the filter kept: counts, and sums turned into pooled rates. */
export interface ClassAggregate {
  deviceClass: string | null;
  devices: number;
  online: number;
  inferences: number;
  /** Mean over the class's devices of each one's recent p95 (null when none has a window). */
  meanP95Ms: number | null;
  /** Highest device p95 in the class. */
  maxP95Ms: number | null;
  /** Exits summed over inferences summed (the class as one device). */
  exitRates: number[];
  joulesPerInference: number | null;
  accuracy: number | null;
  maxTemperatureC: number | null;
  drifting: boolean;
}

export interface TableApi {
  generatedAt: number;
  /** Devices recorded; `matched` of them pass the filter; `rows` is one page of those, sorted. */
  total: number;
  matched: number;
  offset: number;
  limit: number;
  sort: TableSortKey;
  dir: 'asc' | 'desc';
  rows: FleetApiDevice[];
  classes: ClassAggregate[];
  /** Every class name recorded, for the filter's choices. */
  classNames: string[];
  drift: FleetStatus['drift'];
  counters: FleetApi['counters'];
}

const sortValue = (d: FleetApiDevice, k: TableSortKey): string | number | null => {
  switch (k) {
    case 'device': return d.device;
    case 'fleet': return d.fleet;
    case 'class': return d.deviceClass;
    case 'bundle': return d.bundle ? `${d.bundle.name} ${d.bundle.version}` : null;
    case 'online': return d.online ? 1 : 0;
    case 'p95': return d.p95LatencyMs;
    case 'exit0': return d.exitRates.length ? d.exitRates[0]! : null;
    case 'jpi': return d.joulesPerInference;
    case 'accuracy': return d.accuracy;
    case 'temperature': return d.temperatureC;
    case 'lastSeen': return d.lastSeen;
    case 'inferences': return d.inferences;
  }
};

function compareRows(k: TableSortKey, dir: 'asc' | 'desc'): (a: FleetApiDevice, b: FleetApiDevice) => number {
  const sign = dir === 'asc' ? 1 : -1;
  return (a, b) => {
    const x = sortValue(a, k);
    const y = sortValue(b, k);
    // Missing values last in either direction: a device with no window is not "fastest".
    if (x === null || y === null) return x === y ? a.device.localeCompare(b.device) : x === null ? 1 : -1;
    const c = typeof x === 'string' ? x.localeCompare(y as string) : x - (y as number);
    return c !== 0 ? sign * c : a.device.localeCompare(b.device);
  };
}

function aggregate(cls: string | null, ds: readonly FleetApiDevice[], drifting: boolean): ClassAggregate {
  const p95s = ds.map((d) => d.p95LatencyMs).filter((v): v is number => v !== null);
  const temps = ds.map((d) => d.temperatureC).filter((v): v is number => v !== null);
  const inferences = ds.reduce((a, d) => a + d.inferences, 0);
  const joules = ds.reduce((a, d) => a + d.joules, 0);
  const labelled = ds.reduce((a, d) => a + d.labelled, 0);
  const correct = ds.reduce((a, d) => a + d.correct, 0);
  const exits: number[] = [];
  for (const d of ds) d.exits.forEach((n, k) => (exits[k] = (exits[k] ?? 0) + n));
  return {
    deviceClass: cls,
    devices: ds.length,
    online: ds.filter((d) => d.online).length,
    inferences,
    meanP95Ms: p95s.length ? p95s.reduce((a, b) => a + b, 0) / p95s.length : null,
    maxP95Ms: p95s.length ? Math.max(...p95s) : null,
    exitRates: inferences > 0 ? Array.from(exits, (n) => (n ?? 0) / inferences) : [],
    joulesPerInference: inferences > 0 ? joules / inferences : null,
    accuracy: labelled > 0 ? correct / labelled : null,
    maxTemperatureC: temps.length ? Math.max(...temps) : null,
    drifting,
  };
}

/**
 * One page of the device table, sorted and filtered on the server so a reply stays bounded
 * (`limit` ≤ MAX_TABLE_LIMIT rows) however large the fleet, with per-class aggregates over every
 * device the filter kept.
 *
 * @example
 * ```ts
 * import { openFleetStore, tableApi } from 'edgeexit/fleet';
 * const page = await tableApi(openFleetStore('fleet.db', { mustExist: true }), { sort: 'p95', dir: 'desc', q: '', offset: 0, limit: 20 }, Date.now());
 * console.log(page.matched, page.rows[0]?.device, page.classes);
 * ```
 */
export async function tableApi(store: FleetStore, t: TableQuery, now: number): Promise<TableApi> {
  const s = await fleetStatus(store);
  const exits = new Map((await store.totals()).map((x) => [x.device, x.exits]));
  const all: FleetApiDevice[] = s.devices.map((d) => ({ ...d, exits: exits.get(d.device) ?? [] }));
  const driftingClasses = new Set(s.drift.filter((c) => c.drifting).map((c) => `${c.fleet}\u0000${c.deviceClass}`));
  const drifts = (d: FleetApiDevice): boolean => driftingClasses.has(`${d.fleet}\u0000${d.deviceClass}`);
  const q = t.q.toLowerCase();
  const kept = all.filter(
    (d) =>
      (q === '' || [d.device, d.fleet, d.deviceClass ?? '', d.bundle ? `${d.bundle.name} ${d.bundle.version}` : ''].some((v) => v.toLowerCase().includes(q))) &&
      (t.deviceClass === undefined || (d.deviceClass ?? '') === t.deviceClass) &&
      (t.online === undefined || d.online === t.online) &&
      (t.drifting === undefined || drifts(d) === t.drifting),
  );
  kept.sort(compareRows(t.sort, t.dir));
  const byClass = new Map<string | null, FleetApiDevice[]>();
  for (const d of kept) byClass.set(d.deviceClass, [...(byClass.get(d.deviceClass) ?? []), d]);
  const classes = [...byClass.entries()]
    .sort(([a], [b]) => (a ?? '\uffff').localeCompare(b ?? '\uffff'))
    .map(([cls, ds]) => aggregate(cls, ds, ds.some(drifts)));
  return {
    generatedAt: now,
    total: all.length,
    matched: kept.length,
    offset: t.offset,
    limit: t.limit,
    sort: t.sort,
    dir: t.dir,
    rows: kept.slice(t.offset, t.offset + t.limit),
    classes,
    classNames: [...new Set(all.map((d) => d.deviceClass).filter((c): c is string => c !== null))].sort(),
    drift: s.drift,
    counters: s.counters,
  };
}

function parseTableQuery(p: URLSearchParams): TableQuery {
  const sort = p.get('sort') ?? 'device';
  if (!(TABLE_SORT_KEYS as readonly string[]).includes(sort)) throw new HttpError(400, `bad sort ${JSON.stringify(sort)}: expected one of ${TABLE_SORT_KEYS.join(', ')}`);
  const dir = p.get('dir') ?? 'asc';
  if (dir !== 'asc' && dir !== 'desc') throw new HttpError(400, `bad dir ${JSON.stringify(dir)}: expected asc or desc`);
  const int = (name: string, dflt: number, max: number, min: number): number => {
    const raw = p.get(name);
    if (raw === null) return dflt;
    if (!/^\d{1,9}$/.test(raw) || Number(raw) < min || Number(raw) > max) throw new HttpError(400, `bad ${name} ${JSON.stringify(raw)}: expected an integer from ${min} to ${max}`);
    return Number(raw);
  };
  const flag = (name: string): boolean | undefined => {
    const raw = p.get(name);
    if (raw === null || raw === '') return undefined;
    if (raw !== '1' && raw !== '0') throw new HttpError(400, `bad ${name} ${JSON.stringify(raw)}: expected 1 or 0`);
    return raw === '1';
  };
  const q = p.get('q') ?? '';
  if (q.length > 200) throw new HttpError(400, `filter q is ${q.length} characters: expected at most 200`);
  const cls = p.get('class');
  const online = flag('online');
  const drifting = flag('drifting');
  return {
    sort: sort as TableSortKey,
    dir,
    q,
    ...(cls !== null && cls !== '' ? { deviceClass: cls } : {}),
    ...(online !== undefined ? { online } : {}),
    ...(drifting !== undefined ? { drifting } : {}),
    offset: int('offset', 0, 1_000_000_000, 0),
    limit: int('limit', DEFAULT_TABLE_LIMIT, MAX_TABLE_LIMIT, 1),
  };
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

/** Devices per /api/fleet reply unless ?limit= says fewer: a reply never grows with the fleet beyond this. */
export const MAX_FLEET_LIMIT = 500;

export async function fleetApi(store: FleetStore, now: number, page: { offset: number; limit: number } = { offset: 0, limit: MAX_FLEET_LIMIT }): Promise<FleetApi> {
  const s = await fleetStatus(store);
  const exits = new Map((await store.totals()).map((t) => [t.device, t.exits]));
  const devices = s.devices.slice(page.offset, page.offset + page.limit).map((d) => ({ ...d, exits: exits.get(d.device) ?? [] }));
  return { generatedAt: now, total: s.devices.length, offset: page.offset, limit: page.limit, devices, counters: s.counters };
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

function parseRolloutsLimit(raw: string | null): number {
  if (raw === null) return MAX_ROLLOUTS_LIMIT;
  if (!/^\d{1,3}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_ROLLOUTS_LIMIT)
    throw new HttpError(400, `bad limit ${JSON.stringify(raw)}: expected an integer from 1 to ${MAX_ROLLOUTS_LIMIT}, e.g. /api/rollouts?limit=5`);
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
  if (p === '/api/fleet') {
    const t = parseTableQuery(url.searchParams);
    return json(await fleetApi(store, now, { offset: t.offset, limit: url.searchParams.has('limit') ? t.limit : MAX_FLEET_LIMIT }));
  }
  if (p === '/api/table') return json(await tableApi(store, parseTableQuery(url.searchParams), now));
  if (p === '/api/jobs') return json({ jobs: jobs?.() ?? [] });
  if (p === '/api/rollouts') return json(await rolloutsApi(store, parseRolloutsLimit(url.searchParams.get('limit')), now));
  const m = /^\/api\/devices\/([^/]*)\/windows$/.exec(p);
  if (m) {
    const device = deviceParam(m[1]!);
    const limit = parseLimit(url.searchParams.get('limit'));
    if (!(await store.devices()).some((d) => d.device === device))
      throw new HttpError(404, `no device ${JSON.stringify(device)} recorded: see /api/fleet for the devices this collector knows`);
    return json(await windowsApi(store, device, limit));
  }
  throw new HttpError(404, `no such path ${JSON.stringify(p)}: try / (dashboard), /metrics, /api/table, /api/fleet, /api/jobs, /api/rollouts or /api/devices/<id>/windows`);
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

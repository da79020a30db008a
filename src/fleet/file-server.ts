// The operator's file server for flashing: answers devices' MQTT 5 file requests (see
// agent/file-protocol.ts) with byte ranges of bundle files, found by their SHA-256 in the bundle
// folders and archives it was given. It keeps no state per device or per download, so several
// instances can serve one fleet in a shared subscription: a request lost with an instance that
// died is asked again by the device and answered by another.
//
// Every request field is bounded before use: the payload's size, its JSON shape (hash, offset,
// length ≤ MAX_CHUNK_BYTES), the correlation data's size, and the response topic, which must be
// the requester's own reply topic (derived from the request topic the broker's ACL let it write).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { connectMqtt, type MqttConnection, type MqttMessage, type MqttTls } from '../telemetry/mqtt/client.js';
import { DEFAULT_BACKOFF, backoffDelay } from '../telemetry/mqtt/publisher.js';
import { loadBundleFiles, sha256Hex, verifyLoadedBundle } from '../bundle/files.js';
import {
  FileRequestSchema,
  MAX_CHUNK_BYTES,
  MAX_CORRELATION_BYTES,
  MAX_REQUEST_BYTES,
  REPLY_OVERHEAD_BYTES,
  fileReplyTopic,
  fileServerSubscription,
  parseRequestTopic,
  type FileReplyStatus,
} from '../agent/file-protocol.js';
import { InputError, formatProblem } from '../util/errors.js';

export interface FileServerOptions {
  brokerUrl: string;
  /** Bundle folders or archives (`edgeexit pack`) whose files are served; each is verified first. */
  bundles: readonly string[];
  /**
   * Content-addressed folders (`edgeexit flash --files`): a file named by its SHA-256 is served
   * from there when no bundle holds it, looked up per request, so a bundle flashed after this
   * server started is served without a restart, by every instance that sees the folder.
   */
  blobDirs?: readonly string[];
  clientId?: string;
  username?: string;
  password?: string;
  tls?: MqttTls;
  /** Largest reply this server sends (file bytes), at most MAX_CHUNK_BYTES; a device may ask for less. */
  maxChunkBytes?: number;
  onLog?: (line: string) => void;
}

export interface FileServerStats {
  requests: number;
  /** Replies with file bytes. */
  served: number;
  /** File bytes sent (payloads only). */
  bytesSent: number;
  /** Requests answered with an error status, or dropped when no valid reply topic was given, by reason. */
  refused: Record<string, number>;
}

export interface FileServer {
  /** SHA-256 of every file served (stage files, reports, manifests and signatures). */
  readonly files: ReadonlySet<string>;
  stats(): FileServerStats;
  /** Disconnect cleanly and stop. */
  close(): Promise<void>;
  /** Drop the connection as a crash would, and stop (tests: an instance dying mid-download). */
  abort(): void;
}

/** Every file of the given bundles by its SHA-256; each bundle's hashes are verified as it is read. */
async function indexBundles(sources: readonly string[], blobDirs: readonly string[]): Promise<Map<string, Uint8Array>> {
  if (sources.length === 0 && blobDirs.length === 0) throw new InputError(formatProblem({ where: 'bundles', expected: 'at least one bundle folder or archive, or a files folder', got: 'none', fix: 'name the bundles to serve' }));
  const index = new Map<string, Uint8Array>();
  for (const src of sources) {
    const bundle = await loadBundleFiles(src);
    await verifyLoadedBundle(bundle);
    for (const data of bundle.files.values()) index.set(sha256Hex(data), data);
  }
  return index;
}

/** The requested bytes, or the file's size when the range runs past its end. */
function rangeOf(data: Uint8Array, offset: number, length: number): Buffer | number {
  if (offset + length > data.length) return data.length;
  return Buffer.from(data.buffer, data.byteOffset + offset, length);
}

/**
 * Files named by their SHA-256 in content-addressed folders, read per request (a range at a
 * time: a 20 MB stage is never held whole). Written only by temp file and rename, so a name that
 * exists holds its whole file; the device checks every block against the signed manifest anyway.
 */
class BlobDirs {
  constructor(private readonly dirs: readonly string[]) {}

  async read(sha256: string, offset: number, length: number): Promise<Buffer | number | 'missing'> {
    for (const dir of this.dirs) {
      const h = await fsp.open(path.join(dir, sha256), 'r').catch(() => undefined);
      if (!h) continue;
      try {
        const size = (await h.stat()).size;
        if (offset + length > size) return size;
        const buf = Buffer.alloc(length);
        await h.read(buf, 0, length, offset);
        return buf;
      } finally {
        await h.close();
      }
    }
    return 'missing';
  }
}

/**
 * Start a file server: verify and index the bundles, connect (MQTT 5) and answer file requests
 * until closed, reconnecting with backoff when the broker goes away.
 *
 * @example
 * ```ts
 * import { startFileServer } from 'edgeexit/fleet';
 * const server = await startFileServer({ brokerUrl: 'mqtt://127.0.0.1:1883', bundles: ['bundles/branchy-rpi4'], username: 'files', password });
 * // … devices download …
 * await server.close();
 * ```
 */
export async function startFileServer(opts: FileServerOptions): Promise<FileServer> {
  const maxChunk = opts.maxChunkBytes ?? MAX_CHUNK_BYTES;
  if (!Number.isInteger(maxChunk) || maxChunk < 1 || maxChunk > MAX_CHUNK_BYTES) {
    throw new InputError(formatProblem({ where: 'maxChunkBytes', expected: `an integer from 1 to ${MAX_CHUNK_BYTES}`, got: String(maxChunk) }));
  }
  const index = await indexBundles(opts.bundles, opts.blobDirs ?? []);
  const blobs = new BlobDirs(opts.blobDirs ?? []);
  const log = opts.onLog ?? (() => undefined);
  const stats: FileServerStats = { requests: 0, served: 0, bytesSent: 0, refused: {} };
  const clientId = opts.clientId ?? `edgeexit-files-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  let conn: MqttConnection | undefined;
  let stopped = false;

  const refuse = (reason: string): void => {
    stats.refused[reason] = (stats.refused[reason] ?? 0) + 1;
  };

  const reply = (c: MqttConnection, topic: string, correlationData: Buffer, status: FileReplyStatus, payload: Buffer, reason?: string): void => {
    const userProperties: Record<string, string> = { status, ...(reason ? { reason } : {}) };
    // QoS 1: a reply lost on the way is re-asked by the device anyway, but not losing it is cheaper.
    c.publish(topic, payload, { qos: 1, properties: { correlationData, userProperties } }).catch(() => undefined);
  };

  const handle = async (c: MqttConnection, m: MqttMessage): Promise<void> => {
    stats.requests++;
    const who = parseRequestTopic(m.topic);
    if (!who) return refuse('topic');
    const replyTopic = fileReplyTopic(who.fleet, who.device);
    const corr = m.properties?.correlationData;
    if (m.properties?.responseTopic !== replyTopic) return refuse('responseTopic');
    if (!corr || corr.length === 0 || corr.length > MAX_CORRELATION_BYTES) return refuse('correlationData');
    if (m.payload.length > MAX_REQUEST_BYTES) return (refuse('tooLarge'), reply(c, replyTopic, corr, 'bad-request', Buffer.alloc(0), `request over ${MAX_REQUEST_BYTES} bytes`));
    let json: unknown;
    try {
      json = JSON.parse(m.payload.toString('utf8'));
    } catch {
      return (refuse('json'), reply(c, replyTopic, corr, 'bad-request', Buffer.alloc(0), 'not JSON'));
    }
    const parsed = FileRequestSchema.safeParse(json);
    if (!parsed.success) return (refuse('schema'), reply(c, replyTopic, corr, 'bad-request', Buffer.alloc(0), 'expected {sha256, offset, length}'));
    const { sha256, offset, length } = parsed.data;
    // A reply the broker would not take (its CONNACK limit) would cost this server its connection.
    const limit = Math.min(maxChunk, (c.brokerMaximumPacketSize ?? Infinity) - REPLY_OVERHEAD_BYTES);
    if (length > limit) return (refuse('length'), reply(c, replyTopic, corr, 'bad-request', Buffer.alloc(0), `length over ${limit}`));
    const data = index.get(sha256);
    const got = data ? rangeOf(data, offset, length) : await blobs.read(sha256, offset, length);
    if (got === 'missing') return (refuse('notFound'), reply(c, replyTopic, corr, 'not-found', Buffer.alloc(0), 'no such file here'));
    if (typeof got === 'number') return (refuse('range'), reply(c, replyTopic, corr, 'bad-request', Buffer.alloc(0), `range past the end (${got} bytes)`));
    const chunk = got;
    stats.served++;
    stats.bytesSent += length;
    reply(c, replyTopic, corr, 'ok', chunk);
  };

  const connect = async (): Promise<MqttConnection> => {
    const c = await connectMqtt({
      url: opts.brokerUrl,
      clientId,
      protocolVersion: 5,
      ...(opts.username !== undefined ? { username: opts.username } : {}),
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      ...(opts.tls ? { tls: opts.tls } : {}),
    });
    c.onMessage((m) => void handle(c, m));
    await c.subscribe(fileServerSubscription(), 1);
    return c;
  };

  const keepConnected = (c: MqttConnection): void => {
    conn = c;
    c.onClose(() => {
      if (stopped) return;
      log(`file server ${clientId}: connection lost; reconnecting`);
      void (async () => {
        for (let attempt = 0; !stopped; attempt++) {
          await new Promise((r) => setTimeout(r, backoffDelay(attempt, { ...DEFAULT_BACKOFF, initialMs: 200, maxMs: 5_000 })));
          if (stopped) return;
          const next = await connect().catch(() => undefined);
          if (!next) continue;
          if (stopped) return void next.abort();
          log(`file server ${clientId}: reconnected`);
          return keepConnected(next);
        }
      })();
    });
  };

  keepConnected(await connect());
  log(`file server ${clientId}: serving ${index.size} files${opts.blobDirs?.length ? ` and every file by hash in ${opts.blobDirs.join(', ')}` : ''}`);
  return {
    files: new Set(index.keys()),
    stats: () => ({ ...stats, refused: { ...stats.refused } }),
    async close() {
      stopped = true;
      await conn?.end();
    },
    abort() {
      stopped = true;
      conn?.abort();
    },
  };
}

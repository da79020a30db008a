// The device side of bundle transfer: pull a bundle named by its signed manifest from file
// servers over MQTT 5 (agent/file-protocol.ts) into a staging folder, resumably.
//
// Order of trust: the manifest and its signature come first (whole-file hashes named by the job),
// and the signature is checked before anything else is fetched; from then on the manifest's
// per-block hashes decide what is written. A file this device already holds (in the staging
// folder or in another local bundle folder) with the right hash is copied (or hard-linked, with
// linkLocal), never fetched. Each
// block is checked against its hash before it is written; a block that fails is asked again a
// bounded number of times, then the download fails naming the file and block. Received blocks are
// recorded in a bitmap file next to the partial file, fsync'd after the block's bytes, so a
// download cut by a disconnect, a broker restart or a killed process resumes where it was.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { verifyLoadedBundle, type LoadedBundle, type VerifyOptions, type VerifyResult } from '../bundle/files.js';
import { MANIFEST_FILE, SIGNATURE_FILE, parseManifest, type Manifest } from '../bundle/manifest.js';
import { blockCount, listedFiles } from '../bundle/blocks.js';
import { connectMqtt, type MqttConnection, type MqttMessage, type MqttTls } from '../telemetry/mqtt/client.js';
import { EdgeExitError, formatProblem } from '../util/errors.js';
import { linkAtomicIf, writeFileAtomic } from '../util/fs.js';
import { MAX_CHUNK_BYTES, REPLY_OVERHEAD_BYTES, fileReplyTopic, fileRequestTopic, type FileRequest } from './file-protocol.js';
import { DiskFullError, diskFullDuringWrite, ensureFreeSpace, isDiskFull } from './space.js';

/** A file named by content, as a job names the manifest and its signature. */
export interface FileRef {
  sha256: string;
  bytes: number;
}

export interface DownloadOptions {
  brokerUrl: string;
  fleet: string;
  device: string;
  username?: string;
  password?: string;
  tls?: MqttTls;
  /** The bundle's manifest.json, and its manifest.sig (required when `verify` asks for a signature). */
  manifest: FileRef;
  signature?: FileRef;
  /** Folder the bundle is assembled in; reused as it is found, so a second call resumes. */
  staging: string;
  /** Local bundle folders whose files (by hash) are copied instead of fetched. */
  have?: readonly string[];
  /**
   * The `have` folders are never written in place (an agent's own store): their files are
   * hard-linked into staging rather than copied where the filesystem allows. Default false.
   */
  linkLocal?: boolean;
  /** Passed to verifyLoadedBundle: trust store or key, requireSignature. */
  verify?: VerifyOptions;
  /** Largest MQTT packet this device takes (default 64 KiB); replies are asked to fit it. */
  maxPacketBytes?: number;
  /** Requests in flight at once (default 8). */
  window?: number;
  /** How long to wait for a reply before asking again (default 3 s). */
  requestTimeoutMs?: number;
  /** Times one chunk is asked again after timeouts or not-found replies before the download fails (default 20). */
  maxAttempts?: number;
  /** Times one block may fail its hash before the download fails (default 3). */
  maxBadBlocks?: number;
  /** Reconnect attempts in a row before the download fails (default 60, about a minute). */
  maxReconnects?: number;
  signal?: AbortSignal;
  onProgress?: (p: DownloadProgress) => void;
  /**
   * Called with the verified manifest before any other file moves (a flash job checks
   * compatibility and version here); what it throws ends the download, unchanged.
   */
  onManifest?: (m: Manifest) => Promise<void> | void;
}

export interface DownloadProgress {
  file: string;
  blocksDone: number;
  blocks: number;
}

export interface DownloadStats {
  /** Requests published (retries included). */
  requests: number;
  /** File bytes received in replies (retries included). */
  bytesReceived: number;
  /** Blocks fetched, checked and written. */
  blocksFetched: number;
  /** Blocks found already received (bitmap) when the download started. */
  blocksResumed: number;
  /** Blocks that failed their hash and were asked again. */
  badBlocks: number;
  /** Files fetched over MQTT (manifest and signature included). */
  filesFetched: string[];
  /** Files found complete in the staging folder or copied from a local bundle. */
  filesReused: string[];
  reconnects: number;
}

/**
 * The download failed for good; `reason` is what to report in the job's state.
 *
 * @example
 * ```ts
 * import { DownloadError, downloadBundle } from 'edgeexit/agent';
 * try { await downloadBundle(opts); } catch (err) { if (err instanceof DownloadError) report(err.reason); else throw err; }
 * ```
 */
export class DownloadError extends EdgeExitError {
  constructor(readonly reason: string, options?: { cause?: unknown }) {
    super(`bundle download failed: ${reason}`, [], options);
  }
}

/** A device's packet limit when it names none; compiled bundles' blocks (63 KiB) and a reply's headers fit it. */
export const DEFAULT_MAX_PACKET_BYTES = 64 * 1024;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const MAX_SMALL_FILE = 4 * 1024 * 1024;

/** Request/response over one MQTT connection at a time, reconnecting when it drops. */
class Requester {
  private conn: MqttConnection | undefined;
  private connecting: Promise<MqttConnection> | undefined;
  private readonly waiting = new Map<string, { resolve: (m: MqttMessage) => void; reject: (e: Error) => void }>();
  private readonly replyTopic: string;
  private readonly requestTopic: string;
  private closed = false;
  private everConnected = false;

  constructor(
    private readonly opts: DownloadOptions,
    private readonly stats: DownloadStats,
  ) {
    this.replyTopic = fileReplyTopic(opts.fleet, opts.device);
    this.requestTopic = fileRequestTopic(opts.fleet, opts.device);
  }

  private async open(): Promise<MqttConnection> {
    const o = this.opts;
    const limit = o.maxReconnects ?? 60;
    for (let attempt = 0; ; attempt++) {
      if (this.closed || o.signal?.aborted) throw new DownloadError('canceled');
      try {
        const c = await connectMqtt({
          url: o.brokerUrl,
          clientId: `${o.fleet}.${o.device}.files.${randomBytes(3).toString('hex')}`,
          protocolVersion: 5,
          connectTimeoutMs: 5_000,
          // The broker then never sends this device a packet over its limit.
          maximumPacketSize: devicePacketLimit(o),
          ...(o.username !== undefined ? { username: o.username } : {}),
          ...(o.password !== undefined ? { password: o.password } : {}),
          ...(o.tls ? { tls: o.tls } : {}),
          onMessage: (m) => this.onReply(m),
        });
        await c.subscribe(this.replyTopic, 1);
        c.onClose(() => this.onClose(c));
        if (this.everConnected) this.stats.reconnects++;
        this.everConnected = true;
        return c;
      } catch (err) {
        if (attempt + 1 >= limit) throw new DownloadError(`cannot reach the broker at ${o.brokerUrl} after ${limit} attempts: ${(err as Error).message}`, { cause: err });
        await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
      }
    }
  }

  private onClose(c: MqttConnection): void {
    if (this.conn !== c) return;
    this.conn = undefined;
    const err = new Error('disconnected');
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  private onReply(m: MqttMessage): void {
    const id = m.properties?.correlationData?.toString('hex');
    const w = id === undefined ? undefined : this.waiting.get(id);
    if (!w || !id) return; // a late reply to a request already asked again: dropped
    this.waiting.delete(id);
    w.resolve(m);
  }

  private async connection(): Promise<MqttConnection> {
    if (this.conn && !this.conn.closed) return this.conn;
    this.connecting ??= this.open().then(
      (c) => ((this.conn = c), (this.connecting = undefined), c),
      (e: unknown) => {
        this.connecting = undefined;
        throw e;
      },
    );
    return this.connecting;
  }

  /**
   * File bytes one reply may carry: the device's packet limit or the broker's (from its CONNACK),
   * whichever is smaller, less room for the reply's headers. Connects first, to know the broker's.
   */
  async chunkBytes(): Promise<number> {
    const c = await this.connection();
    const packet = Math.min(devicePacketLimit(this.opts), c.brokerMaximumPacketSize ?? Infinity);
    const chunk = Math.min(MAX_CHUNK_BYTES, packet - REPLY_OVERHEAD_BYTES);
    if (chunk < 256) {
      const who = packet < devicePacketLimit(this.opts) ? `the broker's maximum packet size (CONNACK)` : 'maxPacketBytes';
      throw new DownloadError(formatProblem({ where: who, expected: `at least ${REPLY_OVERHEAD_BYTES + 256} bytes`, got: String(packet), fix: 'raise it (mosquitto: max_packet_size)' }));
    }
    return chunk;
  }

  /** One range of one file, asked again on timeouts and disconnects within the attempt budget. */
  async get(req: FileRequest, what: string): Promise<Buffer> {
    const o = this.opts;
    const maxAttempts = o.maxAttempts ?? 20;
    let last = '';
    for (let attempt = 0; attempt < maxAttempts; ) {
      if (o.signal?.aborted) throw new DownloadError('canceled');
      const c = await this.connection();
      const corr = randomBytes(16);
      const id = corr.toString('hex');
      const timeoutMs = o.requestTimeoutMs ?? 3_000;
      let timer: NodeJS.Timeout | undefined;
      const reply = new Promise<MqttMessage>((resolve, reject) => {
        this.waiting.set(id, { resolve, reject });
        timer = setTimeout(() => (this.waiting.delete(id), reject(new Error('timeout'))), timeoutMs);
      });
      this.stats.requests++;
      c.publish(this.requestTopic, Buffer.from(JSON.stringify(req)), { qos: 1, properties: { responseTopic: this.replyTopic, correlationData: corr } }).catch(() => undefined);
      let m: MqttMessage;
      try {
        m = await reply;
      } catch (err) {
        // A disconnect is not the server's fault: it costs no attempt, the reconnect budget bounds it.
        if ((err as Error).message !== 'disconnected') attempt++;
        last = (err as Error).message === 'timeout' ? `no reply within ${timeoutMs} ms` : 'disconnected';
        continue;
      } finally {
        clearTimeout(timer);
      }
      const status = m.properties?.userProperties?.status;
      if (status === 'ok') {
        if (m.payload.length !== req.length) {
          attempt++;
          last = `reply of ${m.payload.length} bytes for ${req.length}`;
          continue;
        }
        this.stats.bytesReceived += m.payload.length;
        return m.payload;
      }
      const reason = m.properties?.userProperties?.reason ?? 'no reason given';
      if (status === 'not-found') {
        // Another server instance may hold it: retry within the budget.
        attempt++;
        last = `not found on the file server (${reason})`;
        continue;
      }
      throw new DownloadError(`${what}: the file server refused the request: ${status ?? 'no status'} (${reason})`);
    }
    throw new DownloadError(`${what}: ${last} after ${maxAttempts} attempts`);
  }

  async close(): Promise<void> {
    this.closed = true;
    const c = this.conn;
    this.conn = undefined;
    await c?.end().catch(() => undefined);
  }
}

/** The largest packet this device takes (DownloadOptions.maxPacketBytes, default 64 KiB). */
function devicePacketLimit(opts: DownloadOptions): number {
  return opts.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES;
}

/** Fetch a range [offset, offset + length) in chunks that fit the device's packet limit. */
async function fetchRange(rq: Requester, sha: string, offset: number, length: number, what: string): Promise<Buffer> {
  const chunk = await rq.chunkBytes();
  const parts: Buffer[] = [];
  for (let at = offset; at < offset + length; at += chunk) {
    parts.push(await rq.get({ sha256: sha, offset: at, length: Math.min(chunk, offset + length - at) }, what));
  }
  return Buffer.concat(parts);
}

/** A small file (manifest, signature) checked whole: from staging if there, else fetched and written atomically. */
async function smallFile(rq: Requester, opts: DownloadOptions, name: string, ref: FileRef, stats: DownloadStats): Promise<Uint8Array> {
  if (!/^[0-9a-f]{64}$/.test(ref.sha256) || !Number.isInteger(ref.bytes) || ref.bytes < 1 || ref.bytes > MAX_SMALL_FILE) {
    throw new DownloadError(formatProblem({ where: `job: ${name}`, expected: `a sha256 and a size from 1 to ${MAX_SMALL_FILE} bytes`, got: `${ref.sha256} (${ref.bytes} bytes)` }));
  }
  const file = path.join(opts.staging, name);
  const have = await fsp.readFile(file).catch(() => undefined);
  if (have && sha256(have) === ref.sha256) return (stats.filesReused.push(name), new Uint8Array(have));
  const data = await fetchRange(rq, ref.sha256, 0, ref.bytes, name);
  if (sha256(data) !== ref.sha256) throw new DownloadError(`${name}: the received file does not match the job's sha256 ${ref.sha256} (the file server sent other bytes)`);
  await writeFileAtomic(file, data);
  stats.filesFetched.push(name);
  return new Uint8Array(data);
}

/** Signature (when the job names one or it is required) and manifest check, before any other file moves. */
async function checkManifest(manifest: Uint8Array, sig: Uint8Array | undefined, opts: DownloadOptions): Promise<Manifest> {
  const files = new Map<string, Uint8Array>([[MANIFEST_FILE, manifest]]);
  if (sig) files.set(SIGNATURE_FILE, sig);
  try {
    await verifyLoadedBundle({ source: opts.staging, kind: 'folder', files, folders: [] }, opts.verify ?? {});
  } catch (err) {
    const problems = (err as EdgeExitError).problems ?? [];
    // Only the stage files are missing yet; anything wrong with the manifest or its signature stops here.
    const own = problems.filter((p) => p.where === SIGNATURE_FILE || p.where.startsWith(MANIFEST_FILE));
    if (own.length > 0) throw new DownloadError(own.map(formatProblem).join('; '), { cause: err });
  }
  const m = parseManifest(manifest);
  if (!m.blocks) throw new DownloadError(`${MANIFEST_FILE}: has no per-block hashes (blocks), so blocks cannot be checked before they are written; re-compile, or add them (withBlockHashes) and sign the manifest again`);
  return m;
}

/** Local copies by hash: every file listed by the manifests of the `have` folders (checked when used). */
async function localCandidates(dirs: readonly string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const dir of dirs) {
    const text = await fsp.readFile(path.join(dir, MANIFEST_FILE)).catch(() => undefined);
    if (!text) continue;
    let m: Manifest;
    try {
      m = parseManifest(text);
    } catch {
      continue; // a broken local bundle offers nothing
    }
    for (const f of listedFiles(m)) out.set(f.sha256, [...(out.get(f.sha256) ?? []), path.join(dir, f.file)]);
  }
  return out;
}

async function reuseLocal(target: string, want: { sha256: string; bytes: number }, candidates: readonly string[], link: boolean): Promise<boolean> {
  const matches = (b: Uint8Array): boolean => b.length === want.bytes && sha256(b) === want.sha256;
  for (const c of candidates) {
    // A link is checked through itself, so the candidate is read once either way.
    if (link && (await linkAtomicIf(target, c, matches))) return true;
    const data = await fsp.readFile(c).catch(() => undefined);
    if (data && matches(data)) {
      await writeFileAtomic(target, data);
      return true;
    }
  }
  return false;
}

/** Partial file and bitmap of one file being downloaded; blocks marked done are re-checked on open. */
async function openPartial(dir: string, name: string, bytes: number, size: number, hashes: readonly string[]) {
  const partFile = path.join(dir, `.${name}.part`);
  const mapFile = path.join(dir, `.${name}.blocks`);
  const n = blockCount(bytes, size);
  const part = await fsp.open(partFile, 'a+').then(async (h) => (await h.close(), fsp.open(partFile, 'r+')));
  if ((await part.stat()).size !== bytes) await part.truncate(bytes);
  const map = await fsp.open(mapFile, 'a+').then(async (h) => (await h.close(), fsp.open(mapFile, 'r+')));
  const bits = Buffer.alloc(n);
  if ((await map.stat()).size === n) await map.read(bits, 0, n, 0);
  else await map.truncate(0).then(() => map.write(Buffer.alloc(n), 0, n, 0));
  // A block marked done was fsync'd before its mark; re-hashing it guards against a disk that lied.
  for (let i = 0; i < n; i++) {
    if (bits[i] !== 1) continue;
    const len = Math.min(size, bytes - i * size);
    const buf = Buffer.alloc(len);
    await part.read(buf, 0, len, i * size);
    if (sha256(buf) !== hashes[i]) bits[i] = 0;
  }
  return { part, map, bits, partFile, mapFile, n };
}

/** Fetch the blocks of one file not yet received, `window` requests at a time. */
async function downloadFile(rq: Requester, opts: DownloadOptions, m: Manifest, f: { file: string; sha256: string; bytes: number }, stats: DownloadStats): Promise<void> {
  const size = m.blocks!.size;
  const hashes = m.blocks!.files[f.file]!;
  const p = await openPartial(opts.staging, f.file, f.bytes, size, hashes);
  try {
    const todo: number[] = [];
    for (let i = 0; i < p.n; i++) {
      if (p.bits[i] === 1) stats.blocksResumed++;
      else todo.push(i);
    }
    let done = p.n - todo.length;
    const bad = new Map<number, number>();
    let failed = false;
    const worker = async (): Promise<void> => {
      for (let i = todo.shift(); i !== undefined && !failed; i = todo.shift()) {
        if (opts.signal?.aborted) throw new DownloadError('canceled');
        const off = i * size;
        const len = Math.min(size, f.bytes - off);
        const data = await fetchRange(rq, f.sha256, off, len, `${f.file} block ${i}`);
        if (sha256(data) !== hashes[i]) {
          stats.badBlocks++;
          const n = (bad.get(i) ?? 0) + 1;
          bad.set(i, n);
          if (n >= (opts.maxBadBlocks ?? 3)) throw new DownloadError(`${f.file} block ${i}: failed its hash in the signed manifest ${n} times (the file server sent tampered or damaged data); nothing of it was written`);
          todo.push(i);
          continue;
        }
        // Bytes first, then the mark: a mark on disk always means the block's bytes are there.
        await p.part.write(data, 0, len, off);
        await p.part.sync();
        await p.map.write(Buffer.from([1]), 0, 1, i);
        await p.map.sync();
        stats.blocksFetched++;
        opts.onProgress?.({ file: f.file, blocksDone: ++done, blocks: p.n });
      }
    };
    // One worker failing stops the others at their next block, so none writes after the caller cleaned up.
    const guarded = () => worker().catch((err: unknown) => ((failed = true), Promise.reject(err)));
    await Promise.all(Array.from({ length: Math.max(1, opts.window ?? 8) }, guarded));
  } finally {
    await p.part.close();
    await p.map.close();
  }
  await fsp.rename(p.partFile, path.join(opts.staging, f.file));
  await fsp.rm(p.mapFile, { force: true });
  stats.filesFetched.push(f.file);
}

/**
 * Download a bundle into `opts.staging` (see the header) and verify it fully: every hash, and the
 * signature as `opts.verify` asks. Resumes what an earlier call left in the staging folder.
 *
 * @example
 * ```ts
 * import { downloadBundle } from 'edgeexit/agent';
 * const { verified, stats } = await downloadBundle({
 *   brokerUrl: 'mqtt://broker.local:1883', fleet: 'lab', device: 'pi-07', username: 'lab/pi-07', password,
 *   manifest: job.manifest, signature: job.signature, staging: '/var/lib/edgeexit/staging/42',
 *   have: ['/var/lib/edgeexit/bundles/current'], verify: { trust: await loadTrustStore(), requireSignature: true },
 * });
 * console.log(verified.manifest.model.name, stats.bytesReceived);
 * ```
 */
export async function downloadBundle(opts: DownloadOptions): Promise<{ dir: string; verified: VerifyResult; stats: DownloadStats }> {
  const stats: DownloadStats = { requests: 0, bytesReceived: 0, blocksFetched: 0, blocksResumed: 0, badBlocks: 0, filesFetched: [], filesReused: [], reconnects: 0 };
  const rq = new Requester(opts, stats);
  const what = `bundle ${opts.manifest.sha256.slice(0, 12)}`;
  let needed = opts.manifest.bytes + (opts.signature?.bytes ?? 0);
  try {
    await fsp.mkdir(opts.staging, { recursive: true });
    const manifestBytes = await smallFile(rq, opts, MANIFEST_FILE, opts.manifest, stats);
    const sigBytes = opts.signature ? await smallFile(rq, opts, SIGNATURE_FILE, opts.signature, stats) : undefined;
    const m = await checkManifest(manifestBytes, sigBytes, opts);
    await opts.onManifest?.(m);
    needed = await bytesToStage(opts.staging, m);
    await ensureFreeSpace(opts.staging, needed, what);
    const local = await localCandidates(opts.have ?? []);
    for (const f of listedFiles(m)) {
      const target = path.join(opts.staging, f.file);
      const have = await fsp.readFile(target).catch(() => undefined);
      if (have && have.length === f.bytes && sha256(have) === f.sha256) {
        stats.filesReused.push(f.file);
        continue;
      }
      if (await reuseLocal(target, f, local.get(f.sha256) ?? [], opts.linkLocal === true)) {
        stats.filesReused.push(f.file);
        continue;
      }
      await downloadFile(rq, opts, m, f, stats);
    }
    const verified = await verifyStaged(opts, m, manifestBytes, sigBytes);
    return { dir: opts.staging, verified, stats };
  } catch (err) {
    if (!(err instanceof DiskFullError) && !isDiskFull(err)) throw err;
    // A full disk also stops the journal and the outbox: give back what staging took, then refuse.
    await fsp.rm(opts.staging, { recursive: true, force: true });
    const full = err instanceof DiskFullError ? err : await diskFullDuringWrite(opts.staging, needed, what, err);
    throw new DownloadError(full.reason, { cause: full });
  } finally {
    await rq.close();
  }
}

/**
 * Bytes the staging folder still needs: every listed file not complete there, less what its
 * partial file already holds on disk (blocks allocated, so a sparse partial file counts only its
 * received blocks).
 */
async function bytesToStage(staging: string, m: Manifest): Promise<number> {
  let n = 0;
  for (const f of listedFiles(m)) {
    const done = await fsp.stat(path.join(staging, f.file)).catch(() => undefined);
    if (done?.size === f.bytes) continue;
    const part = await fsp.stat(path.join(staging, `.${f.file}.part`)).catch(() => undefined);
    n += Math.max(0, f.bytes - (part ? part.blocks * 512 : 0));
  }
  return n;
}

/** The staged bundle checked as a whole, exactly as a bundle read from disk would be. */
async function verifyStaged(opts: DownloadOptions, m: Manifest, manifest: Uint8Array, sig: Uint8Array | undefined): Promise<VerifyResult> {
  const files = new Map<string, Uint8Array>([[MANIFEST_FILE, manifest]]);
  if (sig) files.set(SIGNATURE_FILE, sig);
  for (const f of listedFiles(m)) files.set(f.file, new Uint8Array(await fsp.readFile(path.join(opts.staging, f.file))));
  const bundle: LoadedBundle = { source: opts.staging, kind: 'folder', files, folders: [] };
  try {
    return await verifyLoadedBundle(bundle, opts.verify ?? {});
  } catch (err) {
    throw new DownloadError(`the staged bundle failed verification: ${(err as Error).message}`, { cause: err });
  }
}

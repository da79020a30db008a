// Bundle transfer through a real Mosquitto: the operator's file server answers the device's
// downloader block by block. A full download, a thresholds-only update that moves only the
// manifest, a broker killed mid-download, the downloader killed -9 and restarted, a server that
// tampers with a block, and two server instances of which one dies mid-download.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DownloadError, downloadBundle, type DownloadOptions, type DownloadStats } from '../../src/agent/download.js';
import { fileServerSubscription } from '../../src/agent/file-protocol.js';
import { MANIFEST_FILE, SIGNATURE_FILE, loadBundleFiles, loadTrustStore, sha256Hex, type VerifyOptions } from '../../src/bundle/index.js';
import { startFileServer, type FileServer } from '../../src/fleet/file-server.js';
import { connectMqtt } from '../../src/telemetry/mqtt/client.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { scratch } from '../compiler/helpers.js';
import { makeFixture, refsOf, sizeOf, type Fixture } from './transfer-fixtures.js';

const here = path.dirname(fileURLToPath(import.meta.url));

MOSQUITTO.describe('bundle transfer over MQTT 5 (file server ↔ downloader)', () => {
  let dir: string;
  let fx: Fixture;
  let broker: Broker;
  let server: FileServer;
  let verify: VerifyOptions;
  let n = 0;

  const base = async (bundle: string, extra: Partial<DownloadOptions> = {}): Promise<DownloadOptions> => {
    const r = await refsOf(bundle);
    return { brokerUrl: broker.url, fleet: 'lab', device: `pi-${++n}`, manifest: r.manifest, signature: r.signature, staging: path.join(dir, `staging-${n}`), verify, requestTimeoutMs: 1_000, ...extra };
  };
  const smallFiles = async (bundle: string) => {
    const r = await refsOf(bundle);
    return { ...sizeOf(r.manifestJson), meta: r.manifest.bytes + r.signature.bytes, manifest: r.manifestJson };
  };

  beforeAll(async () => {
    dir = await scratch('transfer');
    fx = await makeFixture(dir);
    verify = { trust: await loadTrustStore(fx.trustDir), requireSignature: true };
    broker = await startBroker({ config: ['set_tcp_nodelay true'] });
    server = await startFileServer({ brokerUrl: broker.url, bundles: [fx.zoo, fx.small, fx.update] });
  }, 120_000);
  afterAll(async () => {
    await server?.close().catch(() => undefined);
    await broker?.dispose();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('downloads a compiled zoo bundle whole, block by block, and verifies it', async () => {
    const opts = await base(fx.zoo);
    const { verified, stats } = await downloadBundle(opts);
    const { blocks, bytes, meta } = await smallFiles(fx.zoo);
    expect(verified.signature.status).toBe('valid');
    expect(stats.blocksFetched).toBe(blocks);
    expect(stats.bytesReceived).toBe(bytes + meta);
    expect(stats.badBlocks).toBe(0);
    expect(stats.filesReused).toEqual([]);
    const original = await loadBundleFiles(fx.zoo);
    const staged = await loadBundleFiles(opts.staging);
    expect([...staged.files.keys()].sort()).toEqual([...original.files.keys()].sort());
    for (const [name, data] of original.files) expect(sha256Hex(staged.files.get(name)!), name).toBe(sha256Hex(data));
  });

  it('a thresholds-only update fetches only the manifest and its signature', async () => {
    const first = await base(fx.small);
    await downloadBundle(first);
    const opts = await base(fx.update, { have: [first.staging] });
    const { verified, stats } = await downloadBundle(opts);
    const { meta, manifest } = await smallFiles(fx.update);
    expect(verified.manifest.exitPolicy.thresholds).toEqual([0.8, 0.8]);
    expect(stats.filesFetched).toEqual([MANIFEST_FILE, SIGNATURE_FILE]);
    expect(stats.filesReused.sort()).toEqual([...manifest.stages.map((s) => s.file), ...manifest.files.map((f) => f.file)].sort());
    expect(stats.blocksFetched).toBe(0);
    expect(stats.bytesReceived).toBe(meta);
    // One request per 63 KiB chunk of the manifest, one for the signature.
    expect(stats.requests).toBe(Math.ceil(opts.manifest.bytes / (63 * 1024)) + 1);
  });

  it('with linkLocal, the files a thresholds-only update keeps are hard links of the local bundle, not copies; without, copies', async () => {
    const first = await base(fx.small);
    await downloadBundle(first);
    const { manifest } = await smallFiles(fx.update);
    const kept = [...manifest.stages.map((s) => s.file), ...manifest.files.map((f) => f.file)];
    const inode = (dir: string, f: string) => fsp.stat(path.join(dir, f)).then((s) => s.ino);
    const linked = await base(fx.update, { have: [first.staging], linkLocal: true });
    const copied = await base(fx.update, { have: [first.staging] });
    await downloadBundle(linked);
    await downloadBundle(copied);
    for (const f of kept) {
      expect(await inode(linked.staging, f), f).toBe(await inode(first.staging, f));
      expect(await inode(copied.staging, f), f).not.toBe(await inode(first.staging, f));
    }
    // The manifest is new bytes: written, whatever linkLocal says.
    expect(await inode(linked.staging, MANIFEST_FILE)).not.toBe(await inode(first.staging, MANIFEST_FILE));
    const a = await loadBundleFiles(linked.staging);
    const b = await loadBundleFiles(copied.staging);
    for (const [name, data] of b.files) expect(sha256Hex(a.files.get(name)!), name).toBe(sha256Hex(data));
  });

  it('resumes after the broker is killed mid-download without fetching a received block again', async () => {
    const { blocks, bytes, meta } = await smallFiles(fx.small);
    let outage: Promise<void> | undefined;
    const opts = await base(fx.small, {
      window: 1,
      onProgress: (p) => {
        if (outage || p.blocksDone < 30) return;
        outage = (async () => {
          await broker.stop('SIGKILL');
          await new Promise((r) => setTimeout(r, 300));
          await broker.start();
        })();
      },
    });
    const { verified, stats } = await downloadBundle(opts);
    await outage;
    expect(outage).toBeDefined();
    expect(verified.signature.status).toBe('valid');
    expect(stats.reconnects).toBeGreaterThanOrEqual(1);
    // Each block written exactly once, and no file byte received twice (window 1, one chunk per block).
    expect(stats.blocksFetched).toBe(blocks);
    expect(stats.bytesReceived).toBe(bytes + meta);
  }, 60_000);

  it('resumes after the downloader is killed -9 and restarted, from the bitmap on disk', async () => {
    const { blocks, manifest } = await smallFiles(fx.small);
    // 512-byte replies: eight requests per 4 KiB block, so the first run is still going when killed.
    const opts = await base(fx.small, { window: 1, maxPacketBytes: 1024 + 512 });
    const { verify: _v, ...plain } = opts;
    const run = () => spawn(path.resolve(here, '../../node_modules/.bin/vite-node'), [path.join(here, 'download-child.ts'), JSON.stringify(plain), fx.trustDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const marked = async (): Promise<number> => {
      let count = 0;
      for (const e of await fsp.readdir(opts.staging).catch(() => [] as string[])) {
        if (e.endsWith('.blocks')) count += (await fsp.readFile(path.join(opts.staging, e))).filter((b) => b === 1).length;
      }
      return count;
    };
    const first = run();
    let err = '';
    first.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const end = Date.now() + 60_000;
    while ((await marked()) < 20) {
      if (Date.now() > end || first.exitCode !== null) throw new Error(`the first run never got 20 blocks in: ${err}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise<void>((resolve) => (first.once('close', () => resolve()), first.kill('SIGKILL')));
    const had = await marked();
    const second = run();
    let out = '';
    second.stdout.on('data', (d: Buffer) => (out += d.toString()));
    second.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => second.once('close', resolve));
    expect(code, err).toBe(0);
    const stats = JSON.parse(out.trim().split('\n').at(-1)!) as DownloadStats;
    expect(stats.filesReused).toContain(MANIFEST_FILE);
    expect(stats.blocksResumed).toBeGreaterThanOrEqual(had);
    const reusedBlocks = [...manifest.stages, ...manifest.files].filter((f) => stats.filesReused.includes(f.file)).reduce((k, f) => k + Math.ceil(f.bytes / 4096), 0);
    expect(stats.blocksFetched + stats.blocksResumed + reusedBlocks).toBe(blocks);
    expect(stats.blocksFetched).toBeLessThanOrEqual(blocks - had);
    const staged = await loadBundleFiles(opts.staging);
    expect(staged.files.get('stage-0.onnx')!.length).toBe(manifest.stages[0]!.bytes);
  }, 120_000);

  /** A file server that changes byte 0 of block `block` of `file` in the first `times` replies that carry it. */
  async function rogueServer(bundle: string, file: string, block: number, times: number) {
    const files = (await loadBundleFiles(bundle)).files;
    const byHash = new Map([...files.values()].map((d) => [sha256Hex(d), d]));
    const target = sha256Hex(files.get(file)!);
    let tampered = 0;
    const conn = await connectMqtt({ url: broker.url, clientId: `rogue-${n}`, protocolVersion: 5 });
    conn.onMessage((m) => {
      const req = JSON.parse(m.payload.toString()) as { sha256: string; offset: number; length: number };
      const data = Buffer.from(byHash.get(req.sha256)!.subarray(req.offset, req.offset + req.length));
      if (req.sha256 === target && req.offset === block * 4096 && tampered < times) {
        data[0] = data[0]! ^ 0xff;
        tampered++;
      }
      void conn
        .publish(m.properties!.responseTopic!, data, { qos: 1, properties: { correlationData: m.properties!.correlationData!, userProperties: { status: 'ok' } } }).catch(() => undefined);
    });
    // Not in the shared group: the real server is closed for these tests, so only this one answers.
    await conn.subscribe(fileServerSubscription(false), 1);
    return { conn, tampered: () => tampered };
  }

  it('refuses a tampered block, asks again, and fails with the reason when it stays tampered', async () => {
    await server.close();
    try {
      const once = await rogueServer(fx.small, 'stage-0.onnx', 5, 1);
      const ok = await downloadBundle(await base(fx.small, { window: 2 }));
      expect(once.tampered()).toBe(1);
      expect(ok.stats.badBlocks).toBe(1);
      expect(ok.verified.signature.status).toBe('valid');
      await once.conn.end();

      const always = await rogueServer(fx.small, 'stage-0.onnx', 5, Infinity);
      const opts = await base(fx.small, { window: 2 });
      const err = await downloadBundle(opts).catch((e: unknown) => e);
      await always.conn.end();
      expect(err).toBeInstanceOf(DownloadError);
      expect((err as DownloadError).reason).toMatch(/^stage-0\.onnx block 5: failed its hash in the signed manifest 3 times \(the file server sent tampered or damaged data\)/);
      expect(always.tampered()).toBe(3);
      // Never written: the block's mark is clear and its bytes are still zero.
      const bits = await fsp.readFile(path.join(opts.staging, '.stage-0.onnx.blocks'));
      expect(bits[5]).toBe(0);
      const part = await fsp.readFile(path.join(opts.staging, '.stage-0.onnx.part'));
      expect(part.subarray(5 * 4096, 6 * 4096).every((b) => b === 0)).toBe(true);
      await expect(fsp.access(path.join(opts.staging, 'stage-0.onnx'))).rejects.toThrow();
    } finally {
      server = await startFileServer({ brokerUrl: broker.url, bundles: [fx.zoo, fx.small, fx.update] });
    }
  }, 60_000);

  it('completes with two server instances when one dies mid-download', async () => {
    const second = await startFileServer({ brokerUrl: broker.url, bundles: [fx.small] });
    const { blocks } = await smallFiles(fx.small);
    const before = server.stats().served;
    let killed = false;
    const opts = await base(fx.small, {
      window: 4,
      onProgress: (p) => {
        if (!killed && p.blocksDone >= 30) {
          killed = true;
          server.abort();
        }
      },
    });
    try {
      const { verified, stats } = await downloadBundle(opts);
      expect(killed).toBe(true);
      expect(verified.signature.status).toBe('valid');
      expect(stats.blocksFetched).toBe(blocks);
      expect(server.stats().served - before).toBeGreaterThan(0);
      expect(second.stats().served).toBeGreaterThan(0);
    } finally {
      await second.close();
      server = await startFileServer({ brokerUrl: broker.url, bundles: [fx.zoo, fx.small, fx.update] });
    }
  }, 60_000);

  it('stops when canceled, with the reason, and keeps what it had for a later resume', async () => {
    const stop = new AbortController();
    const opts = await base(fx.small, { window: 2, signal: stop.signal, onProgress: (p) => p.blocksDone >= 10 && stop.abort() });
    const err = await downloadBundle(opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as DownloadError).reason).toBe('canceled');
    const { signal: _s, onProgress: _p, ...again } = opts;
    const { stats } = await downloadBundle(again);
    expect(stats.blocksResumed).toBeGreaterThanOrEqual(10);
  });

  it('bounds every request field: wrong response topic dropped, bad ranges and unknown files answered with a status', async () => {
    const replies: { status?: string; reason?: string }[] = [];
    const c = await connectMqtt({ url: broker.url, clientId: 'prober', protocolVersion: 5, onMessage: (m) => replies.push(m.properties?.userProperties ?? {}) });
    await c.subscribe('edgeexit/files/v1/lab/prober/reply', 1);
    await c.subscribe('edgeexit/files/v1/lab/other/reply', 1);
    const ask = (payload: unknown, responseTopic = 'edgeexit/files/v1/lab/prober/reply') =>
      c.publish('edgeexit/files/v1/lab/prober/get', Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)), { qos: 1, properties: { responseTopic, correlationData: Buffer.from('x') } });
    const sha = (await refsOf(fx.small)).manifestJson.stages[0]!.sha256;
    const refusedBefore = server.stats().refused;
    await ask({ sha256: sha, offset: 0, length: 10 }, 'edgeexit/files/v1/lab/other/reply');
    await ask({ sha256: sha, offset: 0, length: 70_000 });
    await ask({ sha256: sha, offset: 1e9, length: 10 });
    await ask({ sha256: '0'.repeat(64), offset: 0, length: 10 });
    await ask('{"sha256": 1');
    await ask({ sha256: sha, offset: 0, length: 10, extra: 1 });
    const end = Date.now() + 10_000;
    while (replies.length < 5 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    await c.end();
    expect(replies.map((r) => r.status)).toEqual(['bad-request', 'bad-request', 'not-found', 'bad-request', 'bad-request']);
    const refused = server.stats().refused;
    expect((refused.responseTopic ?? 0) - (refusedBefore.responseTopic ?? 0)).toBe(1);
  });
});

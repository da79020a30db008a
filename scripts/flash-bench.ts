// Flashing over MQTT 5: time and bytes on the wire to flash a ~1 MB and a ~20 MB bundle to 1 and to
// 100 simulated devices through a Mosquitto this script starts, and a thresholds-only update of
// each. The zoo model fmnist-branchy (fp32, rpi4) is compiled, then padded with a synthetic random
// file listed in the manifest to reach each size, and signed. Each simulated device has its own
// store (BundleStore) and does what a device does between "job received" and "switched": download
// into staging (signature checked against its trust store, every block against the signed
// manifest, each block and bitmap mark fsync'd), verify the staged bundle whole, install it into
// its store (content-addressed copy, fsync'd, journal lines, pointer switch) and remove staging.
// The ML self-test is not part of it (it costs the same however the bundle arrived; `npm run
// bench` measures inference). For the update a device offers its installed bundle as local files,
// so only what changed moves. Each case runs twice, on fresh device stores: `copied` writes every
// file (staging from the installed bundle, then the store from staging), `linked` hard-links files
// that are already on the device's disk, as `edgeexit agent` does (download linkLocal, install
// linkFiles). Bytes on the wire are counted by a TCP relay between the devices and
// the broker (both directions, MQTT headers and acks included); the file server, the broker and
// every device run on this one machine (devices in this process), so times are a bound for a
// loopback link, not a network.
//
//   npm run bench:flash [-- --devices 1,100 --sizes 1,20 --modes copied,linked --json .bench/flash-bench.json]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { compileModel } from '../src/compiler/index.js';
import { packageRoot } from '../src/devices/load.js';
import { MANIFEST_FILE, SIGNATURE_FILE, addTrustedKey, encodeManifest, generateKeyPair, loadBundleFiles, loadPrivateKey, loadTrustStore, parseManifest, sha256Hex, signManifest, withBlockHashes, writeBundleAtomic, type TrustStore } from '../src/bundle/index.js';
import { downloadBundle, type DownloadStats, type FileRef } from '../src/agent/download.js';
import { BundleStore } from '../src/agent/store.js';
import { startFileServer } from '../src/fleet/file-server.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const deviceCounts = flag('devices', '1,100').split(',').map(Number);
const sizesMb = flag('sizes', '1,20').split(',').map(Number);
const modes = flag('modes', 'copied,linked').split(',') as ('copied' | 'linked')[];
const jsonOut = flag('json', '.bench/flash-bench.json');
const log = (l: string) => process.stderr.write(l + '\n');

function mosquittoBinary(): string {
  for (const p of [process.env.MOSQUITTO, '/usr/sbin/mosquitto', '/usr/bin/mosquitto']) if (p && spawnSync(p, ['-h']).error === undefined) return p;
  throw new Error('mosquitto not found: install it (apt-get install mosquitto) or set MOSQUITTO');
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function startMosquitto(dir: string): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  await fsp.writeFile(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'set_tcp_nodelay true', ''].join('\n'));
  const proc = spawn(mosquittoBinary(), ['-c', conf], { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    const up = await new Promise<boolean>((r) => net.connect(port, '127.0.0.1').once('connect', function (this: net.Socket) { this.destroy(); r(true); }).once('error', () => r(false)));
    if (up) return { port, proc };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('mosquitto did not start');
}

/** A relay that counts the bytes of every connection through it, both ways. */
async function countingRelay(target: number): Promise<{ port: number; bytes: () => number; reset: () => void; close: () => void }> {
  let bytes = 0;
  const server = net.createServer((c) => {
    c.setNoDelay(true);
    const u = net.connect(target, '127.0.0.1');
    u.setNoDelay(true);
    c.on('data', (d) => (bytes += d.length));
    u.on('data', (d) => (bytes += d.length));
    c.pipe(u).on('error', () => undefined);
    u.pipe(c).on('error', () => undefined);
    c.on('error', () => u.destroy()).on('close', () => u.destroy());
    u.on('error', () => c.destroy()).on('close', () => c.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, bytes: () => bytes, reset: () => (bytes = 0), close: () => server.close() };
}

/** The zoo bundle plus `filler` random bytes as a listed file, signed. */
async function padded(zoo: string, out: string, filler: number, key: string, thresholds?: number[]): Promise<void> {
  const b = await loadBundleFiles(zoo);
  const files = new Map([...b.files].filter(([n]) => n !== MANIFEST_FILE && n !== SIGNATURE_FILE));
  const pad = path.join(path.dirname(out), `filler-${filler}.bin`);
  const data = await fsp.readFile(pad).catch(async () => {
    const d = randomBytes(filler);
    await fsp.writeFile(pad, d);
    return d;
  });
  files.set('filler.bin', new Uint8Array(data));
  let m = parseManifest(b.files.get(MANIFEST_FILE)!);
  m = { ...m, files: [...m.files, { file: 'filler.bin', sha256: sha256Hex(data), bytes: data.length }], exitPolicy: thresholds ? { ...m.exitPolicy, thresholds } : m.exitPolicy };
  const bytes = encodeManifest(withBlockHashes(m, files));
  const entries = [...files].map(([name, d]) => ({ name, data: d }));
  entries.push({ name: MANIFEST_FILE, data: bytes }, { name: SIGNATURE_FILE, data: signManifest(bytes, await loadPrivateKey(key)) });
  await writeBundleAtomic(out, entries);
}

async function refs(bundle: string) {
  const m = await fsp.readFile(path.join(bundle, MANIFEST_FILE));
  const s = await fsp.readFile(path.join(bundle, SIGNATURE_FILE));
  return { manifest: { sha256: sha256Hex(m), bytes: m.length }, signature: { sha256: sha256Hex(s), bytes: s.length } };
}

async function bundleBytes(bundle: string): Promise<number> {
  let n = 0;
  for (const f of await fsp.readdir(bundle)) n += (await fsp.stat(path.join(bundle, f))).size;
  return n;
}

interface Row {
  case: string;
  bundleBytes: number;
  devices: number;
  /** From the first request to the last device switched. */
  seconds: number;
  /** Slowest single device, download and install. */
  slowestDeviceSeconds: number;
  wireBytes: number;
  filePayloadBytes: number;
  requests: number;
  wirePerDeviceVsBundle: number;
  /** Bytes this process had the kernel write to storage during the case (/proc/self/io write_bytes; Linux). */
  diskWrittenBytes: number | null;
}

/** /proc/self/io's write_bytes: what this process sent to the storage layer so far (null off Linux). */
async function writtenBytes(): Promise<number | null> {
  const io = await fsp.readFile('/proc/self/io', 'utf8').catch(() => null);
  const m = io?.match(/^write_bytes:\s*(\d+)/m);
  return m ? Number(m[1]) : null;
}

/** One simulated device: its own store, staging under it, its own MQTT identity. */
interface Device {
  name: string;
  store: BundleStore;
}

/**
 * What a device does for one job: download and verify into staging, install into its store
 * (journal, content-addressed copy, pointer switch, previous kept), remove staging.
 */
async function flashDevice(d: Device, refs: { manifest: FileRef; signature: FileRef }, brokerUrl: string, trust: TrustStore, link: boolean): Promise<{ stats: DownloadStats; seconds: number }> {
  const t0 = performance.now();
  const from = await d.store.current();
  const staging = path.join(d.store.root, 'staging', refs.manifest.sha256.slice(0, 12));
  const { stats } = await downloadBundle({ brokerUrl, fleet: 'bench', device: d.name, ...refs, staging, have: from ? [d.store.bundleDir(from)] : [], linkLocal: link, verify: { trust, requireSignature: true } });
  const release = await d.store.lock();
  try {
    const job = randomBytes(8).toString('hex');
    await d.store.record({ job, state: 'started', bundle: refs.manifest.sha256, from });
    const id = await d.store.put((await loadBundleFiles(staging)).files, link ? staging : undefined);
    await d.store.record({ job, state: 'staged', bundle: id, from });
    await d.store.record({ job, state: 'active', bundle: id, from });
    await d.store.setCurrent(id);
    if (from) await d.store.setPrevious([from]);
    await d.store.record({ job, state: 'committed', bundle: id, from });
  } finally {
    await release();
  }
  await fsp.rm(staging, { recursive: true, force: true });
  return { stats, seconds: (performance.now() - t0) / 1000 };
}

const mosquittoVersion = (): string => (spawnSync(mosquittoBinary(), ['-h'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '').replace(/^mosquitto version /, 'Mosquitto ');
const load = (): string => os.loadavg().map((l) => l.toFixed(2)).join(' ');

const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-flash-bench-'));
const rows: Row[] = [];
const loadBefore = load();
const started = performance.now();
let broker: ChildProcess | undefined;
try {
  log(`compiling fmnist-branchy for rpi4 (fp32) into ${work} …`);
  const zoo = path.join(work, 'zoo');
  await compileModel({ model: path.join(packageRoot(), 'models', 'fmnist-branchy', 'fmnist-branchy.onnx'), device: 'rpi4', precision: 'fp32', out: zoo, calibrationLimit: 32, latency: false });
  const keys = await generateKeyPair(path.join(work, 'signer'));
  const trustDir = path.join(work, 'trust');
  await addTrustedKey(trustDir, keys.publicKey);
  const trust = await loadTrustStore(trustDir);
  const zooBytes = await bundleBytes(zoo);
  const bundles: { name: string; dir: string; update: string }[] = [];
  for (const mb of sizesMb) {
    const dir = path.join(work, `b${mb}`);
    const filler = Math.max(0, mb * 1_000_000 - zooBytes);
    await padded(zoo, dir, filler, keys.privateKey);
    const update = path.join(work, `b${mb}-update`);
    await padded(zoo, update, filler, keys.privateKey, [0.8, 0.8]);
    bundles.push({ name: `${mb} MB`, dir, update });
  }
  const mq = await startMosquitto(work);
  broker = mq.proc;
  const relay = await countingRelay(mq.port);
  const brokerUrl = `mqtt://127.0.0.1:${relay.port}`;
  const server = await startFileServer({ brokerUrl: `mqtt://127.0.0.1:${mq.port}`, bundles: bundles.flatMap((b) => [b.dir, b.update]) });
  let fleetNo = 0;
  const flash = async (label: string, bundle: string, devices: Device[], link: boolean): Promise<void> => {
    const r = await refs(bundle);
    relay.reset();
    const w0 = await writtenBytes();
    const t0 = performance.now();
    const done = await Promise.all(devices.map((d) => flashDevice(d, r, brokerUrl, trust, link)));
    const seconds = (performance.now() - t0) / 1000;
    const w1 = await writtenBytes();
    const size = await bundleBytes(bundle);
    const wire = relay.bytes();
    const stats = done.map((x) => x.stats);
    rows.push({
      case: label,
      bundleBytes: size,
      devices: devices.length,
      seconds,
      slowestDeviceSeconds: Math.max(...done.map((x) => x.seconds)),
      wireBytes: wire,
      filePayloadBytes: stats.reduce((n, x) => n + x.bytesReceived, 0),
      requests: stats.reduce((n, x) => n + x.requests, 0),
      wirePerDeviceVsBundle: wire / devices.length / size,
      diskWrittenBytes: w0 !== null && w1 !== null ? w1 - w0 : null,
    });
    log(`${label}: ${devices.length} device(s) in ${seconds.toFixed(2)} s`);
  };
  for (const b of bundles) {
    for (const n of deviceCounts) {
      for (const mode of modes) {
        const fleet = ++fleetNo;
        const devices: Device[] = [];
        for (let i = 0; i < n; i++) devices.push({ name: `f${fleet}-d${i}`, store: await BundleStore.open(path.join(work, `fleet-${fleet}`, `d${i}`)) });
        await flash(`full ${b.name}, ${mode}`, b.dir, devices, mode === 'linked');
        await flash(`thresholds-only ${b.name}, ${mode}`, b.update, devices, mode === 'linked');
        // Each fleet's stores go before the next: 100 devices × 20 MB × 2 bundles is disk enough.
        await fsp.rm(path.join(work, `fleet-${fleet}`), { recursive: true, force: true });
      }
    }
  }
  await server.close();
  relay.close();
} finally {
  broker?.kill('SIGKILL');
  await fsp.rm(work, { recursive: true, force: true });
}

const mb = (b: number) => (b / 1_000_000).toFixed(2);
const head = ['case', 'bundle MB', 'devices', 'time s', 'slowest device s', 'MB on wire', 'file MB received', 'requests', 'wire per device ÷ bundle', 'MB written to disk'];
const body = rows.map((r) => [r.case, mb(r.bundleBytes), String(r.devices), r.seconds.toFixed(2), r.slowestDeviceSeconds.toFixed(2), mb(r.wireBytes), mb(r.filePayloadBytes), String(r.requests), r.wirePerDeviceVsBundle.toFixed(4), r.diskWrittenBytes === null ? '—' : mb(r.diskWrittenBytes)]);
const numeric = head.map((_, i) => i > 0);
const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
const line = (cells: string[]) => '| ' + cells.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ') + ' |';
const cpu = os.cpus();
console.log(`flash bench, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${cpu.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${mosquittoVersion()}; load average (1/5/15 min) ${loadBefore} before, ${load()} after; ${((performance.now() - started) / 1000).toFixed(0)} s in all\n`);
console.log(line(head));
console.log('|' + widths.map((w, i) => (numeric[i] ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|');
for (const r of body) console.log(line(r));
await fsp.mkdir(path.dirname(jsonOut), { recursive: true });
await fsp.writeFile(jsonOut, JSON.stringify({ machine: { cpu: cpu[0]?.model.trim(), cores: cpu.length, node: process.version, mosquitto: mosquittoVersion(), loadBefore, loadAfter: load() }, rows }, null, 2) + '\n');

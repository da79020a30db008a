// Bundle transfer over MQTT 5: time and bytes on the wire to move a ~1 MB and a ~20 MB bundle to 1
// and to 10 simulated devices through a local Mosquitto, and a thresholds-only update. The zoo
// model fmnist-branchy (fp32, rpi4) is compiled, then padded with a synthetic random file listed
// in the manifest to reach each size, and signed; the devices check the signature with a trust
// store, as a real one would. Bytes on the wire are counted by a TCP relay between the devices and
// the broker (both directions, MQTT headers and acks included); the file server, the broker and
// every downloader run on this one machine (downloaders in this process), so times are a bound
// for a loopback link, not a network.
//
//   npm run bench:flash [-- --devices 1,10 --sizes 1,20 --json .bench/flash-bench.json]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { compileModel } from '../src/compiler/index.js';
import { packageRoot } from '../src/devices/load.js';
import { MANIFEST_FILE, SIGNATURE_FILE, addTrustedKey, encodeManifest, generateKeyPair, loadBundleFiles, loadPrivateKey, loadTrustStore, parseManifest, sha256Hex, signManifest, withBlockHashes, writeBundleAtomic } from '../src/bundle/index.js';
import { downloadBundle, type DownloadStats } from '../src/agent/download.js';
import { startFileServer } from '../src/fleet/file-server.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const deviceCounts = flag('devices', '1,10').split(',').map(Number);
const sizesMb = flag('sizes', '1,20').split(',').map(Number);
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
  seconds: number;
  wireBytes: number;
  filePayloadBytes: number;
  requests: number;
  wirePerDeviceVsBundle: number;
}

const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-flash-bench-'));
const rows: Row[] = [];
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
  const server = await startFileServer({ brokerUrl: `mqtt://127.0.0.1:${mq.port}`, bundles: bundles.flatMap((b) => [b.dir, b.update]) });
  let run = 0;
  const flash = async (label: string, bundle: string, devices: number, have: (d: number) => string[]): Promise<string[]> => {
    const r = await refs(bundle);
    relay.reset();
    const stagings = Array.from({ length: devices }, () => path.join(work, `staging-${++run}`));
    const t0 = performance.now();
    const stats: DownloadStats[] = await Promise.all(
      stagings.map((staging, d) =>
        downloadBundle({ brokerUrl: `mqtt://127.0.0.1:${relay.port}`, fleet: 'bench', device: `d${run}-${d}`, ...r, staging, have: have(d), verify: { trust, requireSignature: true } }).then((x) => x.stats),
      ),
    );
    const seconds = (performance.now() - t0) / 1000;
    const size = await bundleBytes(bundle);
    const wire = relay.bytes();
    rows.push({ case: label, bundleBytes: size, devices, seconds, wireBytes: wire, filePayloadBytes: stats.reduce((n, s) => n + s.bytesReceived, 0), requests: stats.reduce((n, s) => n + s.requests, 0), wirePerDeviceVsBundle: wire / devices / size });
    log(`${label}: ${devices} device(s) in ${seconds.toFixed(2)} s`);
    return stagings;
  };
  for (const b of bundles) {
    let last: string[] = [];
    for (const n of deviceCounts) last = await flash(`full ${b.name}`, b.dir, n, () => []);
    await flash(`thresholds-only ${b.name}`, b.update, last.length, (d) => [last[d]!]);
  }
  await server.close();
  relay.close();
} finally {
  broker?.kill('SIGKILL');
  await fsp.rm(work, { recursive: true, force: true });
}

const mb = (b: number) => (b / 1_000_000).toFixed(2);
const head = ['case', 'bundle MB', 'devices', 'time s', 'MB on wire', 'file MB recv', 'requests', 'wire/device ÷ bundle'];
const body = rows.map((r) => [r.case, mb(r.bundleBytes), String(r.devices), r.seconds.toFixed(2), mb(r.wireBytes), mb(r.filePayloadBytes), String(r.requests), r.wirePerDeviceVsBundle.toFixed(4)]);
const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
console.log(line(head));
console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
for (const r of body) console.log(line(r));
console.log(`\n${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`);
await fsp.mkdir(path.dirname(jsonOut), { recursive: true });
await fsp.writeFile(jsonOut, JSON.stringify(rows, null, 2) + '\n');

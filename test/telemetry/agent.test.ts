// Device telemetry end to end with real parts only: a compiled zoo bundle, Fashion-MNIST PNGs,
// Mosquitto on a free port, the collector with a SQLite file. `run --telemetry` and `agent`
// (watch and --loop) must land exactly what they classified in the collector: count, exit
// histogram, the bundle's manifest hash in the birth, a clean death at the end. Bad input: an
// unreachable broker keeps the windows in the outbox for the next run; bad --window, device id
// and URL are refused before anything is loaded.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentCommand } from '../../src/cli/commands/agent.js';
import { compileModel } from '../../src/compiler/index.js';
import { startCollector, type Collector } from '../../src/fleet/index.js';
import { Outbox } from '../../src/telemetry/outbox.js';
import { runCli } from '../cli/helpers.js';
import { fmnistImages, scratch, trustedSigner, ZOO } from '../runtime/helpers.js';
import { MOSQUITTO, startBroker, type Broker } from './mqtt/broker.js';
import { until as waitUntil } from '../support/wait.js';

const FLEET = 'lab';

const until = (pred: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> => waitUntil(pred, what, ms, 25);

async function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

interface RunLine {
  file: string;
  exit: number;
}

let dir: string;
let bundle: string;
let manifestSha: string;
let images: string[];
/** The device's trust store: it trusts the key the bundle is signed with. */
let trust: string;

beforeAll(async () => {
  dir = await scratch('telemetry-e2e');
  bundle = path.join(dir, 'bundle');
  const signer = await trustedSigner(dir);
  trust = signer.trustDir;
  await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: bundle, key: signer.privateKey });
  manifestSha = createHash('sha256').update(await fsp.readFile(path.join(bundle, 'manifest.json'))).digest('hex');
  images = await fmnistImages(3); // 30 PNGs, 3 per class folder
}, 180_000);

describe("run --telemetry and agent to `collect`'s embedded aedes broker (MQTT 3.1.1 only), no extra flags", () => {
  it('run and agent negotiate 3.1.1 and land in the collector; a forced --mqtt-version 5 is refused with the fix; a bad version is refused', async () => {
    const collector = await startCollector({ dbFile: path.join(dir, 'aedes.db'), port: 0, host: '127.0.0.1', onLog: () => undefined });
    try {
      const run = await runCli('run', bundle, '--trust-dir', trust, ...images.slice(0, 7), '--threads', '1', '--telemetry', collector.url, '--device-id', 'pi-auto', '--state-dir', path.join(dir, 'state-auto'));
      expect(run.code, run.err).toBe(0);
      expect(run.err).toMatch(/telemetry: 1 window from default\/pi-auto to mqtt:\/\/127\.0\.0\.1:\d+, all acknowledged/);
      await until(async () => (await collector.store.totals()).find((t) => t.device === 'pi-auto')?.count === 7, '7 inferences stored');

      const watch = path.join(dir, 'agent-auto-in');
      await fsp.mkdir(watch, { recursive: true });
      for (const f of images.slice(0, 3)) await fsp.copyFile(f, path.join(watch, path.basename(f)));
      const ac = new AbortController();
      let seen = 0;
      const done = agentCommand(
        { bundle, trustDir: trust, watch, loop: true, telemetry: collector.url, deviceId: 'pi-agent-auto', stateDir: path.join(dir, 'state-agent-auto'), threads: 1, pollMs: 50, onItems: (items) => (seen += items.length) },
        { out: () => undefined, err: () => undefined },
        ac.signal,
      );
      await until(() => seen >= 3, 'the agent classified the folder');
      ac.abort();
      const a = await done;
      expect(a.telemetry.queued).toBe(0);
      await until(async () => (await collector.store.totals()).find((t) => t.device === 'pi-agent-auto')?.count === a.stats.classified, 'the agent inferences stored');

      const v5 = await runCli('run', bundle, '--trust-dir', trust, ...images.slice(0, 3), '--threads', '1', '--telemetry', collector.url, '--mqtt-version', '5', '--device-id', 'pi-v5', '--state-dir', path.join(dir, 'state-v5'), '--drain-timeout', '300ms');
      expect(v5.code).toBe(75);
      expect(v5.err).toMatch(/Unacceptable protocol version.*drop --mqtt-version to let the device negotiate it/);
      const bad = await runCli('run', bundle, '--trust-dir', trust, images[0]!, '--telemetry', collector.url, '--mqtt-version', '3');
      expect(bad.code).toBe(2);
      expect(bad.err).toMatch(/--mqtt-version: expected 5 \(MQTT 5\) or 4 \(MQTT 3\.1\.1\), got 3/);
    } finally {
      await collector.close();
    }
  });
});

MOSQUITTO.describe('device telemetry end to end (Mosquitto)', () => {
  let broker: Broker;
  let collector: Collector;
  const logs: string[] = [];

  beforeAll(async () => {
    broker = await startBroker();
    collector = await startCollector({ brokerUrl: broker.url, dbFile: path.join(dir, 'fleet.db'), fleet: FLEET, onLog: (l) => logs.push(l) });
  }, 180_000);

  afterAll(async () => {
    await collector?.close();
    await broker?.dispose();
  });

  const totalsOf = async (device: string) => (await collector.store.totals()).find((t) => t.device === device);
  const deviceRow = async (device: string) => (await collector.store.devices()).find((d) => d.device === device);

  it('run --telemetry: the collector stores what was classified, with the manifest hash in the birth and a clean death', async () => {
    const state = path.join(dir, 'state-run');
    const r = await runCli('run', bundle, '--trust-dir', trust, ...images, '--json', '--threshold', '0.9,0.9', '--threads', '1',
      '--telemetry', broker.url, '--fleet', FLEET, '--device-id', 'pi-run', '--state-dir', state, '--window-count', '8',
    );
    expect(r.code, r.err).toBe(0);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as RunLine);
    expect(lines).toHaveLength(30);
    const exitCounts = [0, 1, 2].map((k) => lines.filter((l) => l.exit === k).length);
    expect(exitCounts.filter((n) => n > 0).length).toBeGreaterThan(1); // the thresholds do split the images
    expect(r.err).toMatch(/telemetry: 4 windows from lab\/pi-run to mqtt:\/\/127\.0\.0\.1:\d+, all acknowledged/);

    await until(async () => (await totalsOf('pi-run'))?.count === 30, '30 inferences stored');
    const t = (await totalsOf('pi-run'))!;
    expect(t.windows).toBe(4); // 8 + 8 + 8 + 6
    expect(t.exits).toEqual(exitCounts);
    await until(async () => (await deviceRow('pi-run'))?.online === false, 'the clean death');
    const d = (await deviceRow('pi-run'))!;
    expect(d.birth?.bundle.manifestSha256).toBe(manifestSha);
    expect(d.birth?.bundle.thresholds).toEqual([0.9, 0.9]);
    expect(d.birth?.bundle.precision).toBe('fp32');
    expect(d.birth?.profile).toBe('rpi4');
    expect(d.birth?.runtime.onnxruntime).toMatch(/^\d+\.\d+/);
    expect(logs.some((l) => /death: pi-run offline \(bdSeq 0, clean\)/.test(l))).toBe(true);
    // Accuracy went out too: every image sits in its class's folder.
    const w = await collector.store.latestWindows('pi-run', 10);
    expect(w.reduce((a, x) => a + x.count, 0)).toBe(30);
  });

  it('agent --watch classifies images as they arrive and stops cleanly, flushing the last window', async () => {
    const watch = path.join(dir, 'incoming');
    await fsp.mkdir(watch, { recursive: true });
    const ac = new AbortController();
    let seen = 0;
    const err: string[] = [];
    const io = { out: () => undefined, err: (t: string) => void err.push(t) };
    const done = agentCommand(
      { bundle, trustDir: trust, watch, telemetry: broker.url, fleet: FLEET, deviceId: 'pi-agent', stateDir: path.join(dir, 'state-agent'), threshold: '0.9,0.9', threads: 1, pollMs: 50, onItems: (items) => (seen += items.length) },
      io,
      ac.signal,
    );
    // Arrive in two groups, each file renamed into place whole (as a camera spool would).
    for (const [k, group] of [images.slice(0, 12), images.slice(12, 20)].entries()) {
      for (const [i, f] of group.entries()) {
        const tmp = path.join(dir, `tmp-${k}-${i}.png`);
        await fsp.copyFile(f, tmp);
        await fsp.rename(tmp, path.join(watch, `${path.basename(path.dirname(f))}-${k}-${i}.png`));
      }
      const want = k === 0 ? 12 : 20;
      await until(() => seen === want, `${want} images classified`);
    }
    ac.abort();
    const r = await done;
    expect(r.stats).toMatchObject({ classified: 20, failed: 0 });
    expect(r.telemetry.queued).toBe(0);
    await until(async () => (await totalsOf('pi-agent'))?.count === 20, '20 inferences stored');
    await until(async () => (await deviceRow('pi-agent'))?.online === false, 'the clean death');
    expect((await deviceRow('pi-agent'))!.birth?.bundle.manifestSha256).toBe(manifestSha);
    expect(err.join('')).toMatch(/agent stopped: 20 classified, 0 unreadable/);
  });

  it('agent as a process: SIGINT flushes the window, sends a clean death and exits 0', async () => {
    const watch = path.join(dir, 'incoming-sig');
    await fsp.mkdir(watch, { recursive: true });
    const here = path.dirname(fileURLToPath(import.meta.url));
    const child = spawn(
      path.resolve(here, '../../node_modules/.bin/vite-node'),
      [path.join(here, 'cli-child.ts'), 'agent', bundle, '--trust-dir', trust, '--watch', watch, '--telemetry', broker.url, '--fleet', FLEET, '--device-id', 'pi-sig', '--state-dir', path.join(dir, 'state-sig'), '--window', '200ms', '--threads', '1'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    try {
      await until(() => /agent: watching/.test(err) || child.exitCode !== null, 'the agent to start', 60_000);
      for (const [i, f] of images.slice(0, 5).entries()) {
        await fsp.copyFile(f, path.join(dir, `sig-${i}.png`));
        await fsp.rename(path.join(dir, `sig-${i}.png`), path.join(watch, `${path.basename(path.dirname(f))}-${i}.png`));
      }
      // 200 ms windows: the classified images reach the collector while the agent still runs.
      await until(async () => (await totalsOf('pi-sig'))?.count === 5, '5 inferences stored');
      expect((await deviceRow('pi-sig'))?.online).toBe(true);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    expect(err).toMatch(/agent stopped: 5 classified, 0 unreadable/);
    await until(async () => (await deviceRow('pi-sig'))?.online === false, 'the clean death');
    expect(logs.some((l) => /death: pi-sig offline \(bdSeq \d+, clean\)/.test(l))).toBe(true);
    expect((await totalsOf('pi-sig'))!.count).toBe(5);
  });

  it('agent --loop re-runs the folder until stopped; the collector holds every inference', async () => {
    const folder = path.join(dir, 'loop');
    await fsp.mkdir(folder, { recursive: true });
    for (const f of images.slice(0, 5)) await fsp.copyFile(f, path.join(folder, path.basename(f)));
    const ac = new AbortController();
    let seen = 0;
    const done = agentCommand(
      { bundle, trustDir: trust, watch: folder, loop: true, telemetry: broker.url, fleet: FLEET, deviceId: 'pi-loop', stateDir: path.join(dir, 'state-loop'), threads: 1, onItems: (items) => (seen += items.length) },
      { out: () => undefined, err: () => undefined },
      ac.signal,
    );
    await until(() => seen >= 15, 'three passes');
    ac.abort();
    const r = await done;
    expect(r.stats.classified).toBeGreaterThanOrEqual(15);
    expect(r.stats.passes).toBeGreaterThanOrEqual(3);
    await until(async () => (await totalsOf('pi-loop'))?.count === r.stats.classified, 'every inference stored');
  });

  it('an unreachable broker: the run classifies, says where the windows wait, exits 75, and the next run delivers them', async () => {
    const state = path.join(dir, 'state-offline');
    const dead = `mqtt://127.0.0.1:${await closedPort()}`;
    const a = await runCli('run', bundle, '--trust-dir', trust, ...images.slice(0, 10), '--threads', '1', '--telemetry', dead, '--fleet', FLEET, '--device-id', 'pi-offline', '--state-dir', state, '--drain-timeout', '300ms');
    expect(a.code, a.err).toBe(75);
    expect(a.out).toMatch(/exits\s+0 \(/); // the results were printed all the same
    expect(a.err).toMatch(/error: --telemetry mqtt:\/\/127\.0\.0\.1:\d+: 1 of the telemetry windows were not acknowledged within 0\.3 s/);
    expect(a.err).toMatch(/\(fix: check that the broker is up and reachable and a collector \(`edgeexit collect`\) is running, then send them with the next `edgeexit run` or `edgeexit agent` with --state-dir /);
    expect(a.err).toMatch(/warn: telemetry: 1 window from lab\/pi-offline to mqtt:\/\/127\.0\.0\.1:\d+: 1 not acknowledged within 0\.3 s \(last error: cannot connect to/);
    expect(a.err).toContain(`they stay in ${path.join(state, 'outbox')}`);
    const box = await Outbox.open(path.join(state, 'outbox'));
    expect(box.size()).toBe(1);
    expect(box.peek(1)[0]!.body).toMatchObject({ device: 'pi-offline', count: 10 });
    await box.close();

    const b = await runCli('run', bundle, '--trust-dir', trust, ...images.slice(10, 14), '--threads', '1', '--telemetry', broker.url, '--fleet', FLEET, '--device-id', 'pi-offline', '--state-dir', state);
    expect(b.code, b.err).toBe(0);
    await until(async () => (await totalsOf('pi-offline'))?.count === 14, 'both runs stored');
    expect((await totalsOf('pi-offline'))!.windows).toBe(2);
  });

  it('refuses a bad --window, device id, broker URL, TLS files or --watch folder, naming the flag', async () => {
    const img = images[0]!;
    const w = await runCli('run', bundle, '--trust-dir', trust, img, '--telemetry', broker.url, '--window', 'soon');
    expect(w.code).toBe(2);
    expect(w.err).toMatch(/--window: expected a duration of at least 100 ms, like 10s, 500ms or 1m, got "soon"/);
    const w0 = await runCli('run', bundle, '--trust-dir', trust, img, '--telemetry', broker.url, '--window', '10ms');
    expect(w0.code).toBe(2);
    const d = await runCli('run', bundle, '--trust-dir', trust, img, '--telemetry', broker.url, '--device-id', 'pi/7');
    expect(d.code).toBe(2);
    expect(d.err).toMatch(/--device-id: device id "pi\/7" is not usable in an MQTT topic/);
    const u = await runCli('run', bundle, '--trust-dir', trust, img, '--telemetry', 'http://collector.local');
    expect(u.code).toBe(2);
    expect(u.err).toMatch(/--telemetry: expected a broker URL mqtt:\/\/host\[:port\]/);
    const tls = await runCli('run', bundle, '--trust-dir', trust, img, '--telemetry', broker.url.replace('mqtt:', 'mqtts:'), '--tls-cert', path.join(dir, 'client.pem'), '--state-dir', path.join(dir, 'state-tls'));
    expect(tls.code).toBe(2);
    expect(tls.err).toMatch(/--tls-key: missing: a client certificate needs its key and the other way round \(fix: give both --tls-cert and --tls-key\)/);
    const ca = await runCli('run', bundle, '--trust-dir', trust, img, '--telemetry', broker.url.replace('mqtt:', 'mqtts:'), '--tls-ca', path.join(dir, 'no-ca.pem'), '--state-dir', path.join(dir, 'state-tls'));
    expect(ca.code).toBe(2);
    expect(ca.err).toMatch(/--tls-ca: cannot read .*no-ca\.pem \(ENOENT\) expected a PEM file/);
    const missing = await runCli('agent', bundle, '--trust-dir', trust, '--telemetry', broker.url);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/--watch: expected a folder images arrive in, got nothing/);
    const notDir = await runCli('agent', bundle, '--trust-dir', trust, '--telemetry', broker.url, '--watch', path.join(dir, 'no-such-folder'));
    expect(notDir.code).toBe(2);
    expect(notDir.err).toMatch(/--watch: expected a folder images arrive in, got ".*no-such-folder" \(fix: create the folder/);
  });
});

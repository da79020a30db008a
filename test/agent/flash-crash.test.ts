// kill -9 of the device's job agent at every step of a flash job (download, verify, self-test,
// switch, trial), through a real Mosquitto: after each kill the store runs the old or the new
// bundle, whole; restarted, the agent resumes the job from its record (the download from its
// bitmap) and finishes it, reporting succeeded after two attempts.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BundleStore, installBundle } from '../../src/agent/index.js';
import { decodeJobState, jobTopics } from '../../src/agent/job-protocol.js';
import { loadPrivateKey } from '../../src/bundle/signing.js';
import { loadTrustStore } from '../../src/bundle/trust.js';
import { verifyBundle } from '../../src/bundle/files.js';
import { startFileServer, type FileServer } from '../../src/fleet/file-server.js';
import { publishJobs, stageBundleFiles } from '../../src/fleet/jobs.js';
import { JOB_RECORD_FILE, JobAgent } from '../../src/agent/jobs.js';
import { promises as fsp } from 'node:fs';
import { until } from '../support/wait.js';
import { connectMqtt, type MqttConnection } from '../../src/telemetry/mqtt/client.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { scratch } from '../runtime/helpers.js';
import { compileFixture, newer, type Fixture } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function child(args: string[]): Promise<{ signal: NodeJS.Signals | null; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(path.resolve(here, '../../node_modules/.bin/vite-node'), [path.join(here, 'flash-child.ts'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('exit', (code, signal) => (signal === 'SIGKILL' || code === 0 ? resolve({ signal, out: out + err }) : reject(new Error(`flash-child exited ${code}:\n${out}\n${err}`))));
  });
}

MOSQUITTO.describe('kill -9 of the job agent mid-flash', () => {
  let fx: Fixture;
  let v1: string;
  let v2: string;
  let broker: Broker;
  let server: FileServer;
  let conn: MqttConnection;
  let files: string;

  beforeAll(async () => {
    fx = await compileFixture(await scratch('flash-crash'));
    v1 = await newer(fx.bundle, path.join(fx.dir, 'v1'), fx.privateKey, '1.0.0');
    v2 = await newer(fx.bundle, path.join(fx.dir, 'v2'), fx.privateKey, '1.1.0');
    files = path.join(fx.dir, 'files');
    broker = await startBroker({ config: ['set_tcp_nodelay true'] });
    server = await startFileServer({ brokerUrl: broker.url, bundles: [], blobDirs: [files] });
    conn = await connectMqtt({ url: broker.url, clientId: 'operator', protocolVersion: 5 });
  }, 180_000);
  afterAll(async () => {
    await conn?.end().catch(() => undefined);
    await server?.close().catch(() => undefined);
    await broker?.dispose();
  });

  for (const step of ['download', 'verify', 'self-test', 'switch', 'trial'] as const) {
    it(`killed at '${step}': the device runs a whole bundle, and the restarted agent finishes the job`, async () => {
      const device = `crash-${step}`;
      const root = await scratch(`flash-crash-${step}`);
      // v1 and v2 share their stage files (a version bump): a device running v1 would fetch only
      // the manifest. The download case starts from an empty store so there are blocks to cut.
      if (step !== 'download') expect((await installBundle({ root, bundle: v1, trustDir: fx.trustDir })).state).toBe('committed');
      const store = await BundleStore.open(root);
      const old = await store.current();
      const staged = await stageBundleFiles(v2, files);
      const [job] = await publishJobs(conn, staged, [{ fleet: 'lab', device }], await loadPrivateKey(fx.privateKey));
      const killed = await child([broker.url, root, fx.trustDir, device, step]);
      expect(killed.signal, killed.out).toBe('SIGKILL');
      expect(killed.out).toMatch(new RegExp(`state in-progress ${step} `));
      const running = await store.current();
      expect([old, staged.bundle]).toContain(running);
      if (running) {
        const v = await verifyBundle(store.bundleDir(running), { trust: await loadTrustStore(fx.trustDir), requireSignature: true });
        expect(v.signature.status).toBe('valid');
      }

      const done = await child([broker.url, root, fx.trustDir, device, 'none']);
      expect(done.out).toMatch(/^final succeeded 2 $/m);
      if (step === 'download') {
        // What the killed run had on disk (whole files, or blocks marked in a bitmap) is not fetched again.
        const m = /downloaded \d+ blocks \(\d+ bytes\), (\d+) resumed from before a restart, (\d+) files already here/.exec(done.out);
        expect(m, done.out).not.toBeNull();
        expect(Number(m![1]) + Number(m![2])).toBeGreaterThan(0);
      }
      expect(await store.current()).toBe(staged.bundle);
      // The operator sees it: the retained state says succeeded for this job.
      const seen = await new Promise<ReturnType<typeof decodeJobState>>((resolve) => {
        void connectMqtt({ url: broker.url, clientId: `check-${device}`, protocolVersion: 5, onMessage: (m) => resolve(decodeJobState(m.payload)) }).then(async (c) => (await c.subscribe(jobTopics('lab', device).state, 1), setTimeout(() => void c.end(), 2_000)));
      });
      expect(seen).toMatchObject({ job: job!.job, state: 'succeeded', attempts: 2, active: staged.bundle });
    }, 120_000);
  }

  it('a state reached while the broker is down is published once it is back (retried until acknowledged)', async () => {
    const device = 'broker-down';
    const root = await scratch('flash-broker-down');
    expect((await installBundle({ root, bundle: v1, trustDir: fx.trustDir })).state).toBe('committed');
    const seen: string[] = [];
    const agent = new JobAgent({ brokerUrl: broker.url, root, trustDir: fx.trustDir, fleet: 'lab', device, trial: { durationMs: 2_000 }, onState: (r) => void seen.push(r.step ?? r.state) });
    await agent.start();
    try {
      const staged = await stageBundleFiles(v2, files);
      const [job] = await publishJobs(conn, staged, [{ fleet: 'lab', device }], await loadPrivateKey(fx.privateKey));
      await until(() => seen.includes('trial'), 'the trial', 60_000);
      await broker.stop();
      // The job finishes offline: its record says so, the broker has not heard it.
      const record = path.join(root, JOB_RECORD_FILE);
      await until(() => seen.includes('done'), 'the verdict, offline', 60_000);
      expect(JSON.parse(await fsp.readFile(record, 'utf8'))).toMatchObject({ report: { job: job!.job, state: 'succeeded' } });
      await broker.start();
      await agent.idle();
      // The broker kept nothing across its restart (no persistence): what it holds now the device sent after.
      const retained = await new Promise<ReturnType<typeof decodeJobState>>((resolve) => {
        void connectMqtt({ url: broker.url, clientId: 'after-restart', protocolVersion: 5, onMessage: (m) => resolve(decodeJobState(m.payload)) }).then((c) => c.subscribe(jobTopics('lab', device).state, 1).then(() => setTimeout(() => void c.end(), 2_000)));
      });
      expect(retained).toMatchObject({ job: job!.job, state: 'succeeded', active: staged.bundle });
    } finally {
      await agent.close();
    }
  }, 120_000);
});

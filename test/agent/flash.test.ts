// Flash jobs end to end through a real Mosquitto: `edgeexit flash` publishes a signed job, the
// running `edgeexit agent --root` downloads the bundle from a file server (content-addressed
// folder), self-tests it, switches in place, runs a trial on live traffic and commits; and every
// fault ends in the right state with its reason in `edgeexit jobs`: a bad signature, an untrusted
// key, an incompatible bundle, a self-test failure, a latency regression in the trial, an older
// version without --rollback, a canceled job (which stops and is not retried).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BundleStore, installBundle } from '../../src/agent/index.js';
import { jobTopics, signJob, type Job, type JobStateReport, decodeJobState } from '../../src/agent/job-protocol.js';
import { agentCommand } from '../../src/cli/commands/agent.js';
import { flashCommand, jobsCancelCommand, jobsCommand } from '../../src/cli/commands/flash.js';
import { decodeGolden, encodeGolden, GOLDEN_FILE } from '../../src/bundle/golden.js';
import { generateKeyPair, loadPrivateKey } from '../../src/bundle/signing.js';
import { startFileServer, type FileServer } from '../../src/fleet/file-server.js';
import { stageBundleFiles } from '../../src/fleet/jobs.js';
import { startCollector, type Collector } from '../../src/fleet/collector.js';
import { connectMqtt, type MqttConnection } from '../../src/telemetry/mqtt/client.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { fmnistImages, scratch } from '../runtime/helpers.js';
import { compileFixture, slowRelease, variant, type Fixture } from './helpers.js';
import { until as waitUntil } from '../support/wait.js';
import { runCli } from '../cli/helpers.js';

const until = (pred: () => boolean, what: string, ms = 90_000): Promise<void> => waitUntil(pred, what, ms, 25);

MOSQUITTO.describe('flash jobs through Mosquitto', () => {
  let fx: Fixture;
  let broker: Broker;
  let server: FileServer;
  let watcher: MqttConnection;
  let collector: Collector;
  let files: string;
  let watch: string;
  const states = new Map<string, JobStateReport>();
  const history = new Map<string, JobStateReport[]>();
  const b: Record<string, string> = {};
  let n = 0;
  const quiet = { out: () => undefined, err: () => undefined };

  beforeAll(async () => {
    fx = await compileFixture(await scratch('flash'));
    // v1 exits every image at the first exit; `slow` (a newer version) is the wide model run to its last exit.
    b.v1 = await variant(fx.bundle, path.join(fx.dir, 'v1'), fx.privateKey, (m) => ({ ...m, model: { ...m.model, version: '1.0.0' }, exitPolicy: { ...m.exitPolicy, thresholds: m.stages.slice(1).map(() => 0) } }));
    b.v2 = await variant(b.v1, path.join(fx.dir, 'v2'), fx.privateKey, (m) => ({ ...m, model: { ...m.model, version: '1.1.0' } }));
    b.old = await variant(b.v1, path.join(fx.dir, 'old'), fx.privateKey, (m) => ({ ...m, model: { ...m.model, version: '0.9.0' } }));
    b.slow = await slowRelease(fx, '1.3.0');
    b.jetson = await variant(b.v2, path.join(fx.dir, 'jetson'), fx.privateKey, (m) => ({ ...m, model: { ...m.model, version: '1.4.0' }, target: { ...m.target, device: 'jetson-nano' } }));
    b.badGolden = await variant(b.v2, path.join(fx.dir, 'bad-golden'), fx.privateKey, (m, f) => {
      const g = decodeGolden(f.get(GOLDEN_FILE)!);
      const out = g.outputs.get(1)!;
      out.tensor.data[3] = out.tensor.data[3]! + 5;
      f.set(GOLDEN_FILE, encodeGolden(g));
      return { ...m, model: { ...m.model, version: '1.5.0' } };
    });
    files = path.join(fx.dir, 'files');
    watch = path.join(fx.dir, 'watch');
    await fsp.mkdir(watch, { recursive: true });
    for (const f of await fmnistImages(2)) await fsp.copyFile(f, path.join(watch, path.basename(f)));
    broker = await startBroker({ config: ['set_tcp_nodelay true'] });
    server = await startFileServer({ brokerUrl: broker.url, bundles: [], blobDirs: [files] });
    collector = await startCollector({ brokerUrl: broker.url, dbFile: path.join(fx.dir, 'fleet.db'), http: { host: '127.0.0.1', port: 0 }, onLog: () => undefined });
    watcher = await connectMqtt({ url: broker.url, clientId: 'watcher', protocolVersion: 5 });
    watcher.onMessage((m) => {
      const s = decodeJobState(m.payload);
      const dev = m.topic.split('/')[3]!;
      if (!s) return;
      states.set(dev, s);
      history.set(dev, [...(history.get(dev) ?? []), s]);
    });
    await watcher.subscribe('edgeexit/v1/+/+/job/state', 1);
  }, 180_000);
  afterAll(async () => {
    await watcher?.end().catch(() => undefined);
    await collector?.close().catch(() => undefined);
    await server?.close().catch(() => undefined);
    await broker?.dispose();
  });

  /** A device store running v1 and an agent on it, looping over a few images. */
  async function device(extra: { trialMaxP95Ratio?: number; latencyBudgetMs?: number } = { trialMaxP95Ratio: 3 }, again?: { id: string; root: string }) {
    const id = again?.id ?? `pi-${++n}`;
    const root = again?.root ?? (await scratch(`flash-${id}`));
    if (!again) expect((await installBundle({ root, bundle: b.v1!, trustDir: fx.trustDir })).state).toBe('committed');
    const reports = history.get(id)?.length ?? 0;
    const log: string[] = [];
    let frames = 0;
    let failed = 0;
    const ac = new AbortController();
    const done = agentCommand(
      {
        root,
        trustDir: fx.trustDir,
        watch,
        loop: true,
        telemetry: broker.url,
        fleet: 'lab',
        deviceId: id,
        stateDir: path.join(root, 'telemetry'),
        threads: 1,
        pollMs: 20,
        storePollMs: 50,
        trialMs: 1_500,
        ...extra,
        onItems: (items) => {
          frames += items.length;
          failed += items.filter((i) => !i.ok).length;
        },
      },
      { out: () => undefined, err: (l) => log.push(l) },
      ac.signal,
    );
    await until(() => (history.get(id)?.length ?? 0) > reports && frames >= 10, `${id} reports and classifies`);
    const store = await BundleStore.open(root);
    return {
      id,
      root,
      store,
      log,
      frames: () => frames,
      failed: () => failed,
      stop: async () => (ac.abort(), await done),
    };
  }

  const flash = (bundle: string, to: string, extra: { rollback?: boolean; key?: string; trialMs?: number; timeout?: number } = {}) =>
    flashCommand({ bundle, to: [`lab/${to}`], key: extra.key ?? fx.privateKey, files, broker: broker.url, ...(extra.rollback ? { rollback: true } : {}), ...(extra.trialMs !== undefined ? { trialMs: extra.trialMs } : {}), ...(extra.timeout !== undefined ? { timeout: extra.timeout } : {}) }, quiet);
  const final = (id: string, job: string) => until(() => states.get(id)?.job === job && !['in-progress', 'queued'].includes(states.get(id)!.state), `${id}: ${job} finished`);
  const jobsTable = async (): Promise<string> => {
    let out = '';
    await jobsCommand({ broker: broker.url }, { out: (t) => void (out += t), err: () => undefined });
    return out;
  };

  it('flashes a newer bundle: download, self-test, switch in place, trial, commit; not redone when the job is delivered again', async () => {
    const d = await device();
    try {
      const [job] = await flash(b.v2!, d.id);
      await final(d.id, job!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'succeeded', step: 'done', progress: 1, bundle: job!.bundle, active: job!.bundle, attempts: 1 });
      const steps = history.get(d.id)!.filter((s) => s.job === job!.job).map((s) => s.step);
      expect([...new Set(steps)]).toEqual(['check', 'download', 'verify', 'self-test', 'switch', 'trial', 'commit', 'done']);
      expect(await d.store.current()).toBe(job!.bundle);
      expect(d.log.filter((l) => /switched to/.test(l)), d.log.join('\n')).toEqual([expect.stringMatching(/switched to \S+ 1\.1\.0/)]);
      const installs = (await d.store.journal()).length;
      // The broker delivers the retained job again to a new session: nothing is done twice.
      const again = await connectMqtt({ url: broker.url, clientId: 'redeliver', protocolVersion: 5 });
      const raw = await new Promise<Buffer>((resolve) => (again.onMessage((m) => resolve(m.payload)), void again.subscribe(jobTopics('lab', d.id).desired, 1)));
      await again.publish(jobTopics('lab', d.id).desired, raw, { qos: 1, retain: true });
      await again.end();
      await until(() => (history.get(d.id)?.filter((s) => s.state === 'succeeded').length ?? 0) >= 2, 'the state said again');
      expect((await d.store.journal()).length).toBe(installs);
      expect(await jobsTable()).toMatch(new RegExp(`lab/${d.id} .*${job!.job}.*succeeded`));
    } finally {
      const r = await d.stop();
      expect(r.stats.failed).toBe(0);
    }
  }, 180_000);

  it('rejects a bad signature, an untrusted key, an incompatible bundle and an older version, with reasons in `edgeexit jobs`', async () => {
    const d = await device();
    try {
      const conn = await connectMqtt({ url: broker.url, clientId: 'forger', protocolVersion: 5 });
      const staged = await stageBundleFiles(b.v2!, files);
      const job: Job = { v: 1, job: 'forged-1', fleet: 'lab', device: d.id, bundle: staged.bundle, model: { name: 'x', version: '9' }, rollback: false, canceled: false, issuedAt: new Date().toISOString(), ...staged.refs };
      const signed = signJob(job, await loadPrivateKey(fx.privateKey));
      await conn.publish(jobTopics('lab', d.id).desired, Buffer.from(JSON.stringify({ ...signed, body: signed.body.replace('"rollback":false', '"rollback":true') })), { qos: 1, retain: true });
      await final(d.id, 'forged-1');
      expect(states.get(d.id)).toMatchObject({ state: 'rejected', reason: expect.stringMatching(/signature does not match its body/) });
      await conn.end();

      const stranger = await generateKeyPair(path.join(fx.dir, `stranger-${d.id}`));
      const [untrusted] = await flash(b.v2!, d.id, { key: stranger.privateKey });
      await final(d.id, untrusted!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'rejected', reason: expect.stringMatching(/which this device does not trust/) });

      const [jetson] = await flash(b.jetson!, d.id);
      await final(d.id, jetson!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'rejected', reason: expect.stringMatching(/incompatible with this device: compiled for device 'jetson-nano' \(jetson\)/) });

      const [older] = await flash(b.old!, d.id);
      await final(d.id, older!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'rejected', reason: expect.stringMatching(/0\.9\.0 is older than the active 1\.0\.0; flash it with --rollback/) });
      const table = await jobsTable();
      expect(table).toMatch(new RegExp(`lab/${d.id} .*rejected .*older than the active`));
      // The collector keeps the latest state per device for the dashboard (/api/jobs).
      await until(() => collector.jobs.get('lab', d.id)?.job === older!.job, 'the collector has the state');
      const api = (await (await fetch(`${collector.httpUrl}/api/jobs`)).json()) as { jobs: { fleet: string; device: string; state: string; reason?: string }[] };
      expect(api.jobs.find((j) => j.device === d.id)).toMatchObject({ fleet: 'lab', state: 'rejected', reason: expect.stringMatching(/older than the active/) });

      // With --rollback the same bundle goes in.
      const [back] = await flash(b.old!, d.id, { rollback: true });
      await final(d.id, back!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'succeeded' });
      expect((await d.store.manifestOf((await d.store.current())!)).model.version).toBe('0.9.0');
    } finally {
      await d.stop();
    }
  }, 240_000);

  it('fails a bundle that fails its self-test, and rolls back one whose latency regresses in the trial; the old bundle keeps running', async () => {
    const d = await device({ trialMaxP95Ratio: 1.2 });
    try {
      const before = await d.store.current();
      const [bad] = await flash(b.badGolden!, d.id);
      await final(d.id, bad!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'failed', active: before, reason: expect.stringMatching(/self-test failed: stage 1 'exit_1' differs from the golden output/) });

      const [slow] = await flash(b.slow!, d.id, { trialMs: 3_000 });
      await final(d.id, slow!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'rolled-back', active: before, reason: expect.stringMatching(/trial failed: latency regressed: p95 [\d.]+ ms per image during the trial vs [\d.]+ ms before \(limit ×1\.2\)/) });
      expect(await d.store.current()).toBe(before);
      const frames = d.frames();
      await until(() => d.frames() >= frames + 10, 'frames after the rollback');
      expect(d.failed()).toBe(0);
      expect(await jobsTable()).toMatch(/rolled-back .*latency regressed/);
    } finally {
      await d.stop();
    }
  }, 240_000);

  it("fails a bundle whose stages do not fit the device's latency budget in the self-test", async () => {
    const d = await device({ trialMaxP95Ratio: 3, latencyBudgetMs: 0.0001 });
    try {
      const before = await d.store.current();
      const [job] = await flash(b.v2!, d.id);
      await final(d.id, job!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'failed', active: before, reason: expect.stringMatching(/self-test failed: stage 0 takes [\d.]+ ms on one golden image here .*the budget is 0\.0001 ms/) });
    } finally {
      await d.stop();
    }
  }, 180_000);

  it('a job canceled during its trial stops, rolls back, reports canceled, and is not retried', async () => {
    const d = await device();
    try {
      const before = await d.store.current();
      const [job] = await flash(b.v2!, d.id, { trialMs: 120_000 });
      await until(() => states.get(d.id)?.step === 'trial', 'the trial');
      await jobsCancelCommand({ id: job!.job, key: fx.privateKey, broker: broker.url }, quiet);
      await final(d.id, job!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'canceled', active: before, reason: expect.stringMatching(/canceled by the operator during the trial/) });
      const count = history.get(d.id)!.length;
      const installs = (await d.store.journal()).length;
      // The canceled job stays retained; restarted, the device says where it stands and starts nothing.
      await d.stop();
      const again = await device({}, { id: d.id, root: d.root });
      await again.stop();
      const after = history.get(d.id)!.slice(count).map((s) => s.state);
      expect(after.length).toBeGreaterThan(0);
      expect(after.every((s) => s === 'canceled')).toBe(true);
      expect((await d.store.journal()).length).toBe(installs);
      expect(await jobsTable()).toMatch(new RegExp(`lab/${d.id} .*\\(canceled\\).*canceled`));
    } finally {
      await d.stop().catch(() => undefined);
    }
  }, 240_000);

  it('a job past its --timeout stops where it is, rolls back, and reports timed-out', async () => {
    const d = await device();
    try {
      const before = await d.store.current();
      const [job] = await flash(b.v2!, d.id, { trialMs: 120_000, timeout: 3 });
      await final(d.id, job!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'timed-out', active: before, reason: expect.stringMatching(/timed out during the (trial|download) \(deadline .*\); flash again with a longer --timeout/) });
      expect(await d.store.current()).toBe(before);
    } finally {
      await d.stop();
    }
  }, 180_000);

  it('the command line: flash --wait prints the verdicts, jobs --json lists them, cancel of an unknown id names the known ones', async () => {
    const d = await device();
    try {
      const r = await runCli('flash', b.v2!, '--to', `lab/${d.id}`, '--key', fx.privateKey, '--files', files, '--broker', broker.url, '--trial-ms', '500', '--wait', '--wait-timeout', '120');
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(new RegExp(`lab/${d.id} +flash-\\S+ +\\S+ 1\\.1\\.0 +succeeded +done +100%`));
      const list = await runCli('jobs', '--broker', broker.url, '--fleet', 'lab', '--json');
      expect(list.code, list.err).toBe(0);
      const mine = (JSON.parse(list.out) as { device: string; state?: { state: string }; desired?: { model: { version: string } } }[]).find((x) => x.device === d.id);
      expect(mine).toMatchObject({ state: { state: 'succeeded' }, desired: { model: { version: '1.1.0' } } });
      // A collector started now has every device's state at once (retained, plain subscription beside its shared one).
      const late = await startCollector({ brokerUrl: broker.url, dbFile: path.join(fx.dir, 'late.db'), clientId: 'late-collector', onLog: () => undefined });
      try {
        expect(late.protocolVersion).toBe(5);
        await until(() => late.jobs.get('lab', d.id)?.state === 'succeeded', 'the late collector has the retained state');
      } finally {
        await late.close();
      }
      // --group: every device of the fleet that reports a state (each agent does from its start).
      const none = await runCli('flash', b.v2!, '--group', 'nosuch', '--key', fx.privateKey, '--files', files, '--broker', broker.url);
      expect(none.code).toBe(2);
      expect(none.err).toMatch(/got group nosuch with no device reporting/);
      const group = await flashCommand({ bundle: b.v2!, group: 'lab', key: fx.privateKey, files, broker: broker.url }, quiet);
      expect(group.map((j) => j.device).sort()).toEqual([...states.keys()].sort());
      await final(d.id, group[0]!.job);
      expect(states.get(d.id)).toMatchObject({ state: 'succeeded', reason: 'this bundle is already active' });
      const keep = await runCli('agent', '--root', d.root, '--watch', watch, '--telemetry', broker.url, '--keep', '-1');
      expect(keep.code).toBe(2);
      expect(keep.err).toMatch(/--keep: expected an integer ≥ 0, got -1/);
      const ratio = await runCli('agent', '--root', d.root, '--watch', watch, '--telemetry', broker.url, '--trial-max-p95-ratio', '0.5');
      expect(ratio.err).toMatch(/--trial-max-p95-ratio: expected a factor ≥ 1/);
      const cancel = await runCli('jobs', 'cancel', 'no-such-job', '--key', fx.privateKey, '--broker', broker.url);
      expect(cancel.code).toBe(2);
      expect(cancel.err).toMatch(/no device has job no-such-job.*published jobs: flash-/);
    } finally {
      await d.stop();
    }
  }, 180_000);
});

// The flash job topics against a real Mosquitto configured by `fleet broker-config` and `fleet
// enroll`: an operator (`--operator`) writes a device's job/desired and reads every job/state; a
// device writes only its own job/state and reads only its own job topics; no device can write any
// job/desired (its own included), so a stolen device credential cannot make a device install.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connectMqtt, type MqttConnection, type MqttMessage } from '../../src/telemetry/index.js';
import { jobFilters, jobTopics } from '../../src/agent/job-protocol.js';
import { fileReplyTopic, fileServerSubscription } from '../../src/agent/file-protocol.js';
import { runCli } from '../cli/helpers.js';
import { freePort } from '../telemetry/mqtt/broker.js';
import { MOSQUITTO } from '../support/require.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';
import { until } from '../support/wait.js';

interface Creds {
  username: string;
  password: string;
}

MOSQUITTO.describe('job topics: operator and device ACL', () => {
  let dir: string;
  let url: string;
  let broker: ChildProcess | undefined;
  let log = '';
  const creds: Record<string, Creds> = {};
  const opened: MqttConnection[] = [];

  const enrol = async (...args: string[]): Promise<Creds> => {
    const r = await runCli('fleet', 'enroll', ...args, '--dir', dir, '--json');
    expect(r.code, r.err).toBe(0);
    return JSON.parse(r.out) as Creds;
  };
  const client = async (c: Creds, onMessage?: (m: MqttMessage) => void): Promise<MqttConnection> => {
    const conn = await connectMqtt({ url, clientId: `t-${Math.random().toString(36).slice(2)}`, protocolVersion: 5, ...c, ...(onMessage ? { onMessage } : {}) });
    opened.push(conn);
    return conn;
  };
  const attempt = (c: MqttConnection, topic: string, retain = false) =>
    c.publish(topic, Buffer.from('{"probe":true}'), { qos: 1, retain }).then(
      () => 'accepted',
      () => 'refused',
    );

  beforeAll(async () => {
    dir = await tempDir('job-acl');
    const port = await freePort();
    url = `mqtt://127.0.0.1:${port}`;
    expect((await runCli('fleet', 'broker-config', '--dir', dir, '--listen', `127.0.0.1:${port}`)).code).toBe(0);
    await fsp.chmod(dir, 0o755);
    await fsp.chmod(path.join(dir, 'passwd'), 0o644);
    creds.ops = await enrol('--operator', 'ops');
    creds.collector = await enrol('--collector', 'collector');
    creds.a = await enrol('lab/pi-a');
    creds.b = await enrol('lab/pi-b');
    broker = spawn(MOSQUITTO.get(), ['-c', path.join(dir, 'mosquitto.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
    broker.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const end = Date.now() + 10_000;
    for (;;) {
      const up = await connectMqtt({ url, clientId: 'probe', ...creds.ops, protocolVersion: 5, connectTimeoutMs: 1_000 }).then(
        async (c) => (await c.end(), true),
        () => false,
      );
      if (up) break;
      if (Date.now() > end || broker.exitCode !== null) throw new Error(`mosquitto did not start: ${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  afterAll(async () => {
    for (const c of opened) await c.end().catch(() => undefined);
    if (broker && broker.exitCode === null) {
      const p = broker;
      await new Promise<void>((resolve) => (p.once('exit', () => resolve()), p.kill('SIGKILL')));
    }
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('lists the operator in its own ACL block, apart from collectors', async () => {
    const acl = await fsp.readFile(path.join(dir, 'acl'), 'utf8');
    expect(acl).toMatch(/^user ops\ntopic readwrite edgeexit\/v1\/\+\/\+\/job\/desired\ntopic read edgeexit\/v1\/\+\/\+\/job\/state$/m);
    expect(acl).toMatch(/^pattern write edgeexit\/v1\/%u\/job\/state$/m);
    expect(acl).not.toMatch(/^user ops\ntopic read edgeexit\/v1\/#$/m);
    expect(await fsp.readFile(path.join(dir, 'operators'), 'utf8')).toBe('ops\n');
  });

  it('no device writes any job/desired, its own included; the operator does', async () => {
    const a = await client(creds.a!);
    expect(await attempt(a, jobTopics('lab', 'pi-a').desired, true)).toBe('refused');
    expect(await attempt(a, jobTopics('lab', 'pi-b').desired, true)).toBe('refused');
    expect(await attempt(a, jobTopics('lab', 'pi-b').state, true)).toBe('refused');
    const collector = await client(creds.collector!);
    expect(await attempt(collector, jobTopics('lab', 'pi-a').desired, true)).toBe('refused');
    const ops = await client(creds.ops!);
    expect(await attempt(ops, jobTopics('lab', 'pi-a').desired, true)).toBe('accepted');
    expect(await attempt(ops, jobTopics('lab', 'pi-b').desired, true)).toBe('accepted');
    // An operator cannot speak for a device either.
    expect(await attempt(ops, jobTopics('lab', 'pi-a').state, true)).toBe('refused');
    expect(await attempt(ops, 'edgeexit/v1/lab/pi-a/metrics')).toBe('refused');
  });

  it('a device reads only its own desired job (retained) and writes its own state, which the operator reads', async () => {
    const got: string[] = [];
    const a = await client(creds.a!, (m) => got.push(`${m.topic} retain=${m.retain}`));
    await a.subscribe('edgeexit/v1/lab/+/job/desired', 1);
    await until(() => got.length > 0, "pi-a's retained job");
    const states: string[] = [];
    const ops = await client(creds.ops!, (m) => states.push(m.topic));
    await ops.subscribe(jobFilters().state, 1);
    expect(await attempt(a, jobTopics('lab', 'pi-a').state, true)).toBe('accepted');
    await until(() => states.length > 0, "pi-a's state at the operator");
    expect(states).toEqual([jobTopics('lab', 'pi-a').state]);
    // pi-b's retained job was published too; had pi-a been allowed to read it, it would be here by now.
    expect(got).toEqual([`${jobTopics('lab', 'pi-a').desired} retain=true`]);
  });

  it('the operator serves bundle files (reads requests, answers on reply topics)', async () => {
    const ops = await client(creds.ops!);
    await ops.subscribe(fileServerSubscription(), 1);
    expect(await attempt(ops, fileReplyTopic('lab', 'pi-a'))).toBe('accepted');
  });

  it('revoking the operator drops it from the operators list and the ACL', async () => {
    expect((await runCli('fleet', 'revoke', '--operator', 'ops', '--dir', dir)).code).toBe(0);
    expect(await fsp.readFile(path.join(dir, 'acl'), 'utf8')).not.toMatch(/^user ops$/m);
    expect(await fsp.readFile(path.join(dir, 'operators'), 'utf8')).toBe('');
  });
});

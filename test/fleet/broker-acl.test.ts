// Device identity against a real Mosquitto started with the configuration `edgeexit fleet
// broker-config` writes and the credentials `edgeexit fleet enroll` issues: anonymous clients are
// refused, a device can publish only under its own <fleet>/<device>, cannot read another device's
// job topics, the collector stores what a device sends, and a device id born in a second fleet
// is refused and counted instead of moving the first fleet's device. Also: our `$7$` hash is the
// one mosquitto_passwd computes, rotation and revocation take effect at the broker's reload.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mosquittoPasswordHash, passwordFileUsers, verifyMosquittoPassword } from '../../src/fleet/broker-auth.js';
import { startCollector, type Collector } from '../../src/fleet/index.js';
import { openFleetStore } from '../../src/fleet/store.js';
import { TelemetryPublisher, connectMqtt, encodePayload, topicFor, type MqttConnection, type MqttMessage } from '../../src/telemetry/index.js';
import { runCli } from '../cli/helpers.js';
import { fileReplyTopic, fileRequestTopic, fileServerSubscription } from '../../src/agent/file-protocol.js';
import { freePort } from '../telemetry/mqtt/broker.js';
import { MOSQUITTO, MOSQUITTO_PASSWD } from '../support/require.js';
import { BIRTH_INFO, tempDir, windowBody, windowInput } from '../telemetry/mqtt/fixtures.js';
import { until } from '../support/wait.js';

interface Creds {
  username: string;
  password: string;
}

async function enrolCli(dir: string, ...args: string[]): Promise<Creds> {
  const r = await runCli('fleet', 'enroll', ...args, '--dir', dir, '--json');
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as Creds;
}

describe('mosquitto password hash', () => {
  MOSQUITTO_PASSWD.it('is the hash mosquitto_passwd writes, and checks against one it wrote', async () => {
    const dir = await tempDir('pwhash');
    const file = path.join(dir, 'passwd');
    spawnSync(MOSQUITTO_PASSWD.get(), ['-c', '-b', file, 'lab/pi-07', 'open sesame']);
    const hash = (await fsp.readFile(file, 'utf8')).trim().split(':')[1]!;
    const [, , iterations, salt] = hash.split('$');
    expect(mosquittoPasswordHash('open sesame', { salt: Buffer.from(salt!, 'base64'), iterations: Number(iterations) })).toBe(hash);
    expect(verifyMosquittoPassword('open sesame', hash)).toBe(true);
    expect(verifyMosquittoPassword('open sesamE', hash)).toBe(false);
    expect(verifyMosquittoPassword('open sesame', mosquittoPasswordHash('open sesame'))).toBe(true);
    await fsp.rm(dir, { recursive: true, force: true });
  });
});

MOSQUITTO.describe('broker ACL from `fleet broker-config` and `fleet enroll`', () => {
  let dir: string;
  let port: number;
  let url: string;
  let broker: ChildProcess | undefined;
  let brokerLog = '';
  const creds: Record<string, Creds> = {};
  let collector: Collector;
  const logs: string[] = [];
  const opened: MqttConnection[] = [];

  async function startMosquitto(): Promise<void> {
    const p = spawn(MOSQUITTO.get(), ['-c', path.join(dir, 'mosquitto.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
    broker = p;
    p.stderr?.on('data', (d: Buffer) => (brokerLog += d.toString()));
    const end = Date.now() + 10_000;
    for (;;) {
      if (p.exitCode !== null) throw new Error(`mosquitto exited ${p.exitCode}: ${brokerLog}`);
      const up = await connectMqtt({ url, clientId: `probe-${Date.now()}`, ...creds.collector, protocolVersion: 5, connectTimeoutMs: 1_000 }).then(
        async (c) => (await c.end(), true),
        () => false,
      );
      if (up) return;
      if (Date.now() > end) throw new Error(`mosquitto did not accept the collector on ${port}: ${brokerLog}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGHUP: Mosquitto rereads password_file and acl_file. Done when the new `expect` holds. */
  async function reload(ready: () => Promise<boolean>): Promise<void> {
    broker!.kill('SIGHUP');
    const end = Date.now() + 10_000;
    while (!(await ready())) {
      if (Date.now() > end) throw new Error(`reload did not take effect: ${brokerLog}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async function client(c: Partial<Creds>, onMessage?: (m: MqttMessage) => void): Promise<MqttConnection> {
    const conn = await connectMqtt({ url, clientId: `t-${Math.random().toString(36).slice(2)}`, protocolVersion: 5, ...c, ...(onMessage ? { onMessage } : {}) });
    opened.push(conn);
    return conn;
  }

  const canConnect = (c: Partial<Creds>) =>
    connectMqtt({ url, clientId: `c-${Math.random().toString(36).slice(2)}`, protocolVersion: 5, connectTimeoutMs: 2_000, ...c }).then(
      async (conn) => (await conn.end(), true),
      () => false,
    );

  beforeAll(async () => {
    dir = await tempDir('broker-acl');
    port = await freePort();
    url = `mqtt://127.0.0.1:${port}`;
    const cfg = await runCli('fleet', 'broker-config', '--dir', dir, '--listen', `127.0.0.1:${port}`);
    expect(cfg.code).toBe(0);
    // Started as root, mosquitto drops to its own user before reading these files: let it (an
    // operator would chown them to the broker's user instead). Enrolment keeps the mode.
    await fsp.chmod(dir, 0o755);
    await fsp.chmod(path.join(dir, 'passwd'), 0o644);
    creds.collector = await enrolCli(dir, '--collector', 'collector');
    creds.a = await enrolCli(dir, 'lab/pi-a');
    creds.b = await enrolCli(dir, 'lab/pi-b');
    creds.prodA = await enrolCli(dir, 'prod/pi-a');
    // Nobody the generator knows writes job topics; stand in for the flashing operator of a later
    // release with a hand-added user, so that reading job topics can be tested at all.
    creds.jobs = { username: 'jobs', password: 'j0bs' };
    await fsp.appendFile(path.join(dir, 'passwd'), `jobs:${mosquittoPasswordHash('j0bs')}\n`);
    await fsp.appendFile(path.join(dir, 'acl'), 'user jobs\ntopic write edgeexit/v1/+/+/job/#\n');
    await startMosquitto();
    collector = await startCollector({ brokerUrl: url, dbFile: path.join(dir, 'fleet.db'), username: 'collector', password: creds.collector!.password, onLog: (l) => logs.push(l) });
  });
  afterAll(async () => {
    for (const c of opened) await c.end().catch(() => undefined);
    await collector?.close();
    if (broker && broker.exitCode === null) {
      const p = broker;
      await new Promise<void>((resolve) => (p.once('exit', () => resolve()), p.kill('SIGKILL')));
    }
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('writes a configuration without anonymous access, on loopback, and one credential per device', async () => {
    const conf = await fsp.readFile(path.join(dir, 'mosquitto.conf'), 'utf8');
    expect(conf).toMatch(/^allow_anonymous false$/m);
    expect(conf).toMatch(new RegExp(`^listener ${port} 127\\.0\\.0\\.1$`, 'm'));
    const passwd = await fsp.readFile(path.join(dir, 'passwd'), 'utf8');
    expect(passwd).not.toContain(creds.a!.password);
    expect(await passwordFileUsers(path.join(dir, 'passwd'))).toEqual(['collector', 'lab/pi-a', 'lab/pi-b', 'prod/pi-a', 'jobs']);
    expect(creds.a!.username).toBe('lab/pi-a');
    expect(creds.a!.password).not.toBe(creds.b!.password);
    const acl = await fsp.readFile(path.join(dir, 'acl'), 'utf8');
    expect(acl).toMatch(/^user collector\ntopic read edgeexit\/v1\/#\ntopic write edgeexit\/v1\/\+\/\+\/ack$/m);
    expect(acl).toMatch(/^pattern read edgeexit\/v1\/%u\/ack$/m);
  });

  it('refuses anonymous clients and wrong passwords', async () => {
    expect(await canConnect({})).toBe(false);
    expect(await canConnect({ username: 'lab/pi-a', password: creds.b!.password })).toBe(false);
    expect(await canConnect(creds.a!)).toBe(true);
  });

  it('the collector stores what device A sends under its own name', async () => {
    const pub = await TelemetryPublisher.start({ url, fleet: 'lab', device: 'pi-a', stateDir: path.join(dir, 'state-a'), birth: BIRTH_INFO, ...creds.a! });
    await pub.enqueueWindow(windowInput(0));
    await pub.enqueueWindow(windowInput(1));
    await pub.drained();
    await pub.close();
    await until(async () => (await collector.store.totals()).some((t) => t.device === 'pi-a' && t.windows === 2), 'pi-a windows stored');
    expect((await collector.store.devices()).find((d) => d.device === 'pi-a')).toMatchObject({ fleet: 'lab' });
  });

  it('device A cannot publish as B, nor into another fleet, nor into its own job topics', async () => {
    const seen: string[] = [];
    // The collector's credential, as a second reader of everything.
    // (The collector's acks to pi-a are left out: they are the collector's, checked below.)
    await client(creds.collector!, (m) => void (m.topic.endsWith('/ack') || seen.push(m.topic))).then((c) => c.subscribe('edgeexit/v1/#', 1));
    const a = await client(creds.a!);
    const forged = [
      [topicFor('lab', 'pi-b', 'metrics'), encodePayload('metrics', { id: 900, bdSeq: 1, seq: 1, ...windowBody(9, 'pi-b') })],
      [topicFor('lab', 'pi-b', 'death'), encodePayload('death', { device: 'pi-b', bdSeq: 1, clean: true })],
      [topicFor('prod', 'pi-a', 'birth'), encodePayload('birth', { device: 'pi-a', fleet: 'prod', bdSeq: 1, seq: 0, ...BIRTH_INFO, at: 1_700_000_000_000 })],
      [topicFor('prod', 'pi-a', 'metrics'), encodePayload('metrics', { id: 901, bdSeq: 1, seq: 1, ...windowBody(9, 'pi-a') })],
      [topicFor('lab', 'pi-a', 'job/flash'), Buffer.from('{}')],
      // A forged ack would make a device drop windows the collector never stored.
      [topicFor('lab', 'pi-b', 'ack'), Buffer.from('{"ids":[1]}')],
      [topicFor('lab', 'pi-a', 'ack'), Buffer.from('{"ids":[1]}')],
    ] as const;
    // MQTT 5: Mosquitto answers each with PUBACK "not authorised" (refused), never forwards it.
    const outcomes = await Promise.all(forged.map(([t, p]) => a.publish(t, p, { qos: 1 }).then(() => 'accepted', () => 'refused')));
    expect(outcomes).toEqual(forged.map(() => 'refused'));
    // A message A may send, after the forged ones on the same connection: once the readers have
    // it, anything forwarded before it would have arrived too (one publisher's messages stay in order).
    await a.publish(topicFor('lab', 'pi-a', 'metrics'), encodePayload('metrics', { id: 902, bdSeq: 9, seq: 0, ...windowBody(2, 'pi-a') }), { qos: 1 });
    await until(() => seen.includes(topicFor('lab', 'pi-a', 'metrics')), 'the allowed window');
    await until(async () => (await collector.store.totals()).some((t) => t.device === 'pi-a' && t.windows === 3), 'the allowed window stored');
    expect(seen).toEqual([topicFor('lab', 'pi-a', 'metrics')]);
    expect((await collector.store.totals()).map((t) => t.device)).toEqual(['pi-a']);
    expect((await collector.store.devices()).map((d) => `${d.fleet}/${d.device}`)).toEqual(['lab/pi-a']);
  });

  it('bundle transfer: a device requests files on its own topic and reads only its own replies; an operator service serves them', async () => {
    const requests: string[] = [];
    const replies = { a: [] as string[], b: [] as string[] };
    const server = await client(creds.collector!, (m) => requests.push(m.topic));
    await server.subscribe(fileServerSubscription(), 1);
    const a = await client(creds.a!, (m) => replies.a.push(m.topic));
    const b = await client(creds.b!, (m) => replies.b.push(m.topic));
    await a.subscribe(fileReplyTopic('lab', 'pi-a'), 1);
    await b.subscribe('edgeexit/files/v1/lab/+/reply', 1);
    const ask = (topic: string) => a.publish(topic, Buffer.from('{}'), { qos: 1, properties: { responseTopic: fileReplyTopic('lab', 'pi-a'), correlationData: Buffer.from('1') } }).then(() => 'accepted', () => 'refused');
    expect(await ask(fileRequestTopic('lab', 'pi-b'))).toBe('refused');
    expect(await ask(fileRequestTopic('lab', 'pi-a'))).toBe('accepted');
    await until(() => requests.length > 0, "pi-a's request at the file server");
    expect(requests).toEqual([fileRequestTopic('lab', 'pi-a')]);
    await server.publish(fileReplyTopic('lab', 'pi-a'), Buffer.from('for a'), { qos: 1 });
    await server.publish(fileReplyTopic('lab', 'pi-b'), Buffer.from('for b'), { qos: 1 });
    await until(() => replies.a.length > 0 && replies.b.length > 0, 'both replies');
    // b's own reply came after a's from the same publisher: had b been given a's, it would be here.
    expect(replies.b).toEqual([fileReplyTopic('lab', 'pi-b')]);
    expect(replies.a).toEqual([fileReplyTopic('lab', 'pi-a')]);
    expect(await b.publish(fileReplyTopic('lab', 'pi-a'), Buffer.from('forged'), { qos: 1 }).then(() => 'accepted', () => 'refused')).toBe('refused');
  });

  it('a device reads its own job topics only', async () => {
    const got: string[] = [];
    // Mosquitto 2.0 grants the subscription and filters at delivery, by the read ACL.
    const a = await client(creds.a!, (m) => got.push(m.topic));
    await a.subscribe('edgeexit/v1/lab/+/job/#', 1);
    const jobs = await client(creds.jobs!);
    await jobs.publish('edgeexit/v1/lab/pi-b/job/flash', Buffer.from('{"for":"b"}'), { qos: 1 });
    await jobs.publish('edgeexit/v1/lab/pi-a/job/flash', Buffer.from('{"for":"a"}'), { qos: 1 });
    await until(() => got.length > 0, "pi-a's own job");
    expect(got).toEqual(['edgeexit/v1/lab/pi-a/job/flash']);
  });

  it('a device reads its own acks only, and the collector may write them', async () => {
    const got: string[] = [];
    const a = await client(creds.a!, (m) => got.push(`${m.topic} ${m.payload.toString()}`));
    await a.subscribe('edgeexit/v1/lab/+/ack', 1);
    const b = await TelemetryPublisher.start({ url, fleet: 'lab', device: 'pi-b', stateDir: path.join(dir, 'state-b'), birth: BIRTH_INFO, ...creds.b! });
    const idB = await b.enqueueWindow(windowInput(7));
    // Drained only once the collector's ack reached pi-b through the broker's ACL.
    await b.drained();
    await b.close();
    const pub = await TelemetryPublisher.start({ url, fleet: 'lab', device: 'pi-a', stateDir: path.join(dir, 'state-a'), birth: BIRTH_INFO, ...creds.a! });
    const idA = await pub.enqueueWindow(windowInput(8));
    await pub.drained();
    await pub.close();
    await until(() => got.length > 0, "pi-a's ack");
    expect(got).toEqual([`edgeexit/v1/lab/pi-a/ack {"ids":[${idA}]}`]);
    expect(idB).not.toBe(idA);
  });

  it('a birth for the same device id in another fleet is refused and counted, not moving the device', async () => {
    // prod/pi-a holds its own credential, so the broker lets it publish; the collector keys
    // devices by (fleet, device) and must not move lab's pi-a, with its windows, into prod.
    const before = (await collector.store.totals()).find((t) => t.device === 'pi-a')!.windows;
    const pub = await TelemetryPublisher.start({ url, fleet: 'prod', device: 'pi-a', stateDir: path.join(dir, 'state-prod-a'), birth: BIRTH_INFO, ...creds.prodA! });
    await pub.enqueueWindow(windowInput(50));
    await pub.drained();
    await pub.close();
    // birth, window, clean death: three messages refused.
    await until(async () => (await collector.counters()).fleetMismatch === 3, 'three fleetMismatch counts');
    const row = (await collector.store.devices()).find((d) => d.device === 'pi-a')!;
    expect(row.fleet).toBe('lab');
    expect(row.birth?.fleet).toBe('lab');
    expect((await collector.store.totals()).find((t) => t.device === 'pi-a')!.windows).toBe(before);
    const lines = logs.filter((l) => l.startsWith('fleetMismatch: edgeexit/v1/prod/pi-a/'));
    expect(lines.map((l) => l.split(':')[1]!.trim())).toEqual(['edgeexit/v1/prod/pi-a/birth', 'edgeexit/v1/prod/pi-a/metrics', 'edgeexit/v1/prod/pi-a/death']);
    expect(lines.every((l) => !l.includes('\n'))).toBe(true);
  });

  it('rotation and revocation take effect at the broker\'s reload; enrolling twice is refused', async () => {
    const again = await runCli('fleet', 'enroll', 'lab/pi-b', '--dir', dir);
    expect(again.code).toBe(2);
    expect(again.err).toMatch(/lab\/pi-b is already enrolled.*--rotate/);
    const old = creds.b!;
    const rotated = await enrolCli(dir, 'lab/pi-b', '--rotate');
    const before = await client(old);
    await reload(async () => !(await canConnect(old)));
    // The reload also ends the session that logged in with the replaced password.
    await until(() => before.closed, 'the old session closed');
    expect(await canConnect(rotated)).toBe(true);
    const live = await client(rotated);
    const r = await runCli('fleet', 'revoke', 'lab/pi-b', '--dir', dir);
    expect(r.code).toBe(0);
    await reload(async () => !(await canConnect(rotated)));
    await until(() => live.closed, 'the revoked session closed');
    expect(await passwordFileUsers(path.join(dir, 'passwd'))).not.toContain('lab/pi-b');
    expect(await canConnect(creds.a!)).toBe(true);
    expect((await runCli('fleet', 'revoke', 'lab/pi-b', '--dir', dir)).code).toBe(2);
  });
});

describe('fleet enroll: bad input', () => {
  it('names the problem: not <fleet>/<device>, ids unusable in a topic, both or neither of device and --collector', async () => {
    const dir = await tempDir('enrol-bad');
    const one = await runCli('fleet', 'enroll', 'pi-07', '--dir', dir);
    expect(one.code).toBe(2);
    expect(one.err).toMatch(/expected <fleet>\/<device>, e\.g\. lab\/pi-07, got "pi-07"/);
    expect((await runCli('fleet', 'enroll', 'lab/pi+07', '--dir', dir)).err).toMatch(/device id "pi\+07" is not usable in an MQTT topic/);
    expect((await runCli('fleet', 'enroll', '--collector', 'a/b', '--dir', dir)).err).toMatch(/--collector: expected 1–64 characters/);
    expect((await runCli('fleet', 'enroll', 'lab/pi-07', '--collector', 'c', '--dir', dir)).err).toMatch(/got both/);
    expect((await runCli('fleet', 'enroll', '--dir', dir)).err).toMatch(/got neither/);
    await expect(fsp.access(path.join(dir, 'passwd'))).rejects.toThrow();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('writes the password file atomically with mode 0600 and prints the agent flags once', async () => {
    const dir = await tempDir('enrol-ok');
    const r = await runCli('fleet', 'enroll', 'lab/pi-07', '--dir', dir, '--broker', 'mqtts://broker.lan:8883');
    expect(r.code).toBe(0);
    const pw = /password {2}(\S+)/.exec(r.out)![1]!;
    expect(r.out).toContain(`EDGEEXIT_MQTT_PASSWORD='${pw}' edgeexit agent <bundle> --watch <folder> --telemetry mqtts://broker.lan:8883 --fleet lab --device-id pi-07 --username lab/pi-07`);
    const st = await fsp.stat(path.join(dir, 'passwd'));
    expect(st.mode & 0o777).toBe(0o600);
    const [user, hash] = (await fsp.readFile(path.join(dir, 'passwd'), 'utf8')).trim().split(':');
    expect(user).toBe('lab/pi-07');
    expect(verifyMosquittoPassword(pw, hash!)).toBe(true);
    expect((await fsp.readdir(dir)).sort()).toEqual(['acl', 'passwd']);
    await fsp.rm(dir, { recursive: true, force: true });
  });
});

describe('fleet store: devices are (fleet, device)', () => {
  it('refuses and counts a birth, death or window for the device id in another fleet, changing nothing else', async () => {
    const dir = await tempDir('fleet-mismatch');
    const store = openFleetStore(path.join(dir, 'f.db'));
    try {
      const birth = (fleet: string) => ({ device: 'pi-07', fleet, bdSeq: 1, seq: 0, ...BIRTH_INFO, at: 1 });
      expect(await store.recordBirth(birth('lab'), 1)).toBe('online');
      expect(await store.recordBirth(birth('prod'), 2)).toBe('fleetMismatch');
      expect(await store.recordDeath({ device: 'pi-07', bdSeq: 1, clean: true }, 3, 'prod')).toBe('fleetMismatch');
      expect(await store.recordWindow({ id: 1, bdSeq: 1, seq: 1, ...windowBody(0, 'pi-07') }, 'prod', 4)).toMatchObject({ stored: false, fleetMismatch: true });
      expect(await store.recordWindow({ id: 1, bdSeq: 1, seq: 1, ...windowBody(0, 'pi-07') }, 'lab', 4)).toEqual({ stored: true, gap: 0, unknownDevice: false });
      expect((await store.counters()).fleetMismatch).toBe(3);
      expect(await store.devices()).toEqual([expect.objectContaining({ device: 'pi-07', fleet: 'lab', online: true })]);
    } finally {
      await store.close();
    }
    await fsp.rm(dir, { recursive: true, force: true });
  });
});

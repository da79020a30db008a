// What a third-party MQTT client sees: Mosquitto's own mosquitto_sub (Debian mosquitto-clients),
// subscribed to the documented namespace, receives a device's birth, metric windows and clean
// death on the documented topics, each payload JSON that the shared wire schema accepts.
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TelemetryPublisher, connectMqtt, decodePayload, parseTopic } from '../../../src/telemetry/index.js';
import { startBroker, type Broker } from './broker.js';
import { BIRTH_INFO, tempDir, windowInput } from './fixtures.js';
import { MOSQUITTO_SUB } from '../../support/require.js';

let broker: Broker;
beforeAll(async () => {
  MOSQUITTO_SUB.get();
  broker = await startBroker();
});
afterAll(async () => {
  await broker?.dispose();
});

/**
 * Start mosquitto_sub on the namespace (and on a probe topic outside it); resolves once a probe
 * came back, i.e. its subscription is live. Each message is one line, `topic payload`.
 */
async function subscribe(): Promise<{ child: ChildProcess; lines: string[]; until(n: number): Promise<void> }> {
  const child = spawn(MOSQUITTO_SUB.get(), ['-h', '127.0.0.1', '-p', String(broker.port), '-q', '1', '-t', 'edgeexit/v1/#', '-t', 'probe/mosquitto-sub', '-F', '%t %p'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let probes = 0;
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('probe/')) probes++;
      else lines.push(line);
    }
  });
  const waitFor = async (pred: () => boolean, what: string): Promise<void> => {
    const end = Date.now() + 20_000;
    while (!pred()) {
      if (child.exitCode !== null) throw new Error(`mosquitto_sub exited (${child.exitCode}) while waiting for ${what}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; got: ${lines.join(' | ')}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  const probe = await connectMqtt({ url: broker.url, clientId: 'probe', protocolVersion: 4, persistentSession: false });
  try {
    await waitFor(() => {
      if (probes === 0) void probe.publish('probe/mosquitto-sub', Buffer.from('ping'), { qos: 0 });
      return probes > 0;
    }, 'the subscription');
  } finally {
    await probe.end();
  }
  return { child, lines, until: (n) => waitFor(() => lines.length >= n, `${n} messages`) };
}

describe('mosquitto_sub on edgeexit/v1/#', () => {
  it('sees birth, two metric windows and the clean death, on the documented topics, each valid under the shared schema', async () => {
    const sub = await subscribe();
    const pub = await TelemetryPublisher.start({ url: broker.url, fleet: 'lab', device: 'pi-7', stateDir: await tempDir('mosq-sub'), birth: BIRTH_INFO });
    try {
      await pub.enqueueWindow(windowInput(0));
      await pub.enqueueWindow(windowInput(1));
      // No collector acks them here: wait for mosquitto_sub to see birth and both windows.
      await sub.until(3);
    } finally {
      await pub.close();
    }
    try {
      await sub.until(4);
    } finally {
      sub.child.kill();
    }

    const seen = sub.lines.map((line) => {
      const space = line.indexOf(' ');
      const topic = line.slice(0, space);
      const payload = line.slice(space + 1);
      expect(topic).toMatch(/^edgeexit\/v1\/lab\/pi-7\/(birth|metrics|death)$/);
      const t = parseTopic(topic)!;
      expect(t).toMatchObject({ fleet: 'lab', device: 'pi-7' });
      const kind = t.kind as 'birth' | 'metrics' | 'death';
      return { kind, body: decodePayload(kind, payload) as Record<string, unknown> };
    });
    expect(seen.map((s) => s.kind)).toEqual(['birth', 'metrics', 'metrics', 'death']);
    const [birth, w0, w1, death] = seen.map((s) => s.body);
    expect(birth).toMatchObject({ device: 'pi-7', fleet: 'lab', profile: 'rpi4', bundle: BIRTH_INFO.bundle });
    expect(w1!.id).toBe((w0!.id as number) + 1);
    expect(w0).toMatchObject({ device: 'pi-7', count: 10, exitHistogram: [6, 3, 1], bdSeq: birth!.bdSeq });
    expect(w1!.seq).toBe(((w0!.seq as number) + 1) % 256);
    expect(death).toEqual({ device: 'pi-7', bdSeq: birth!.bdSeq, clean: true });
  }, 60_000);
});

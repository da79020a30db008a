// The mqtt adapter on an embedded aedes broker: a subscription whose SUBACK never comes must not
// hang its caller when the connection drops (the collector's reconnect loop awaits it).
import net from 'node:net';
import { Aedes } from 'aedes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MqttConnectionError, connectMqtt } from '../../../src/telemetry/index.js';
import { isProtocolRefusal } from '../../../src/telemetry/mqtt/client.js';
import { MOSQUITTO, startBroker } from './broker.js';

let server: net.Server;
let broker: Aedes;
let url: string;
let stalled = 0;
beforeAll(async () => {
  // Subscriptions to stall/# are neither granted nor refused: the SUBACK never leaves the broker.
  broker = await Aedes.createBroker({
    authorizeSubscribe: (_client, sub, done) => {
      if (sub.topic.startsWith('stall/')) stalled++;
      else done(null, sub);
    },
  });
  server = net.createServer(broker.handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise<void>((r) => broker.close(() => server.close(() => r())));
});

describe('connectMqtt', () => {
  it('a subscribe pending when the connection drops rejects with MqttConnectionError instead of hanging', async () => {
    const c = await connectMqtt({ url, clientId: 'stall-1', protocolVersion: 4 });
    const sub = c.subscribe('stall/x', 1);
    const outcome = sub.then(
      () => 'resolved',
      (e: unknown) => e,
    );
    for (let i = 0; i < 100 && stalled === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(stalled).toBe(1);
    c.abort();
    const err = await outcome;
    expect(err).toBeInstanceOf(MqttConnectionError);
    expect((err as Error).message).toMatch(/connection stall-1 closed/);
    // And a closed connection refuses new subscriptions at once.
    await expect(c.subscribe('ok/y', 1)).rejects.toThrow(/connection stall-1 is closed/);
  });

  it('an ordinary subscribe resolves', async () => {
    const c = await connectMqtt({ url, clientId: 'ok-1', protocolVersion: 4 });
    await expect(c.subscribe('ok/#', 1)).resolves.toBeUndefined();
    await c.end();
  });

  it('by default negotiates: MQTT 5 first, 3.1.1 when the broker refuses 5 (aedes); a forced 5 is refused', async () => {
    const c = await connectMqtt({ url, clientId: 'auto-1' });
    expect(c.protocolVersion).toBe(4);
    await expect(c.publish('auto/x', Buffer.from('hi'), { qos: 1 })).resolves.toBeUndefined();
    await c.end();
    const err = await connectMqtt({ url, clientId: 'v5-1', protocolVersion: 5 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MqttConnectionError);
    expect(isProtocolRefusal(err)).toBe(true);
  });

  MOSQUITTO.it('a broker that speaks MQTT 5 (Mosquitto) gets MQTT 5', async () => {
    const b = await startBroker();
    try {
      const c = await connectMqtt({ url: b.url, clientId: 'auto-5' });
      expect(c.protocolVersion).toBe(5);
      await c.end();
    } finally {
      await b.dispose();
    }
  });
});

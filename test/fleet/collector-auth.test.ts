// The collector against a broker that wants credentials (Mosquitto with allow_anonymous false and a
// password file): the right user and password collect, a wrong one fails naming the broker's
// refusal, and TLS files without --broker, or half a credential for the embedded broker, are refused as bad input.
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCollector } from '../../src/fleet/collector.js';
import { TelemetryPublisher } from '../../src/telemetry/index.js';
import { runCli } from '../cli/helpers.js';
import { startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { MOSQUITTO_PASSWD } from '../support/require.js';
import { BIRTH_INFO, tempDir, windowInput } from '../telemetry/mqtt/fixtures.js';

let broker: Broker;
let dir: string;
beforeAll(async () => {
  dir = await tempDir('collector-auth');
  const passwords = path.join(dir, 'passwd');
  execFileSync(MOSQUITTO_PASSWD.get(), ['-c', '-b', passwords, 'collector', 's3cret']);
  execFileSync(MOSQUITTO_PASSWD.get(), ['-b', passwords, 'pi-7', 'dev1ce']);
  // Started as root, mosquitto drops to its own user before reading the file: let it.
  await fsp.chmod(dir, 0o755);
  await fsp.chmod(passwords, 0o644);
  broker = await startBroker({ config: ['allow_anonymous false', `password_file ${passwords}`] });
});
afterAll(async () => {
  await broker?.dispose();
});

describe('collector with credentials', () => {
  it('the right user and password collect what an authenticated device sends', async () => {
    const c = await startCollector({ brokerUrl: broker.url, dbFile: path.join(dir, 'ok.db'), username: 'collector', password: 's3cret', onLog: () => {} });
    try {
      const pub = await TelemetryPublisher.start({ url: broker.url, fleet: 'lab', device: 'pi-7', stateDir: path.join(dir, 'pi-7'), birth: BIRTH_INFO, username: 'pi-7', password: 'dev1ce' });
      await pub.enqueueWindow(windowInput(0));
      await pub.drained();
      await pub.close();
      const end = Date.now() + 20_000;
      while ((await c.store.totals()).length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
      expect(await c.store.totals()).toEqual([expect.objectContaining({ device: 'pi-7', windows: 1, count: 10 })]);
    } finally {
      await c.close();
    }
  });

  it('bad input: a wrong password fails with the broker\'s refusal; credentials without --broker are refused', async () => {
    const err = await startCollector({ brokerUrl: broker.url, dbFile: path.join(dir, 'bad.db'), username: 'collector', password: 'wrong', onLog: () => {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(new RegExp(`cannot connect to mqtt://127\\.0\\.0\\.1:${broker.port}: .*(Not authorized|Bad User Name or Password)`, 'i'));
    const tls = await runCli('collect', '--db', path.join(dir, 'cli.db'), '--tls-ca', path.join(dir, 'ca.pem'), '--http', 'off');
    expect(tls.code).toBe(2);
    expect(tls.err).toMatch(/--tls-\*: apply to --broker/);
    const half = await runCli('collect', '--db', path.join(dir, 'cli.db'), '--username', 'collector', '--http', 'off');
    expect(half.code).toBe(2);
    expect(half.err).toMatch(/--username: the embedded broker needs both a user name and a password.*EDGEEXIT_MQTT_PASSWORD/);
  });
});

// Block transfer against packet limits, through real Mosquittos: a compiled bundle's blocks fit a
// device's default 64 KiB packet (one request per block, with the device announcing that limit in
// its CONNECT, so a larger reply would end the connection); a broker that accepts smaller packets
// (max_packet_size, sent in its CONNACK) makes the downloader ask for smaller ranges, and a device
// with a smaller limit still its own; the file server refuses a range the broker could not carry.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DEFAULT_MAX_PACKET_BYTES, downloadBundle, type DownloadOptions } from '../../src/agent/download.js';
import { FILES_ROOT, REPLY_OVERHEAD_BYTES } from '../../src/agent/file-protocol.js';
import { loadTrustStore, type VerifyOptions } from '../../src/bundle/index.js';
import { startFileServer, type FileServer } from '../../src/fleet/file-server.js';
import { connectMqtt, type MqttConnection } from '../../src/telemetry/mqtt/client.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { scratch } from '../compiler/helpers.js';
import { makeFixture, refsOf, sizeOf, type Fixture } from './transfer-fixtures.js';

const BROKER_LIMIT = 16 * 1024;

MOSQUITTO.describe('block transfer within packet limits', () => {
  let dir: string;
  let fx: Fixture;
  let verify: VerifyOptions;
  const brokers: Broker[] = [];
  const servers: FileServer[] = [];
  const monitors: MqttConnection[] = [];
  let open: { broker: Broker; lengths: Map<string, number[]> };
  let limited: { broker: Broker; lengths: Map<string, number[]> };
  let n = 0;

  /** A broker (extra config lines), a file server on it, and a client recording each device's requested lengths. */
  async function setUp(config: string[]) {
    const broker = await startBroker({ config: ['set_tcp_nodelay true', ...config] });
    brokers.push(broker);
    servers.push(await startFileServer({ brokerUrl: broker.url, bundles: [fx.zoo] }));
    const lengths = new Map<string, number[]>();
    const mon = await connectMqtt({
      url: broker.url,
      clientId: `monitor-${brokers.length}`,
      protocolVersion: 5,
      onMessage: (m) => {
        const device = m.topic.split('/').at(-2)!;
        lengths.set(device, [...(lengths.get(device) ?? []), (JSON.parse(m.payload.toString()) as { length: number }).length]);
      },
    });
    await mon.subscribe(`${FILES_ROOT}/+/+/get`, 1);
    monitors.push(mon);
    return { broker, lengths };
  }

  const download = async (broker: Broker, extra: Partial<DownloadOptions> = {}) => {
    const r = await refsOf(fx.zoo);
    const device = `pi-${++n}`;
    const out = await downloadBundle({ brokerUrl: broker.url, fleet: 'lab', device, manifest: r.manifest, signature: r.signature, staging: path.join(dir, `staging-${n}`), verify, requestTimeoutMs: 2_000, ...extra });
    return { ...out, device };
  };

  beforeAll(async () => {
    dir = await scratch('packets');
    fx = await makeFixture(dir);
    verify = { trust: await loadTrustStore(fx.trustDir), requireSignature: true };
    open = await setUp([]);
    limited = await setUp([`max_packet_size ${BROKER_LIMIT}`]);
  }, 120_000);
  afterAll(async () => {
    for (const m of monitors) await m.end().catch(() => undefined);
    for (const s of servers) await s.close().catch(() => undefined);
    for (const b of brokers) await b.dispose();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it("a compiled bundle's blocks fit the default 64 KiB packet: one request per block", async () => {
    const { manifestJson } = await refsOf(fx.zoo);
    expect(manifestJson.blocks!.size + REPLY_OVERHEAD_BYTES).toBeLessThanOrEqual(DEFAULT_MAX_PACKET_BYTES);
    const { verified, stats, device } = await download(open.broker);
    expect(verified.signature.status).toBe('valid');
    const { blocks } = sizeOf(manifestJson);
    const r = await refsOf(fx.zoo);
    const small = Math.ceil(r.manifest.bytes / manifestJson.blocks!.size) + 1;
    expect(stats.blocksFetched).toBe(blocks);
    expect(stats.requests).toBe(blocks + small);
    expect(Math.max(...open.lengths.get(device)!)).toBe(manifestJson.blocks!.size);
  });

  it("a broker's smaller maximum packet size (CONNACK) makes the device ask for smaller ranges", async () => {
    const probe = await connectMqtt({ url: limited.broker.url, clientId: 'probe', protocolVersion: 5 });
    expect(probe.brokerMaximumPacketSize).toBe(BROKER_LIMIT);
    await probe.end();
    const { verified, stats, device } = await download(limited.broker);
    expect(verified.signature.status).toBe('valid');
    const lengths = limited.lengths.get(device)!;
    expect(Math.max(...lengths)).toBe(BROKER_LIMIT - REPLY_OVERHEAD_BYTES);
    const r = await refsOf(fx.zoo);
    const m = r.manifestJson;
    // Every block (a full one is 63 KiB) in 15 KiB ranges, and the manifest and signature likewise.
    const chunk = BROKER_LIMIT - REPLY_OVERHEAD_BYTES;
    let expected = Math.ceil(r.manifest.bytes / chunk) + Math.ceil(r.signature.bytes / chunk);
    for (const f of [...m.stages, ...m.files]) {
      for (let at = 0; at < f.bytes; at += m.blocks!.size) expected += Math.ceil(Math.min(m.blocks!.size, f.bytes - at) / chunk);
    }
    expect(stats.requests).toBe(expected);
    expect(stats.blocksFetched).toBe(sizeOf(m).blocks);
  });

  it("a device's own smaller limit wins over the broker's", async () => {
    const { verified, device } = await download(limited.broker, { maxPacketBytes: 8 * 1024 });
    expect(verified.signature.status).toBe('valid');
    expect(Math.max(...limited.lengths.get(device)!)).toBe(8 * 1024 - REPLY_OVERHEAD_BYTES);
  });

  it('the file server refuses a range the broker could not carry, with the limit', async () => {
    const replies: { status?: string; reason?: string }[] = [];
    const c = await connectMqtt({ url: limited.broker.url, clientId: 'asker', protocolVersion: 5, onMessage: (m) => replies.push(m.properties?.userProperties ?? {}) });
    await c.subscribe(`${FILES_ROOT}/lab/asker/reply`, 1);
    const sha = (await refsOf(fx.zoo)).manifestJson.stages[0]!.sha256;
    await c.publish(`${FILES_ROOT}/lab/asker/get`, Buffer.from(JSON.stringify({ sha256: sha, offset: 0, length: BROKER_LIMIT })), { qos: 1, properties: { responseTopic: `${FILES_ROOT}/lab/asker/reply`, correlationData: Buffer.from('x') } });
    const end = Date.now() + 10_000;
    while (replies.length < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    await c.end();
    expect(replies).toEqual([{ status: 'bad-request', reason: `length over ${BROKER_LIMIT - REPLY_OVERHEAD_BYTES}` }]);
    // The server kept its connection: a later download through it still works.
    const { verified } = await download(limited.broker);
    expect(verified.signature.status).toBe('valid');
  });
});

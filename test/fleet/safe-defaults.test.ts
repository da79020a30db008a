// Finding 5 of issue 12, safe defaults: the embedded broker listens on loopback unless told
// otherwise, and on any other address refuses to start without credentials and then requires
// them of every client; the HTTP server answers only to its own names (DNS-rebinding defence)
// and, given a token, only to requests carrying it. Real parts: the collector's embedded aedes
// broker, MQTT.js clients, node:http requests with hand-set Host headers, a real SQLite file.
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCollector, type Collector } from '../../src/fleet/collector.js';
import { connectMqtt, topicFor } from '../../src/telemetry/index.js';
import { InputError } from '../../src/util/errors.js';
import { runCli } from '../cli/helpers.js';
import { tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';

// An address of this machine that is not loopback, to reach a listener the way a LAN peer would.
const LAN_ADDRESS = Object.values(os.networkInterfaces())
  .flat()
  .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;

function tcpConnect(host: string, port: number): Promise<'connected' | string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

function request(url: string, headers: Record<string, string>): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

let dir: string;
beforeAll(async () => {
  dir = await tempDir('safe-defaults');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('embedded broker', () => {
  it.skipIf(!LAN_ADDRESS)('listens on loopback by default: not reachable at the LAN address', async () => {
    const c = await startCollector({ dbFile: path.join(dir, 'loop.db'), port: 0, onLog: () => undefined });
    try {
      const port = Number(new URL(c.url).port);
      expect(await tcpConnect('127.0.0.1', port)).toBe('connected');
      expect(await tcpConnect(LAN_ADDRESS!, port)).toBe('ECONNREFUSED');
    } finally {
      await c.close();
    }
  });

  it('refuses to listen on another address without credentials, naming the flags', async () => {
    const err = await startCollector({ dbFile: path.join(dir, 'open.db'), port: 0, host: '0.0.0.0', onLog: () => undefined }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).problems[0]).toMatchObject({ where: '--listen', got: '0.0.0.0' });
    const cli = await runCli('collect', '--db', path.join(dir, 'cli.db'), '--listen', '0.0.0.0', '--port', '0', '--http', 'off');
    expect(cli.code).toBe(2);
    expect(cli.err).toMatch(/--listen: expected a loopback address, or --username with --password/);
  });

  it('on another address, requires the user name and password of every client and still collects', async () => {
    const logs: string[] = [];
    const c = await startCollector({ dbFile: path.join(dir, 'auth.db'), port: 0, host: '0.0.0.0', username: 'fleet', password: 'pa55', onLog: (l) => logs.push(l) });
    try {
      expect(logs.some((l) => /embedded MQTT broker listening on mqtt:\/\/0\.0\.0\.0:\d+ \(user name and password required\)/.test(l))).toBe(true);
      const anon = await connectMqtt({ url: c.url, clientId: 'anon', protocolVersion: 4 }).catch((e: unknown) => e);
      expect(anon).toBeInstanceOf(Error);
      const wrong = await connectMqtt({ url: c.url, clientId: 'wrong', protocolVersion: 4, username: 'fleet', password: 'nope' }).catch((e: unknown) => e);
      expect(wrong).toBeInstanceOf(Error);
      const ok = await connectMqtt({ url: c.url, clientId: 'ok', protocolVersion: 4, username: 'fleet', password: 'pa55' });
      await ok.publish(topicFor('lab', 'pi-1', 'metrics'), Buffer.from(JSON.stringify({ id: 1, bdSeq: 0, seq: 0, ...windowBody(0, 'pi-1') })), { qos: 1 });
      await ok.end();
      const end = Date.now() + 20_000;
      while ((await c.store.totals()).length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(await c.store.totals()).toEqual([expect.objectContaining({ device: 'pi-1', windows: 1 })]);
    } finally {
      await c.close();
    }
  });
});

describe('collector HTTP server', () => {
  let c: Collector;
  let port: number;
  beforeAll(async () => {
    c = await startCollector({ dbFile: path.join(dir, 'http.db'), port: 0, http: { host: '127.0.0.1', port: 0, token: 't0ken', allowedHosts: ['collector.lan'] }, onLog: () => undefined });
    port = Number(new URL(c.httpUrl!).port);
  });
  afterAll(async () => {
    await c?.close();
  });
  const api = () => `${c.httpUrl}/api/fleet`;

  it('answers only to its own names: a rebound DNS name gets 403 even with the token', async () => {
    const evil = await request(api(), { Host: `attacker.example:${port}`, Authorization: 'Bearer t0ken' });
    expect(evil.status).toBe(403);
    expect(JSON.parse(evil.body).error).toMatch(/Host "attacker\.example:\d+" is not a name of this collector.*--http-allow-host attacker\.example/);
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `collector.lan:${port}`, 'COLLECTOR.LAN'])
      expect((await request(api(), { Host: host, Authorization: 'Bearer t0ken' })).status, host).toBe(200);
  });

  it('with a token, refuses requests without it and takes it as a bearer token or from the cookie /?token= sets', async () => {
    const none = await request(api(), {});
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer');
    expect((await request(`${c.httpUrl}/metrics`, { Authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await request(`${c.httpUrl}/metrics`, { Authorization: 'Bearer t0ken' })).status).toBe(200);
    const page = await request(`${c.httpUrl}/?token=t0ken`, {});
    expect(page.status).toBe(200);
    const cookie = String(page.headers['set-cookie']);
    expect(cookie).toMatch(/^edgeexit_token=t0ken; HttpOnly; SameSite=Strict; Path=\//);
    expect((await request(api(), { Cookie: cookie.split(';')[0]! })).status).toBe(200);
    expect((await request(api(), { Cookie: 'edgeexit_token=guess' })).status).toBe(401);
  });
});

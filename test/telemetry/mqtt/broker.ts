// A throwaway Mosquitto for one test file: own config on a free loopback port, started and killed
// by the test, restartable on the same port (outage tests), plus a gate (TCP relay) that can hold
// a client off the broker for a while.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MOSQUITTO } from '../../support/require.js';

export { MOSQUITTO };

export interface Broker {
  port: number;
  url: string;
  dir: string;
  start(): Promise<void>;
  /** Kill the broker (SIGKILL by default) and wait for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Stop and delete its folder. */
  dispose(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** `config`: extra mosquitto.conf lines (e.g. queue limits for load tests). */
export async function startBroker(opts: { persistence?: boolean; config?: string[] } = {}): Promise<Broker> {
  const mosquitto = MOSQUITTO.get();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-mosquitto-'));
  const port = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  await fsp.writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      opts.persistence ? 'persistence true' : 'persistence false',
      ...(opts.persistence ? [`persistence_location ${dir}/`] : []),
      'log_dest stderr',
      'log_type error',
      ...(opts.config ?? []),
      '',
    ].join('\n'),
  );
  let proc: ChildProcess | undefined;
  let log = '';
  const broker: Broker = {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    dir,
    async start() {
      const p = spawn(mosquitto, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
      proc = p;
      p.stderr?.on('data', (d: Buffer) => (log += d.toString()));
      const deadline = Date.now() + 10_000;
      for (;;) {
        if (p.exitCode !== null) throw new Error(`mosquitto exited ${p.exitCode}: ${log}`);
        if (await accepts(port)) return;
        // A restart can find the port still in TIME_WAIT for a moment; keep trying until the deadline.
        if (Date.now() > deadline) throw new Error(`mosquitto did not accept on ${port}: ${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop(signal = 'SIGKILL') {
      const p = proc;
      proc = undefined;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        p.once('exit', () => resolve());
        p.kill(signal);
      });
    },
    async dispose() {
      await broker.stop();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
  await broker.start();
  return broker;
}

/**
 * A TCP relay in front of a broker that can refuse new connections for a while, so a test can
 * let its subscriber back onto a restarted broker before the publisher reaches it.
 */
export interface Gate {
  port: number;
  url: string;
  /** While closed, new connections are dropped at once (the client sees a refused attempt). */
  setOpen(open: boolean): void;
  dispose(): Promise<void>;
}

export async function startGate(targetPort: number): Promise<Gate> {
  let open = true;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (!open) return void client.destroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    setOpen(v) {
      open = v;
    },
    async dispose() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

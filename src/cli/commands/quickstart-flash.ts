// The quick start's flashing leg: this machine plays operator and device at once. A device agent
// (`edgeexit agent --root`) runs the bundle as compiled, before calibration; `edgeexit flash`
// then sends it the calibrated bundle, a thresholds-only update, so only the manifest and its
// signature cross the wire; the agent self-tests, switches in place, runs a short trial and
// commits, and `edgeexit jobs` shows the verdict.
//
// File transfer is MQTT 5 request/response (response topic, correlation data). The embedded
// broker (aedes) speaks MQTT 3.1.1 only, so this leg runs a throwaway Mosquitto on a free
// loopback port when one is installed, and is skipped with a note naming the package when not.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { installBundle } from '../../agent/install.js';
import { JOB_RECORD_FILE } from '../../agent/jobs.js';
import type { CliIO } from '../io.js';
import { agentCommand } from './agent.js';
import { flashCommand, jobsCommand } from './flash.js';

const MOSQUITTO_PATHS = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto', '/opt/homebrew/sbin/mosquitto', '/usr/local/opt/mosquitto/sbin/mosquitto'];

/** The first Mosquitto binary installed here, if any. */
export function findMosquitto(): string | undefined {
  return MOSQUITTO_PATHS.find((p) => existsSync(p));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

/** Mosquitto on loopback only, anonymous (nothing else can reach it), stopped by the returned function. */
async function startMosquitto(bin: string, dir: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  await fsp.writeFile(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'set_tcp_nodelay true', 'log_dest stderr', 'log_type error', ''].join('\n'));
  const p: ChildProcess = spawn(bin, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  p.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const stop = () => new Promise<void>((resolve) => (p.exitCode !== null ? resolve() : (p.once('exit', () => resolve()), p.kill('SIGTERM'))));
  for (let i = 0; i < 200 && !(await accepting(port)); i++) {
    if (p.exitCode !== null) throw new Error(`mosquitto exited ${p.exitCode}: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `mqtt://127.0.0.1:${port}`, stop };
}

export interface QuickstartFlashOptions {
  work: string;
  /** The bundle the device runs first (as compiled), and the one flashed to it (calibrated). */
  before: string;
  bundle: string;
  trustDir: string;
  key: string;
  images: string;
}

/** Run the leg (see the header); false when it was skipped for want of Mosquitto. */
export async function quickstartFlash(o: QuickstartFlashOptions, io: CliIO): Promise<boolean> {
  io.out('\n== flash: send the calibrated bundle to a device agent running beside this, as a signed job over MQTT ==');
  const bin = findMosquitto();
  if (!bin) {
    io.out('skipped: bundle transfer needs MQTT 5 request/response, which the embedded broker (aedes) lacks; apt-get install mosquitto (brew install mosquitto) and run again');
    return false;
  }
  const dir = path.join(o.work, 'flash');
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const root = path.join(dir, 'device-store');
  const first = await installBundle({ root, bundle: o.before, trustDir: o.trustDir, threads: 1 });
  io.out(`device: bundle store ${root} runs ${first.bundle.slice(0, 12)} (as compiled, before calibration)`);
  const broker = await startMosquitto(bin, dir);
  const ac = new AbortController();
  const agentLog: string[] = [];
  let agent: Promise<unknown> | undefined;
  try {
    agent = agentCommand(
      { root, trustDir: o.trustDir, watch: o.images, loop: true, telemetry: broker.url, fleet: 'quickstart', deviceId: 'device-1', stateDir: path.join(dir, 'device-telemetry'), threads: 1, trialMs: 2_000 },
      { out: () => undefined, err: (l) => agentLog.push(l) },
      ac.signal,
    );
    // The agent reports (idle) once its job link is up; the flash waits for its verdict either way.
    for (let i = 0; i < 200 && !agentLog.some((l) => l.startsWith('agent: re-running')); i++) await new Promise((r) => setTimeout(r, 50));
    await flashCommand({ bundle: o.bundle, to: ['quickstart/device-1'], key: o.key, files: path.join(dir, 'files'), broker: broker.url, wait: true, waitTimeout: 120 }, io);
    for (const l of agentLog.filter((l) => /^job |switched to|downloaded/.test(l))) io.out(`  ${l.startsWith('agent: ') ? l : `agent: ${l}`}`);
    io.out('edgeexit jobs:');
    await jobsCommand({ broker: broker.url }, io);
    io.out(`(the job's record on the device: ${path.join(root, JOB_RECORD_FILE)}; across machines: \`edgeexit fleet enroll --operator ops\`, then \`edgeexit flash <bundle> --to <fleet>/<device> --broker …\`)`);
    return true;
  } finally {
    ac.abort();
    await agent?.catch((err: unknown) => io.err(`agent: ${(err as Error).message}`));
    await broker.stop();
  }
}

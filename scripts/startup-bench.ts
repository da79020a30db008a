// What the device path costs to start: wall time, peak RSS and modules loaded for `edgeexit
// --version`, `edgeexit run <bundle> <one image>` and `edgeexit agent` (time until it says it is
// watching, with a Mosquitto it starts on a free loopback port), each run several times in
// alternation with the other launchers given (compare a build before and after a change side by
// side in one run). Modules are counted by scripts/count-modules.mjs (ESM loader hook plus
// CommonJS Module._load), grouped by what the device path must not load.
//
//   npm run bench:startup -- [--runs 7] [--cli bin/edgeexit.js] [--cli /tmp/before/bin/edgeexit.js] [--json out.json]
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync, mkdirSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const args = process.argv.slice(2);
const flagAll = (name: string): string[] => args.flatMap((a, i) => (a === `--${name}` && args[i + 1] ? [args[i + 1]!] : []));
const runs = Number(flagAll('runs')[0] ?? '7');
const clis = flagAll('cli').map((c) => path.resolve(c));
if (clis.length === 0) clis.push(path.resolve('bin/edgeexit.js'));
const jsonOut = flagAll('json')[0];
const preload = path.resolve('scripts/count-modules.mjs');

// Matched against source paths: a loaded file itself, or for a bundled CLI chunk (dist/bin/) the
// source files esbuild put into it (dist/bin/meta.json), so a bundle cannot hide what it loads.
const GROUPS: [string, RegExp][] = [
  ['compiler', /(^|\/)dist\/compiler\//],
  ['calibration', /(^|\/)dist\/calibration\//],
  ['fleet', /(^|\/)dist\/fleet\//],
  ['better-sqlite3', /(^|\/)node_modules\/better-sqlite3\//],
  ['aedes', /(^|\/)node_modules\/aedes/],
  ['mqtt', /(^|\/)node_modules\/mqtt\//],
  ['onnxruntime', /(^|\/)node_modules\/onnxruntime-/],
  ['sharp', /(^|\/)node_modules\/(sharp|@img)\//],
];

/** What each bundled output file holds, from the launcher's dist/bin/meta.json (absent: not bundled). */
const bundleInputsCache = new Map<string, Map<string, string[]>>();
function bundleInputs(cli: string): Map<string, string[]> {
  const cached = bundleInputsCache.get(cli);
  if (cached) return cached;
  const out = readBundleInputs(cli);
  bundleInputsCache.set(cli, out);
  return out;
}

function readBundleInputs(cli: string): Map<string, string[]> {
  const meta = path.join(path.dirname(path.dirname(cli)), 'dist', 'bin', 'meta.json');
  const out = new Map<string, string[]>();
  if (!existsSync(meta)) return out;
  const m = JSON.parse(readFileSync(meta, 'utf8')) as { outputs: Record<string, { inputs: Record<string, unknown> }> };
  const root = path.dirname(path.dirname(cli));
  for (const [file, o] of Object.entries(m.outputs)) out.set(path.join(root, file), Object.keys(o.inputs));
  return out;
}

interface Sample {
  ms: number;
  rss: number;
  modules: number;
  groups: Record<string, number>;
}

function readLog(file: string, cli: string): Omit<Sample, 'ms'> {
  const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  const rssLine = lines.filter((l) => l.startsWith('rss ')).pop();
  const mods = new Set(lines.filter((l) => l.startsWith('file:')));
  const bundled = bundleInputs(cli);
  const sources = [...mods].flatMap((m) => bundled.get(fileURLToPath(m)) ?? [m]);
  const groups: Record<string, number> = {};
  for (const [g, re] of GROUPS) groups[g] = sources.filter((m) => re.test(m)).length;
  return { rss: rssLine ? Number(rssLine.slice(4)) : NaN, modules: mods.size, groups };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function env(log: string): NodeJS.ProcessEnv {
  return { ...process.env, EDGEEXIT_MODLOG: log, NODE_OPTIONS: `--import ${preload}` };
}

/** Runs to completion; wall time from spawn to exit. */
function timeCommand(cli: string, argv: string[], scratch: string): Sample {
  const log = path.join(scratch, `mods-${Math.random().toString(36).slice(2)}.log`);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [cli, ...argv], { env: env(log), encoding: 'utf8' });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cli} ${argv.join(' ')} exited ${r.status}:\n${r.stderr}`);
  return { ms, ...readLog(log, cli) };
}

/** Starts the agent; wall time until it says it is watching; stopped after its first window. */
async function timeAgent(cli: string, argv: string[], scratch: string): Promise<Sample> {
  const log = path.join(scratch, `mods-${Math.random().toString(36).slice(2)}.log`);
  const t0 = performance.now();
  const child = spawn(process.execPath, [cli, ...argv], { env: env(log), stdio: ['ignore', 'ignore', 'pipe'] });
  let ready = NaN;
  let hwm = NaN;
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not report a window in 30 s:\n${err}`)), 30_000);
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      if (Number.isNaN(ready) && err.includes('agent: ')) ready = performance.now() - t0;
      if (err.includes('window: ') && Number.isNaN(hwm)) {
        clearTimeout(timer);
        // Peak RSS so far, read before the signal: the agent's exit path is not what we measure.
        hwm = 1024 * Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? NaN);
        child.kill('SIGTERM');
      }
    });
    child.on('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  if (Number.isNaN(ready)) throw new Error(`agent never became ready:\n${err}`);
  return { ...readLog(log, cli), ms: ready, rss: hwm };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const scratch = mkdtempSync(path.join(os.tmpdir(), 'edgeexit-startup-'));
try {
  const bundle = path.join(scratch, 'bundle');
  // Signed, and checked with --key: devices refuse unsigned bundles, and older launchers know --key too.
  const key = path.join(scratch, 'bench');
  const k = spawnSync(process.execPath, [clis[0]!, 'keygen', '--out', key], { encoding: 'utf8' });
  if (k.status !== 0) throw new Error(`keygen failed:\n${k.stderr}`);
  const c = spawnSync(process.execPath, [clis[0]!, 'compile', 'models/fmnist-branchy/fmnist-branchy.onnx', '--device', 'rpi4', '--precision', 'fp32', '--out', bundle, '--key', `${key}.key`], { encoding: 'utf8' });
  if (c.status !== 0) throw new Error(`compile failed:\n${c.stderr}`);
  const image = path.join(scratch, 'one.png');
  copyFileSync(path.resolve('calibration/fashion-mnist/bag', spawnSync('ls', ['calibration/fashion-mnist/bag'], { encoding: 'utf8' }).stdout.split('\n')[0]!), image);
  const watch = path.join(scratch, 'watch');
  mkdirSync(watch);
  copyFileSync(image, path.join(watch, 'one.png'));
  const port = await freePort();
  const conf = path.join(scratch, 'mosquitto.conf');
  writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
  const broker = spawn('mosquitto', ['-c', conf], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  try {
    const scenarios: { name: string; run: (cli: string) => Promise<Sample> | Sample }[] = [
      { name: '--version', run: (cli) => timeCommand(cli, ['--version'], scratch) },
      { name: 'run (1 image)', run: (cli) => timeCommand(cli, ['run', bundle, image, '--key', `${key}.pub`], scratch) },
      {
        name: 'agent (until watching)',
        run: (cli) => timeAgent(cli, ['agent', bundle, '--key', `${key}.pub`, '--watch', watch, '--telemetry', `mqtt://127.0.0.1:${port}`, '--window', '1s', '--state-dir', path.join(scratch, `state-${Math.random().toString(36).slice(2)}`), '--device-id', 'bench'], scratch),
      },
    ];
    const results: Record<string, Record<string, Sample[]>> = {};
    for (let r = 0; r < runs; r++)
      for (const s of scenarios)
        for (const cli of clis) ((results[s.name] ??= {})[cli] ??= []).push(await s.run(cli));
    const rows: string[] = [];
    rows.push(`| command | launcher | wall ms (median of ${runs}) | peak RSS MiB | files loaded | source modules in them: ${GROUPS.map(([g]) => g).join(' | ')} |`);
    rows.push(`|---|---|---:|---:|---:|${GROUPS.map(() => '---:').join('|')}|`);
    const summary: unknown[] = [];
    for (const s of scenarios)
      for (const cli of clis) {
        const xs = results[s.name]![cli]!;
        const last = xs[xs.length - 1]!;
        const row = { command: s.name, cli, ms: median(xs.map((x) => x.ms)), rssMiB: median(xs.map((x) => x.rss)) / 2 ** 20, modules: last.modules, groups: last.groups };
        summary.push(row);
        rows.push(`| ${s.name} | ${path.relative(process.cwd(), cli) || cli} | ${row.ms.toFixed(0)} | ${row.rssMiB.toFixed(0)} | ${row.modules} | ${GROUPS.map(([g]) => last.groups[g]).join(' | ')} |`);
      }
    console.log(`startup on ${os.cpus()[0]?.model ?? 'unknown CPU'} (${os.cpus().length} cores), load ${os.loadavg()[0]!.toFixed(2)}, ${new Date().toISOString()}`);
    console.log(rows.join('\n'));
    if (jsonOut) writeFileSync(jsonOut, JSON.stringify(summary, null, 2));
  } finally {
    broker.kill();
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

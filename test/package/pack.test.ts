// edgeexit as a user installs it: build the package into a staged copy of the repository, `npm
// pack` it, unpack the tarball into a scratch project's node_modules (its dependencies linked
// from this repository's node_modules, so no network), and run the README's device loop there
// against a bundle compiled here, publishing to a Mosquitto of our own. Also: the typed subpaths
// resolve for a TypeScript consumer, and importing the root loads no compiler, calibration or
// fleet module, nor SQLite or aedes.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, promises as fsp, readFileSync, realpathSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileModel } from '../../src/compiler/index.js';
import { trustedSigner } from '../runtime/helpers.js';
import { connectMqtt, decodePayload, parseTopic, topicFor, type MqttConnection } from '../../src/telemetry/index.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';

const ROOT = path.resolve(__dirname, '../..');
const MODEL = path.join(ROOT, 'models/fmnist-branchy/fmnist-branchy.onnx');
const IMAGES = path.join(ROOT, 'calibration/fashion-mnist');
const SUBPATHS = ['edgeexit', 'edgeexit/bundle', 'edgeexit/runtime', 'edgeexit/compiler', 'edgeexit/calibration', 'edgeexit/telemetry', 'edgeexit/agent', 'edgeexit/fleet'];
/** Top-level entries of the repository that are not part of a checkout (build output, local state). */
const NOT_CHECKED_IN = new Set(['node_modules', '.git', 'dist', '.bench', 'tmp', '.edgeexit', 'bundles', 'coverage']);

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function ok(r: Ran, what: string): Ran {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  return r;
}

/** The README's device-loop example: the js block after its `<!-- example: device-loop` marker. */
function readmeExample(): string {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const m = /<!-- example: device-loop[^>]*-->\s*```js\n([\s\S]*?)```/.exec(readme);
  if (!m) throw new Error('README.md: no ```js block after <!-- example: device-loop --> (the "Use it from your own code" section)');
  return m[1]!;
}

/** Stage a checkout, build dist into it, pack it; returns the tarball. */
async function packPackage(work: string): Promise<string> {
  const stage = path.join(work, 'stage');
  cpSync(ROOT, stage, { recursive: true, filter: (src) => !NOT_CHECKED_IN.has(path.relative(ROOT, src).split(path.sep)[0]!) });
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  ok(await run(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', path.join(stage, 'dist')], ROOT), 'tsc (build)');
  // The CLI bundle, as `npm run build` makes it (the stage has no node_modules: ours resolve the bundled dependencies).
  ok(await run(process.execPath, [path.join(ROOT, 'scripts/bundle-cli.mjs')], stage, { NODE_PATH: path.join(ROOT, 'node_modules') }), 'bundle the CLI');
  // Scripts off: `prepare` would build again, into the same dist we just built.
  const packed = ok(await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], stage), 'npm pack');
  const info = JSON.parse(packed.stdout) as { filename: string }[];
  return path.join(work, info[0]!.filename);
}

/** A scratch project with the tarball in node_modules/edgeexit and its dependencies linked from ours. */
async function installInto(project: string, tarball: string): Promise<void> {
  const pkgDir = path.join(project, 'node_modules/edgeexit');
  await fsp.mkdir(pkgDir, { recursive: true });
  ok(await run('tar', ['-xzf', tarball, '-C', pkgDir, '--strip-components=1'], project), 'tar');
  const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
  // Type packages too, for the TypeScript consumer check (a TS project would install them itself).
  const types = Object.keys(pkg.devDependencies).filter((d) => d.startsWith('@types/'));
  for (const dep of [...Object.keys(pkg.dependencies), ...types]) {
    const link = path.join(project, 'node_modules', dep);
    await fsp.mkdir(path.dirname(link), { recursive: true });
    await fsp.symlink(realpathSync(path.join(ROOT, 'node_modules', dep)), link);
  }
  await fsp.writeFile(path.join(project, 'package.json'), JSON.stringify({ name: 'device-app', private: true, type: 'module' }));
}

/** Two images of every class, flat in one folder, each named after its class. */
async function frames(dir: string): Promise<string[]> {
  await fsp.mkdir(dir, { recursive: true });
  const names: string[] = [];
  for (const cls of (await fsp.readdir(IMAGES, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort()) {
    for (const f of (await fsp.readdir(path.join(IMAGES, cls))).sort().slice(0, 2)) {
      const name = `${cls}--${f}`;
      await fsp.copyFile(path.join(IMAGES, cls, f), path.join(dir, name));
      names.push(name);
    }
  }
  return names;
}

describe('the packed package in a scratch project', () => {
  let work: string;
  let project: string;
  let bundle: string;
  /** The device's trust store, trusting the key the bundle is signed with (as EDGEEXIT_TRUST_DIR). */
  let trustDir: string;
  let broker: Broker;
  let sub: MqttConnection;
  const messages: { topic: string; payload: Buffer }[] = [];

  beforeAll(async () => {
    if (!MOSQUITTO) throw new Error('mosquitto not installed: apt-get install mosquitto (.ci/run does)');
    work = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-pack-'));
    project = path.join(work, 'device-app');
    bundle = path.join(work, 'branchy-rpi4');
    const signer = await trustedSigner(work);
    trustDir = signer.trustDir;
    const [tarball] = await Promise.all([
      packPackage(work),
      compileModel({ model: MODEL, device: 'rpi4', precision: 'fp32', out: bundle, latency: false, calibrationLimit: 32, key: signer.privateKey }),
    ]);
    await installInto(project, tarball);
    broker = await startBroker();
    sub = await connectMqtt({ url: broker.url, clientId: 'pack-test-sub', protocolVersion: 4 });
    // A collector stand-in: the device keeps a window until the collector acks it (it stored it).
    sub.onMessage((m) => {
      const t = parseTopic(m.topic);
      if (t?.kind === 'ack') return;
      messages.push(m);
      if (t?.kind === 'metrics') void sub!.publish(topicFor(t.fleet, t.device, 'ack'), Buffer.from(JSON.stringify({ ids: [decodePayload('metrics', m.payload).id] })), { qos: 1 });
    });
    await sub.subscribe('edgeexit/v1/#', 1);
  }, 120_000);

  afterAll(async () => {
    await sub?.end();
    await broker?.dispose();
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  it("runs the README's device loop: classifications on stdout, a metrics window at the broker", async () => {
    const framesDir = path.join(project, 'frames');
    const names = await frames(framesDir);
    await fsp.writeFile(path.join(project, 'loop.mjs'), readmeExample());
    const r = ok(await run(process.execPath, ['loop.mjs', bundle, framesDir, broker.url], project, { EDGEEXIT_TRUST_DIR: trustDir }), 'the README example');

    const labels = (JSON.parse(readFileSync(path.join(bundle, 'manifest.json'), 'utf8')) as { labels: string[] }).labels;
    const lines = r.stdout.trim().split('\n');
    const rows = lines.filter((l) => l.endsWith(' ms')).map((l) => /^(\S+)\.png (\S+) exit (\d) (\d+\.\d\d) ms$/.exec(l));
    expect(rows.every((m) => m !== null), r.stdout).toBe(true);
    expect(rows.map((m) => `${m![1]}.png`)).toEqual(names);
    for (const m of rows) expect(labels).toContain(m![2]);
    // The file names carry the true class: an fp32 compile of a ~90 % model gets most right.
    const right = rows.filter((m) => m![1]!.split('--')[0] === m![2]).length;
    expect(right).toBeGreaterThanOrEqual(names.length * 0.6);
    expect(lines.at(-1)).toBe('telemetry: 1 window(s), 0 left in the outbox');

    const deadline = Date.now() + 10_000;
    while (!messages.some((m) => m.topic.endsWith('/death')) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    const byKind = (kind: string) => messages.filter((m) => parseTopic(m.topic)?.kind === kind);
    expect(messages.map((m) => parseTopic(m.topic)?.device)).toEqual(messages.map(() => 'cam-01'));
    const birth = decodePayload('birth', byKind('birth')[0]!.payload);
    expect(birth.bundle.name).toBe('fmnist-branchy');
    expect(birth.profile).toBe('rpi4');
    const windows = byKind('metrics').map((m) => decodePayload('metrics', m.payload));
    expect(windows).toHaveLength(1);
    expect(windows[0]!.count).toBe(names.length);
    expect(windows[0]!.exitHistogram.reduce((a, b) => a + b, 0)).toBe(names.length);
    expect(decodePayload('death', byKind('death')[0]!.payload).clean).toBe(true);
  });

  it('loads no compiler, calibration, fleet, SQLite or aedes module when a program imports the root', async () => {
    const log = path.join(work, 'modules.log');
    await fsp.writeFile(path.join(project, 'root.mjs'), "const m = await import('edgeexit'); console.log(typeof m.loadBundle, typeof m.startDeviceTelemetry, typeof m.compileModel);\n");
    const preload = pathToFileURL(path.join(ROOT, 'scripts/count-modules.mjs')).href;
    const r = ok(await run(process.execPath, ['--import', preload, 'root.mjs'], project, { EDGEEXIT_MODLOG: log }), 'import edgeexit');
    expect(r.stdout.trim()).toBe('function function undefined');

    const dist = path.join(realpathSync(project), 'node_modules/edgeexit/dist') + path.sep;
    const loaded = readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('file:')).map((u) => fileURLToPath(u));
    const ours = loaded.filter((f) => f.startsWith(dist)).map((f) => path.relative(dist, f));
    // The log works: the runtime and telemetry the root re-exports were loaded from the package.
    expect(ours).toContain(path.join('runtime', 'bundle-runner.js'));
    expect(ours).toContain(path.join('telemetry', 'session.js'));
    expect(ours.filter((f) => /^(compiler|calibration|fleet|cli|eval)\//.test(f))).toEqual([]);
    expect(loaded.filter((f) => /[/\\](better-sqlite3|aedes)[/\\]/.test(f))).toEqual([]);
  });

  it('every subpath of the exports map loads, and a TypeScript project type-checks against them', async () => {
    await fsp.writeFile(
      path.join(project, 'subpaths.mjs'),
      `for (const s of ${JSON.stringify(SUBPATHS)}) console.log(s, Object.keys(await import(s)).length);\n`,
    );
    const r = ok(await run(process.execPath, ['subpaths.mjs'], project), 'import every subpath');
    const counts = new Map(r.stdout.trim().split('\n').map((l) => l.split(' ') as [string, string]));
    expect([...counts.keys()]).toEqual(SUBPATHS);
    for (const n of counts.values()) expect(Number(n)).toBeGreaterThan(0);

    const pkgDir = path.join(project, 'node_modules/edgeexit');
    const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { exports: Record<string, { types: string; default: string } | string> };
    for (const [sub, target] of Object.entries(pkg.exports)) {
      if (typeof target === 'string') continue;
      expect(existsSync(path.join(pkgDir, target.types)), `${sub} → ${target.types}`).toBe(true);
      expect(existsSync(path.join(pkgDir, target.default)), `${sub} → ${target.default}`).toBe(true);
    }

    await fsp.writeFile(
      path.join(project, 'consumer.ts'),
      [
        "import { loadBundle, startDeviceTelemetry, type ClassifyItem, type Manifest } from 'edgeexit';",
        "import { verifyBundle } from 'edgeexit/bundle';",
        "import { loadBundle as loadFromRuntime } from 'edgeexit/runtime';",
        "import { compileModel, type CompileOptions } from 'edgeexit/compiler';",
        "import { calibrate } from 'edgeexit/calibration';",
        "import { DeviceTelemetry, decodePayload } from 'edgeexit/telemetry';",
        "import { runAgentLoop } from 'edgeexit/agent';",
        "import { openFleetStore } from 'edgeexit/fleet';",
        '// @ts-expect-error the root is the device side: the compiler is only a subpath',
        "import { compileModel as notAtTheRoot } from 'edgeexit';",
        'export async function app(): Promise<string[]> {',
        "  const runner = await loadBundle('b', { trustDir: '/etc/edgeexit/trust' });",
        "  const unchecked = await loadFromRuntime('b', { allowUnsigned: true });",
        "  const t: DeviceTelemetry = await startDeviceTelemetry(runner, { url: 'mqtt://localhost' });",
        "  const items: ClassifyItem[] = (await runner.classify(['x.png'])).items;",
        '  const m: Manifest = runner.manifest;',
        "  const o: CompileOptions = { model: 'm.onnx', device: 'rpi4', out: 'o' };",
        '  // @ts-expect-error the types are real: a number is not a bundle path',
        '  await loadFromRuntime(42);',
        '  void [unchecked, verifyBundle, compileModel, calibrate, decodePayload, runAgentLoop, openFleetStore, notAtTheRoot, t, o];',
        '  return items.flatMap((it) => (it.ok ? [it.label, m.model.name] : []));',
        '}',
        '',
      ].join('\n'),
    );
    await fsp.writeFile(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, skipLibCheck: true, types: ['node'] }, files: ['consumer.ts'] }),
    );
    const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: project, encoding: 'utf8' });
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.status).toBe(0);

    // The CLI ships in the same package: its launcher finds dist/ inside the installed copy.
    const pkgVersion = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const cli = ok(await run(process.execPath, [path.join(pkgDir, 'bin/edgeexit.js'), '--version'], project), 'edgeexit --version');
    expect(cli.stdout.trim()).toContain(pkgVersion);
  });
});

// One label rule everywhere: a model labelled with Fashion-MNIST's official names ('T-shirt/top',
// 'Ankle boot') and an ImageFolder named the way people name folders ('T-shirt_top',
// 'ankle_boot'). Telemetry's on-device accuracy counts every image, as eval, compile (int8
// calibration images, and the bundled set as the default) and calibrate accept the same folders.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { calibrate } from '../../src/calibration/calibrate.js';
import { compileModel } from '../../src/compiler/index.js';
import { FASHION_MNIST_CLASSES } from '../../src/data/idx.js';
import { evaluateModel } from '../../src/eval/evaluate.js';
import { startCollector } from '../../src/fleet/index.js';
import { runCli } from '../cli/helpers.js';
import { writeRelabelled } from '../fixtures/data/relabel.js';
import { FMNIST, ZOO, scratch } from '../runtime/helpers.js';

// Folder name here → the zoo's folder the images come from, and the label they stand for.
const FOLDERS = [
  { folder: 'T-shirt_top', from: 'tshirt_top', label: 'T-shirt/top' },
  { folder: 'ankle_boot', from: 'ankle_boot', label: 'Ankle boot' },
  { folder: 'Trouser', from: 'trouser', label: 'Trouser' },
];
const PER = 4;

let dir: string;
let model: string;
let bundle: string;
let images: string;

beforeAll(async () => {
  dir = await scratch('label-rule');
  model = path.join(dir, 'official-names.onnx');
  await writeRelabelled(ZOO, model, { labels: FASHION_MNIST_CLASSES });
  bundle = path.join(dir, 'bundle');
  await compileModel({ model, device: 'rpi4', precision: 'fp32', out: bundle, latency: false }); // unsigned: runs opt out
  images = path.join(dir, 'images');
  for (const f of FOLDERS) {
    await fsp.mkdir(path.join(images, f.folder), { recursive: true });
    const files = (await fsp.readdir(path.join(FMNIST, f.from))).filter((x) => x.endsWith('.png')).sort().slice(0, PER);
    for (const x of files) await fsp.copyFile(path.join(FMNIST, f.from, x), path.join(images, f.folder, x));
  }
}, 180_000);

describe("label 'T-shirt/top', folder 'T-shirt_top': counted everywhere", () => {
  it("telemetry's on-device accuracy counts every image of the renamed folders", async () => {
    const collector = await startCollector({ dbFile: path.join(dir, 'fleet.db'), port: 0, host: '127.0.0.1', onLog: () => undefined });
    try {
      const r = await runCli('run', bundle, images, '--allow-unsigned', '--json', '--threads', '1', '--telemetry', collector.url, '--device-id', 'pi-labels', '--state-dir', path.join(dir, 'state'));
      expect(r.code, r.err).toBe(0);
      const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as { file: string; label: string });
      expect(lines).toHaveLength(FOLDERS.length * PER);
      const right = lines.filter((l) => FOLDERS.find((f) => f.folder === path.basename(path.dirname(l.file)))!.label === l.label).length;
      expect(right).toBeGreaterThan(PER); // the model gets most of them: the check below is not 0 = 0
      const deadline = Date.now() + 10_000;
      const totals = async () => (await collector.store.totals()).find((t) => t.device === 'pi-labels');
      while ((await totals())?.count !== lines.length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 25));
      expect(await totals()).toMatchObject({ count: lines.length, labelled: lines.length, correct: right });
    } finally {
      await collector.close();
    }
  });

  it('eval, compile (int8 calibration images, and the bundled set by default) and calibrate accept the same folders', async () => {
    const ev = await evaluateModel({ model, data: { kind: 'imagefolder', dir: images }, preprocess: { colorspace: 'gray', size: [28, 28], scale: 1 / 255, mean: [0.286], std: [0.353] }, labels: FASHION_MNIST_CLASSES });
    expect(ev.count).toBe(FOLDERS.length * PER);
    expect(new Set(ev.samples.labels)).toEqual(new Set([0, 9, 1]));

    const int8 = await compileModel({ model, device: 'rpi4', precision: 'int8', calibration: images, out: path.join(dir, 'int8'), latency: false });
    expect(int8.manifest.target.precision).toBe('int8');
    // calibration/fashion-mnist's folders (tshirt_top, ankle_boot, …) are these labels too.
    const byDefault = await compileModel({ model, device: 'rpi4', precision: 'int8', calibrationLimit: 100, out: path.join(dir, 'int8-default'), latency: false });
    expect(byDefault.manifest.target.precision).toBe('int8');

    const c = await calibrate({ bundle, data: images, target: { kind: 'accuracy-drop', maxDropPp: 100 }, latencySource: 'model', allowMiss: true, out: path.join(dir, 'cal'), onProgress: () => undefined });
    expect(c.images.fit + c.images.heldOut).toBe(FOLDERS.length * PER);
  }, 180_000);
});

// `edgeexit quickstart`: the main job end to end on the embedded defaults. For now: list the
// zoo and the device profiles, inspect each zoo model and evaluate it on the Fashion-MNIST test
// set (or, where Debian's dataset is absent, on the committed calibration images), check the
// accuracy against what the model card records, then compile fmnist-branchy for a Raspberry Pi 4
// at int8, signed, verify the bundle, calibrate its exit thresholds on the calibration images and
// run it over the test set with and without early exit and beside the unsplit model (the same
// model compiled as one session computing only its last exit: what a user would otherwise
// deploy), printing accuracy and speed-up against both; last, a telemetry run through an embedded
// MQTT broker into the collector, and `fleet status`; then the calibrated bundle flashed to a
// device agent running beside it (quickstart-flash.ts).
import { promises as fsp } from 'node:fs';
import { FASHION_MNIST_DIR } from '../../data/idx.js';
import path from 'node:path';
import { listZoo, modelsDir, recordedTestAccuracy } from '../../model/zoo.js';
import { describeModel, requireSelfDescription } from '../../model/describe.js';
import { evaluateModel } from '../../eval/evaluate.js';
import { EdgeExitError } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { count, pct, progress, table } from '../format.js';
import { devicesCommand } from './devices.js';
import { renderInspect } from './inspect.js';
import { resolveEvalData } from './evaluate.js';
import { compileCommand } from './compile.js';
import { verifyBundleCommand } from './verify-bundle.js';
import { calibrateCommand } from './calibrate.js';
import { fashionMnistLabelMap, loadFashionMnist } from '../../data/idx.js';
import { scanImageFolder } from '../../data/imagefolder.js';
import { prepareBatch, toTensor, type PreprocessSpec, type TensorData } from '../../backends/image.js';
import { loadBundle } from '../../runtime/bundle-runner.js';
import { compileModel } from '../../compiler/index.js';
import { packageRoot } from '../../devices/load.js';
import { addTrustedKey, generateKeyPair } from '../../bundle/index.js';
import { startCollector } from '../../fleet/collector.js';
import { fleetStatus } from '../../fleet/status.js';
import { describeSummary } from '../../telemetry/device.js';
import { renderFleetStatus } from './fleet.js';
import { TELEMETRY_CHUNK, classifyFiles, labelFromPath, startTelemetry, telemetryFlags } from '../telemetry-flags.js';
import { collectInputs } from './run.js';
import { quickstartFlash } from './quickstart-flash.js';


export interface QuickstartOptions {
  limit?: number;
  /** Where the compiled bundle and the demo signing key go (default .edgeexit/quickstart). */
  out?: string;
  /** Calibration images used by the int8 compile and the threshold calibration (default: all 3,000). */
  calibrationLimit?: number;
  /** Accuracy budget (pp) for the threshold calibration. */
  maxAccuracyDrop?: number;
}

/** The evaluation images as one NCHW tensor with labels: the IDX test set, or the calibration folder. */
async function evaluationTensor(spec: PreprocessSpec, classes: readonly string[], haveTest: boolean, calibrationDir: string, limit?: number): Promise<{ tensor: TensorData; labels: number[] }> {
  if (haveTest) {
    const ds = await loadFashionMnist('test');
    // By name: the bundle's labels need not be in Fashion-MNIST's order.
    const toBundle = fashionMnistLabelMap(classes, 'the bundle manifest');
    const n = Math.min(limit ?? ds.images.count, ds.images.count);
    const { rows: h, cols: w } = ds.images;
    const px = Array.from({ length: n }, (_, i) => ({ width: w, height: h, channels: 1, data: ds.images.pixels.subarray(i * w * h, (i + 1) * w * h) }));
    return { tensor: toTensor(px, spec), labels: Array.from(ds.labels.subarray(0, n), (l) => toBundle[l]!) };
  }
  const folder = await scanImageFolder(calibrationDir, { labels: classes });
  const items = folder.items.slice(0, limit ?? folder.items.length);
  const batch = await prepareBatch(items.map((it) => it.file), spec);
  return { tensor: batch.tensor, labels: batch.indices.map((i) => items[i]!.label) };
}

export interface QuickstartRow {
  model: string;
  file: string;
  exit: string;
  macs: number;
  measured: number;
  recorded?: number;
}

export async function quickstartCommand(opts: QuickstartOptions, io: CliIO): Promise<QuickstartRow[]> {
  io.out('== device profiles ==');
  await devicesCommand({}, io);
  const haveTest = await fsp.stat(`${FASHION_MNIST_DIR}/t10k-images-idx3-ubyte.gz`).then(() => true, () => false);
  const dataName = haveTest ? 'test' : 'calibration';
  if (!haveTest) io.out(`\nnote: ${FASHION_MNIST_DIR} not found (apt-get install dataset-fashion-mnist); evaluating on the calibration images instead — card figures are test-set figures and will differ.`);
  const data = await resolveEvalData(dataName);
  const rows: QuickstartRow[] = [];
  for (const entry of await listZoo()) {
    for (const file of entry.files) {
      const d = await describeModel(file);
      // The CBNet converter outputs an image, not logits: it is evaluated through pipeline.onnx.
      if (d.metadata['edgeexit.role'] === 'cbnet-converter') continue;
      io.out(`\n== ${entry.name}: ${file} ==`);
      io.out(renderInspect(d));
      const { preprocess, labels } = requireSelfDescription(d);
      const bar = progress(`eval ${entry.name}`, 1);
      const r = await evaluateModel({ model: file, data, preprocess, labels, ...(opts.limit ? { limit: opts.limit } : {}), onProgress: (p) => bar.update(p.done, p.total) }).finally(() => bar.stop());
      const recorded = recordedTestAccuracy(entry.results, file).slice(0, d.exits.length);
      r.exits.forEach((e, k) => {
        rows.push({ model: entry.name, file, exit: e.name, macs: d.exits[k]!.cumulativeMacs, measured: e.accuracy, ...(recorded[k] !== undefined && haveTest && !opts.limit ? { recorded: recorded[k] } : {}) });
      });
    }
  }
  io.out(`\n== summary: top-1 on ${data.kind === 'idx' ? 'the Fashion-MNIST test set' : 'the calibration images'}${opts.limit ? ` (first ${opts.limit})` : ''} ==`);
  io.out(
    table(
      ['model', 'file', 'exit', 'MACs', 'top-1 measured', 'model card', 'match'],
      rows.map((r) => [r.model, r.file.split('/').pop()!, r.exit, count(r.macs), pct(r.measured), r.recorded === undefined ? '-' : pct(r.recorded), r.recorded === undefined ? '-' : Math.abs(r.recorded - r.measured) <= 0.0005 ? 'yes' : 'NO']),
    ),
  );
  const mismatches = rows.filter((r) => r.recorded !== undefined && Math.abs(r.recorded - r.measured) > 0.0005);
  if (mismatches.length > 0) {
    throw new EdgeExitError(`quickstart: ${mismatches.length} exit(s) measured differently from their model card: ${mismatches.map((m) => `${m.model} ${m.exit}`).join(', ')}`);
  }
  const work = opts.out ?? path.join('.edgeexit', 'quickstart');
  io.out(`\n== compile fmnist-branchy for rpi4 (int8), signed with a demo key this machine trusts (${path.join(work, 'trust')}), then verify ==`);
  await fsp.mkdir(work, { recursive: true });
  // A throwaway key so the demo shows signing; real fleets make theirs once with `edgeexit keygen`.
  // This machine then plays the device: it trusts the demo key in a trust store of its own
  // (never the user's ~/.config one), made afresh so an old demo key is not trusted any more.
  const keys = await generateKeyPair(path.join(work, 'demo-key'), { force: true });
  const trustDir = path.join(work, 'trust');
  await fsp.rm(trustDir, { recursive: true, force: true });
  await addTrustedKey(trustDir, keys.publicKey);
  const bundle = path.join(work, 'fmnist-branchy-rpi4-int8');
  const model = path.join(modelsDir(), 'fmnist-branchy', 'fmnist-branchy.onnx');
  const calLimit = opts.calibrationLimit ? { calibrationLimit: opts.calibrationLimit } : {};
  await compileCommand({ model, device: 'rpi4', out: bundle, precision: 'int8', key: keys.privateKey, ...calLimit }, io);
  await verifyBundleCommand({ bundle, trustDir }, io);
  // The baseline early exit has to beat: the model unsplit, one session computing its last exit only.
  const unsplit = path.join(work, 'fmnist-branchy-rpi4-int8-unsplit');
  const lastExit = (await describeModel(model)).exits.at(-1)!.output;
  await compileModel({ model, device: 'rpi4', out: unsplit, precision: 'int8', exits: [lastExit], key: keys.privateKey, latency: false, ...calLimit });
  io.out(`compiled the unsplit baseline (exit '${lastExit}' only, one stage) → ${unsplit}`);

  io.out(`\n== calibrate exit thresholds: lowest latency within ${opts.maxAccuracyDrop ?? 0.5} pp of the last exit (stage latency measured on this machine) ==`);
  const calibrationDir = path.join(packageRoot(), 'calibration', 'fashion-mnist');
  // The bundle as compiled, kept for the flashing leg: the device runs it first, then gets the calibrated one.
  const asCompiled = path.join(work, 'fmnist-branchy-rpi4-int8-as-compiled');
  await fsp.rm(asCompiled, { recursive: true, force: true });
  await fsp.cp(bundle, asCompiled, { recursive: true });
  await calibrateCommand({ bundle, data: calibrationDir, maxAccuracyDrop: opts.maxAccuracyDrop ?? 0.5, latencySource: 'measure', allowMiss: true, key: keys.privateKey, out: path.join(work, 'calibration'), ...(opts.calibrationLimit ? { limit: opts.calibrationLimit } : {}) }, io);

  const evalName = haveTest ? 'the Fashion-MNIST test set' : 'the calibration images (no test set installed)';
  io.out(`\n== run the calibrated bundle on ${evalName}: early exit vs every sample to the last exit, and vs the unsplit model (batch 1, model-only time) ==`);
  const runner = await loadBundle(bundle, { trustDir, threads: 1 });
  const baseline = await loadBundle(unsplit, { trustDir, threads: 1 });
  try {
    const { tensor, labels } = await evaluationTensor(runner.manifest.input.preprocess, runner.manifest.labels, haveTest, calibrationDir, opts.limit);
    const one = await baseline.classify(tensor, { batchSize: 1 });
    const full = await runner.classify(tensor, { thresholds: null, batchSize: 1 });
    const early = await runner.classify(tensor, { batchSize: 1 });
    const acc = (r: typeof full): number => r.items.filter((it) => it.ok && it.classIndex === labels[it.index]).length / labels.length;
    const rows = [
      ['unsplit model (one session, last exit only)', one],
      ['split bundle, every sample to the last exit (stages joined into one session)', full],
      [`early exit (thresholds ${early.thresholds?.map((t) => t.toFixed(3)).join(', ')})`, early],
    ] as const;
    const x = (base: typeof full, r: typeof full): string => `${(base.timing.cascadeMs / r.timing.cascadeMs).toFixed(2)}x`;
    io.out(
      table(
        ['policy', 'top-1', 'mean ms/image', 'speed-up vs unsplit', 'vs split to last exit', 'exits'],
        rows.map(([name, r]) => [name, pct(acc(r)), (r.timing.cascadeMs / labels.length).toFixed(3), x(one, r), x(full, r), r.exitCounts.map((c) => pct(c / labels.length, 1)).join(' / ')]),
      ),
    );
    io.out(`(${labels.length.toLocaleString('en-US')} images, int8 bundles for rpi4 run on this machine's CPU with 1 thread; a Pi's numbers differ — calibrate there with --latency-source measure)`);
  } finally {
    await runner.close();
    await baseline.close();
  }
  await quickstartTelemetry({ work, bundle, trustDir, images: calibrationDir, ...(opts.limit ? { limit: opts.limit } : {}) }, io);
  await quickstartFlash({ work, before: asCompiled, bundle, trustDir, key: keys.privateKey, images: calibrationDir }, io);
  io.out('\nNext: edgeexit inspect <model.onnx>, edgeexit eval <model.onnx> --data calibration, edgeexit compile <model.onnx> --device <id> --out <bundle>, edgeexit devices --show rpi4.');
  return rows;
}

export function quickstartModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('limit', { type: 'number', describe: 'Evaluate only this many samples per model (faster, no card check)' })
        .option('out', { type: 'string', describe: 'Folder for the compiled bundle and the demo signing key', default: '.edgeexit/quickstart' })
        .option('calibration-limit', { type: 'number', describe: 'Calibration images for the int8 compile and threshold calibration (default: all)' })
        .option('max-accuracy-drop', { type: 'number', describe: 'Accuracy budget (pp) for the calibrated thresholds', default: 0.5 }),
    handler: async (args: QuickstartOptions) => {
      await quickstartCommand(args, io);
    },
  });
}

/**
 * The telemetry leg: this machine acts as a device running the bundle over the calibration
 * images with telemetry on (as `run --telemetry` does), publishing to an embedded MQTT broker
 * (aedes) that the collector serves on a free loopback port, then `fleet status` from its
 * database. Database and device state start afresh so the status shows this run only.
 */
async function quickstartTelemetry(o: { work: string; bundle: string; trustDir: string; images: string; limit?: number }, io: CliIO): Promise<void> {
  io.out('\n== telemetry: run the bundle with telemetry to an embedded MQTT broker and the collector, then fleet status ==');
  const db = path.join(o.work, 'fleet.db');
  const state = path.join(o.work, 'device-state');
  for (const f of [db, `${db}-wal`, `${db}-shm`, state]) await fsp.rm(f, { recursive: true, force: true });
  const collectorLog: string[] = [];
  const collector = await startCollector({ dbFile: db, port: 0, host: '127.0.0.1', onLog: (l) => collectorLog.push(l) });
  try {
    const files = (await collectInputs([o.images])).slice(0, o.limit ?? Infinity);
    const flags = telemetryFlags({ telemetry: collector.url, fleet: 'quickstart', deviceId: 'this-machine', stateDir: state, window: '1s' });
    const runner = await loadBundle(o.bundle, { trustDir: o.trustDir, threads: 1, onWarning: (l) => io.err(l) });
    let classified = 0;
    try {
      const telemetry = await startTelemetry(flags, runner, o.bundle, { onLog: (l) => io.err(l) });
      try {
        const labels = runner.manifest.labels;
        await classifyFiles(runner, files, { batchSize: 1 }, TELEMETRY_CHUNK, (items) => {
          for (const it of items) {
            if (!it.ok) continue;
            classified++;
            const label = labelFromPath(it.name, labels);
            telemetry.record(it, label === undefined ? undefined : it.classIndex === label);
          }
        });
      } finally {
        io.out(describeSummary(await telemetry.close(flags.drainMs), flags.drainMs));
      }
    } finally {
      await runner.close();
    }
    // The collector acks a window only after its commit, so a drained outbox is stored; the wait covers a run that did not drain.
    const deadline = Date.now() + 10_000;
    const stored = async () => (await collector.store.totals()).reduce((a, t) => a + t.count, 0);
    while ((await stored()) < classified && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    io.out(`collector: ${await stored()} of ${classified} inferences stored in ${db} (${collectorLog.length} messages logged)`);
    io.out(renderFleetStatus(await fleetStatus(collector.store)));
    io.out('(offline: the run ended with a clean death; `edgeexit agent` keeps a device online, and `edgeexit collect` + `edgeexit fleet status` do this across machines)');
  } finally {
    await collector.close();
  }
}

// `edgeexit quickstart`: the main job end to end on the embedded defaults. For now: list the
// zoo and the device profiles, inspect each zoo model and evaluate it on the Fashion-MNIST test
// set (or, where Debian's dataset is absent, on the committed calibration images), check the
// accuracy against what the model card records, then compile fmnist-branchy for a Raspberry Pi 4
// at int8, signed, and verify the bundle. Later stages (calibrate → run → telemetry) join here as
// they land.
import { promises as fsp } from 'node:fs';
import type { CommandModule } from 'yargs';
import { FASHION_MNIST_DIR } from '../../data/idx.js';
import path from 'node:path';
import { listZoo, modelsDir } from '../../model/zoo.js';
import { describeModel, requireSelfDescription } from '../../model/describe.js';
import { evaluateModel } from '../../eval/evaluate.js';
import { EdgeExitError } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { count, pct, progress, table } from '../format.js';
import { devicesCommand } from './devices.js';
import { renderInspect } from './inspect.js';
import { resolveEvalData } from './evaluate.js';
import { compileCommand } from './compile.js';
import { verifyBundleCommand } from './verify-bundle.js';
import { generateKeyPair } from '../../compiler/index.js';


export interface QuickstartOptions {
  limit?: number;
  /** Where the compiled bundle and the demo signing key go (default .edgeexit/quickstart). */
  out?: string;
  /** Calibration images used by the int8 compile (default: all 3,000). */
  calibrationLimit?: number;
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
      const recorded = recordedFor(entry.results, file, d.exits.length);
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
  io.out(`\n== compile fmnist-branchy for rpi4 (int8), signed with a demo key, then verify ==`);
  await fsp.mkdir(work, { recursive: true });
  // A throwaway key so the demo shows signing; real fleets make theirs once with `edgeexit keygen`.
  const keys = await generateKeyPair(path.join(work, 'demo-key'), { force: true });
  const bundle = path.join(work, 'fmnist-branchy-rpi4-int8');
  await compileCommand({ model: path.join(modelsDir(), 'fmnist-branchy', 'fmnist-branchy.onnx'), device: 'rpi4', out: bundle, precision: 'int8', key: keys.privateKey, ...(opts.calibrationLimit ? { calibrationLimit: opts.calibrationLimit } : {}) }, io);
  await verifyBundleCommand({ bundle, key: keys.publicKey, requireSignature: true }, io);
  io.out('\nNext: edgeexit inspect <model.onnx>, edgeexit eval <model.onnx> --data calibration, edgeexit compile <model.onnx> --device <id> --out <bundle>, edgeexit devices --show rpi4.');
  return rows;
}

/** The training run's recorded test accuracy for each output of `file`. */
function recordedFor(results: Record<string, unknown> | undefined, file: string, exits: number): (number | undefined)[] {
  const acc = results?.testAccuracy;
  if (Array.isArray(acc)) return acc.slice(0, exits) as number[];
  if (acc && typeof acc === 'object') {
    const o = acc as Record<string, number>;
    if (file.endsWith('pipeline.onnx')) return [o.pair];
    if (file.endsWith('classifier.onnx')) return [o.light];
  }
  return [];
}

export function quickstartModule(io: CliIO): CommandModule<object, QuickstartOptions> {
  return {
    command: 'quickstart',
    describe: 'The main job end to end on the embedded defaults: profiles, zoo inspection and evaluation against the model cards',
    builder: (y) =>
      y
        .option('limit', { type: 'number', describe: 'Evaluate only this many samples per model (faster, no card check)' })
        .option('out', { type: 'string', describe: 'Folder for the compiled bundle and the demo signing key', default: '.edgeexit/quickstart' })
        .option('calibration-limit', { type: 'number', describe: 'Calibration images for the int8 compile (default: all)' }) as never,
    handler: async (args) => {
      await quickstartCommand(args, io);
    },
  };
}

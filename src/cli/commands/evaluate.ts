// `edgeexit eval <model.onnx>`: per-exit top-1 accuracy and the oracle exit distribution on the
// Fashion-MNIST IDX files or any ImageFolder — the check behind every accuracy on a model card.
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { describeModel, requireSelfDescription } from '../../model/describe.js';
import { evaluateModel, type EvalData, type EvaluationResult } from '../../eval/evaluate.js';
import { packageRoot } from '../../devices/load.js';
import { InputError } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { pct, progress, table } from '../format.js';

export interface EvalOptions {
  model: string;
  data?: string;
  limit?: number;
  batch?: number;
  threads?: number;
  json?: boolean;
}

/** `test`/`train` → the IDX split; `calibration` → the committed ImageFolder; else a folder path. */
export async function resolveEvalData(data: string | undefined): Promise<EvalData> {
  const d = data ?? 'test';
  if (d === 'test' || d === 'train') return { kind: 'idx', split: d };
  if (d === 'calibration') return { kind: 'imagefolder', dir: path.join(packageRoot(), 'calibration', 'fashion-mnist') };
  const st = await fsp.stat(d).catch(() => undefined);
  if (!st?.isDirectory()) {
    throw new InputError(
      `--data: expected "test", "train", "calibration" or an ImageFolder directory (one subfolder per class), got ${JSON.stringify(d)}` +
        (st ? ' (a file, not a folder)' : ' (no such folder)'),
    );
  }
  return { kind: 'imagefolder', dir: d };
}

export async function evalCommand(opts: EvalOptions, io: CliIO): Promise<EvaluationResult> {
  const desc = await describeModel(opts.model);
  const { preprocess, labels } = requireSelfDescription(desc);
  const data = await resolveEvalData(opts.data);
  const bar = progress('eval', 1);
  let result: EvaluationResult;
  try {
    result = await evaluateModel({
      model: opts.model,
      data,
      preprocess,
      labels,
      ...(opts.batch ? { batchSize: opts.batch } : {}),
      ...(opts.limit ? { limit: opts.limit } : {}),
      ...(opts.threads ? { session: { intraOpNumThreads: opts.threads } } : {}),
      onProgress: (p) => bar.update(p.done, p.total),
    });
  } finally {
    bar.stop();
  }
  if (opts.json) {
    const { samples: _s, ...rest } = result;
    io.out(JSON.stringify(rest, null, 2));
  } else io.out(renderEval(result));
  return result;
}

export function renderEval(r: EvaluationResult): string {
  const lines = [`${r.model} on ${r.dataset}: ${r.count.toLocaleString('en-US')} samples in ${(r.durationMs / 1000).toFixed(1)} s`];
  lines.push(
    table(
      ['exit', 'output', 'top-1', 'correct', 'oracle: cheapest correct exit'],
      r.exits.map((e, k) => [k, e.name, pct(e.accuracy), `${e.correct}/${e.count}`, pct(r.oracle.shares[k] ?? 0)]),
    ),
  );
  lines.push(`no exit correct: ${pct(r.oracle.none)} (${r.oracle.noneCount} samples)`);
  for (const s of r.skipped) lines.push(`skipped ${s.source}: ${s.error}`);
  return lines.join('\n');
}

export function evalModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('model', { type: 'string', describe: 'Path of an .onnx file carrying edgeexit.preprocess/labels metadata', demandOption: true })
        .option('data', {
          type: 'string',
          describe: '"test" or "train" (Fashion-MNIST from /usr/share/datasets/fashion-mnist, Debian package dataset-fashion-mnist), "calibration" (calibration/fashion-mnist), or an ImageFolder path',
          default: 'test',
        })
        .option('limit', { type: 'number', describe: 'Evaluate only this many samples' })
        .option('batch', { type: 'number', describe: 'Batch size for the model runs', default: 256 })
        .option('threads', { type: 'number', describe: 'onnxruntime intra-op threads' })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 eval models/fmnist-branchy/fmnist-branchy.onnx', 'all 10,000 test images')
        .example('$0 eval models/fmnist-cbnet/pipeline.onnx --data calibration', 'the held-out calibration images'),
    handler: async (args: EvalOptions) => {
      await evalCommand(args, io);
    },
  });
}

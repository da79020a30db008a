// `edgeexit models`: the reference zoo in models/, with exits, MACs and the test accuracy that
// each model's training run measured (models/<name>/results.json, reproducible with `eval`).
import path from 'node:path';
import { listZoo, recordedTestAccuracy, type ZooEntry } from '../../model/zoo.js';
import { describeModel } from '../../model/describe.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { count, pct, table } from '../format.js';

export interface ModelsOptions {
  json?: boolean;
}

export interface ZooRow {
  name: string;
  kind: ZooEntry['kind'];
  file: string;
  exits: string[];
  macsPerExit: number[];
  testAccuracy: number[];
  card?: string;
}

export async function zooRows(): Promise<ZooRow[]> {
  const rows: ZooRow[] = [];
  for (const e of await listZoo()) {
    const main = e.files[0]!;
    const d = await describeModel(main);
    if (e.kind === 'cbnet') {
      // One row for the pair as CBNet runs it: classifier alone, then converter → classifier.
      const light = await describeModel(path.join(e.dir, 'classifier.onnx'));
      rows.push({
        name: e.name,
        kind: e.kind,
        file: path.relative(process.cwd(), main),
        exits: ['classifier alone', 'converter→classifier'],
        macsPerExit: [light.totalMacs, d.totalMacs],
        testAccuracy: recordedTestAccuracy(e.results),
        ...(e.card ? { card: path.relative(process.cwd(), e.card) } : {}),
      });
    } else {
      rows.push({
        name: e.name,
        kind: e.kind,
        file: path.relative(process.cwd(), main),
        exits: d.exits.map((x) => x.output),
        macsPerExit: d.exits.map((x) => x.cumulativeMacs),
        testAccuracy: recordedTestAccuracy(e.results),
        ...(e.card ? { card: path.relative(process.cwd(), e.card) } : {}),
      });
    }
  }
  return rows;
}

export async function modelsCommand(opts: ModelsOptions, io: CliIO): Promise<ZooRow[]> {
  const rows = await zooRows();
  if (opts.json) {
    io.out(JSON.stringify(rows, null, 2));
    return rows;
  }
  io.out(
    table(
      ['model', 'kind', 'exits', 'MACs per exit', 'test top-1 per exit', 'file'],
      rows.map((r) => [r.name, r.kind, r.exits.length, r.macsPerExit.map(count).join(' / '), r.testAccuracy.map((a) => pct(a)).join(' / '), r.file]),
    ),
  );
  io.out('\nModel cards: models/<name>/README.md. Check an accuracy: edgeexit eval <file> --data test.');
  return rows;
}

export function modelsModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) => y.option('json', { type: 'boolean', describe: 'Machine-readable output' }),
    handler: async (args: ModelsOptions) => {
      await modelsCommand(args, io);
    },
  });
}

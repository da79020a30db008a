// `edgeexit inspect <model.onnx>`: what a model is — inputs, exits, opsets, ops, parameters and
// MACs per exit — read with our own ONNX codec, no onnxruntime session needed.
import { describeModel, type ModelDescription } from '../../model/describe.js';
import { checkModelContract } from '../../compiler/contract.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { count, table } from '../format.js';

export interface InspectOptions {
  model: string;
  json?: boolean;
}

export async function inspectCommand(opts: InspectOptions, io: CliIO): Promise<ModelDescription> {
  const d = await describeModel(opts.model);
  if (opts.json) io.out(JSON.stringify(d, null, 2));
  else io.out(renderInspect(d));
  return d;
}

const dims = (x: (number | string)[]): string => `[${x.join(',')}]`;

export function renderInspect(d: ModelDescription): string {
  const lines: string[] = [];
  lines.push(`model       ${d.file} (${d.name})`);
  lines.push(`format      ONNX IR ${d.irVersion}; opsets ${d.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}; producer ${d.producer || '?'}`);
  for (const i of d.inputs) lines.push(`input       ${i.name} ${i.dtype} ${dims(i.dims)}`);
  if (d.preprocess) {
    const p = d.preprocess;
    lines.push(`preprocess  ${p.colorspace} ${p.size[0]}x${p.size[1]}, x*${+p.scale.toFixed(8)}, mean ${p.mean.join('/')}, std ${p.std.join('/')}, resize ${p.resize ?? 'stretch'}`);
  }
  if (d.labels) lines.push(`labels      ${d.labels.length}: ${d.labels.join(', ')}`);
  for (const p of d.metadataProblems) lines.push(`warning     ${p}`);
  lines.push(`parameters  ${d.params.toLocaleString('en-US')}`);
  // An op the cost model does not know is not free: say so rather than count it as 0.
  if (d.totalMacsKnown) lines.push(`MACs        ${d.totalMacs.toLocaleString('en-US')} per sample (whole graph)`);
  else {
    const ops = [...new Set(d.uncosted.map((u) => u.opType))];
    lines.push(`MACs        unknown: at least ${d.totalMacs.toLocaleString('en-US')} per sample (whole graph)`);
    lines.push(`warning     MACs unknown for ${d.uncosted.length} node${d.uncosted.length === 1 ? '' : 's'} (${ops.slice(0, 5).join(', ')}${ops.length > 5 ? ', …' : ''}): no cost rule or unknown shapes; figures marked ≥ are lower bounds`);
  }
  lines.push('');
  for (const w of contractWarnings(d)) lines.push(`warning     ${w}`);
  lines.push(`exits (${d.outputs.length} graph outputs, in run order)`);
  const first = d.exits[0]?.cumulativeMacs || 1;
  lines.push(
    table(
      ['exit', 'output', 'shape', 'stage MACs', 'cumulative MACs', 'vs exit 0', 'stage params', 'nodes'],
      d.exits.map((e, k) => [
        k,
        e.output,
        dims(d.outputs[k]?.dims ?? []),
        atLeast(d.exitMacsKnown[k], count(e.incrementalMacs)),
        atLeast(d.exitMacsKnown[k], count(e.cumulativeMacs)),
        d.exitMacsKnown[k] && d.exitMacsKnown[0] ? `${(e.cumulativeMacs / first).toFixed(1)}x` : '?',
        count(e.incrementalParams),
        e.incrementalNodes,
      ]),
    ),
  );
  lines.push('');
  lines.push(`ops         ${d.histogram.map(([op, n]) => `${op} ${n}`).join(', ')}`);
  return lines.join('\n');
}

// What the model contract says from the graph alone (cost order, batch axis); whether exits
// return logits needs a run, which compile does.
function contractWarnings(d: ModelDescription): string[] {
  const input = d.inputs[0];
  if (!input) return [];
  const batch = input.dims[0];
  return checkModelContract({
    file: d.file,
    inputName: input.name,
    batch: typeof batch === 'number' ? batch : String(batch ?? '?'),
    exits: d.exits.map((e) => ({ name: e.output, cumulativeMacs: e.cumulativeMacs })),
    samples: [],
  }).map((f) => f.message);
}

const atLeast = (known: boolean | undefined, v: string): string => (known === false ? `≥ ${v}` : v);

export function inspectModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('model', { type: 'string', describe: 'Path of an .onnx file', demandOption: true })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .example('$0 inspect models/fmnist-branchy/fmnist-branchy.onnx', ''),
    handler: async (args: InspectOptions) => {
      await inspectCommand(args, io);
    },
  });
}

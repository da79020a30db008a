// Finding 6 of issue 12, `inspect` edges: a model with no graph outputs is bad input (exit 2) with
// a clear message, not a description of nothing; an op the cost model does not know makes the MACs
// of what depends on it unknown (shown as lower bounds, one warning line), not 0.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, writeModel } from '../../src/onnx/index.js';
import { buildModel, node, tempDir, tensorValueInfo } from '../onnx/helpers.js';
import { runCli } from './helpers.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('edgeexit-inspect-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('edgeexit inspect', () => {
  it('fails with a clear error (exit 2) on a model with no outputs', async () => {
    const file = path.join(dir, 'no-outputs.onnx');
    await writeModel(buildModel({ inputs: [tensorValueInfo('x', DataType.FLOAT, [1, 4])], outputs: [], nodes: [node('Relu', ['x'], ['y'])] }), file);
    const r = await runCli('inspect', file);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/no-outputs\.onnx: the graph has no outputs: expected at least one \(each graph output is an exit\)/);
    expect(r.out).toBe('');
  });

  it("shows an unknown op's MACs as unknown, with one warning line, and exits that do not need it as exact", async () => {
    const mystery = node('Mystery', ['x'], ['m']);
    mystery.domain = 'com.acme';
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, [1, 4]), tensorValueInfo('w', DataType.FLOAT, [4, 2])],
      outputs: ['exit0', 'exit1'],
      nodes: [node('MatMul', ['x', 'w'], ['exit0']), mystery, node('MatMul', ['m', 'w'], ['exit1'])],
    });
    const file = path.join(dir, 'mystery.onnx');
    await writeModel(model, file);
    const json = await runCli('inspect', file, '--json');
    expect(json.code).toBe(0);
    const d = JSON.parse(json.out) as { exitMacsKnown: boolean[]; totalMacsKnown: boolean; uncosted: { opType: string }[]; exits: { cumulativeMacs: number }[] };
    expect(d.exitMacsKnown).toEqual([true, false]);
    expect(d.totalMacsKnown).toBe(false);
    expect(d.uncosted.map((u) => u.opType)).toContain('Mystery');
    expect(d.exits[0]!.cumulativeMacs).toBe(8);

    const text = await runCli('inspect', file);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/^MACs +unknown: at least 8 per sample/m);
    expect(text.out.split('\n').filter((l) => l.startsWith('warning') && l.includes('MACs unknown'))).toEqual([
      expect.stringMatching(/^warning +MACs unknown for \d+ nodes? \(Mystery.*\): no cost rule or unknown shapes; figures marked ≥ are lower bounds$/),
    ]);
    expect(text.out).toMatch(/^ *1 +exit1 .*≥ 0 .*≥ 0 +\? /m);
    expect(text.out).toMatch(/^ *0 +exit0 +\[\] +8 +8 +1\.0x/m);
  });
});

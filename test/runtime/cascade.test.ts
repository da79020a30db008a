// The cascade's bookkeeping with stand-in stages (no onnxruntime): carry lists, dropping exited
// rows, tensors carried past a stage that does not read them, and no copy when nothing exits.
import { describe, expect, it } from 'vitest';
import { runCascade, sliceRows, type CascadeStage } from '../../src/runtime/cascade.js';
import { resolveExitPolicy } from '../../src/runtime/exit-policy.js';
import type { PlainTensor } from '../../src/backends/onnxruntime.js';

// Two classes; logits [v, 0] make class 0 more or less likely. Each row of the input is
// [id, confidence at exit 0, confidence at exit 1]. Stage 0 hands on `a` (ids) and `skip`
// (ids × 10), stage 1 reads only `a` and carries `skip` untouched, stage 2 reads both.
function stages(log: { stage: number; feeds: Record<string, number[]> }[], seen: PlainTensor[] = []): CascadeStage[] {
  const col = (t: PlainTensor, j: number, w: number) => Array.from({ length: t.dims[0]! }, (_, r) => Number(t.data[r * w + j]));
  const logits = (vals: number[]) => ({ data: Float32Array.from(vals.flatMap((v) => [v, 0])), dims: [vals.length, 2] });
  return [
    {
      inputs: ['x'], outputs: ['e0', 'a', 'skip', 'unused'], exit: 'e0', carry: ['a', 'skip'],
      async run(f, wanted) {
        const x = f.x!;
        log.push({ stage: 0, feeds: { x: col(x, 0, 3) } });
        expect(wanted).toEqual(['e0', 'a', 'skip']);
        const n = x.dims[0]!;
        const a = new Float32Array(n * 3);
        for (let r = 0; r < n; r++) a.set([x.data[r * 3] as number, x.data[r * 3 + 1] as number, x.data[r * 3 + 2] as number], r * 3);
        return { e0: logits(col(x, 1, 3)), a: { data: a, dims: [n, 3] }, skip: { data: Int32Array.from(col(x, 0, 3).map((v) => v * 10)), dims: [n] } };
      },
    },
    {
      inputs: ['a'], outputs: ['e1'], exit: 'e1', carry: ['a', 'skip'],
      async run(f) {
        seen.push(f.a!);
        log.push({ stage: 1, feeds: { a: col(f.a!, 0, 3) } });
        return { e1: logits(col(f.a!, 2, 3)) };
      },
    },
    {
      inputs: ['a', 'skip'], outputs: ['e2'], exit: 'e2', carry: [],
      async run(f) {
        log.push({ stage: 2, feeds: { a: col(f.a!, 0, 3), skip: col(f.skip!, 0, 1) } });
        return { e2: logits(col(f.a!, 0, 3).map(() => 5)) };
      },
    },
  ];
}

const names = ['e0', 'e1', 'e2'];
// softmax([v, 0])[0] = 1 / (1 + e^-v): v = 4 → 0.982, v = 0 → 0.5.
const rows = [
  [0, 4, 0], // leaves at exit 0
  [1, 0, 4], // exit 1
  [2, 0, 0], // exit 2
  [3, 4, 4], // exit 0
  [4, 0, 0], // exit 2
];
const input = { data: Float32Array.from(rows.flat()), dims: [rows.length, 3] };

describe('runCascade', () => {
  it('drops exited rows after each stage and keeps a tensor carried past a stage that does not read it aligned', async () => {
    const log: { stage: number; feeds: Record<string, number[]> }[] = [];
    const r = await runCascade(stages(log), 'x', input, resolveExitPolicy('max-prob', [0.9, 0.9], [1, 1, 1], names));
    expect(r.samples.map((s) => s.exit)).toEqual([0, 1, 2, 0, 2]);
    expect(log).toEqual([
      { stage: 0, feeds: { x: [0, 1, 2, 3, 4] } },
      { stage: 1, feeds: { a: [1, 2, 4] } },
      { stage: 2, feeds: { a: [2, 4], skip: [20, 40] } },
    ]);
    expect(r.stageRows).toEqual([5, 3, 2]);
    expect(r.samples[0]!.confidence).toBeCloseTo(1 / (1 + Math.exp(-4)), 6);
    expect(r.samples[2]!.stageLatencyMs).toHaveLength(3);
    expect(r.samples[0]!.stageLatencyMs).toHaveLength(1);
    expect(r.totalMs).toBeGreaterThanOrEqual(r.stageMs.reduce((a, b) => a + b, 0));
  });

  it('with thresholds null runs every row to the last exit and hands tensors on without copying', async () => {
    const log: { stage: number; feeds: Record<string, number[]> }[] = [];
    const seen: PlainTensor[] = [];
    const r = await runCascade(stages(log, seen), 'x', input, resolveExitPolicy('max-prob', null, [1, 1, 1], names));
    expect(r.samples.map((s) => s.exit)).toEqual([2, 2, 2, 2, 2]);
    expect(log.map((l) => l.feeds.a ?? l.feeds.x)).toEqual([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]);
    expect(seen[0]!.dims).toEqual([5, 3]);
  });

  it('stops early when every row has left', async () => {
    const log: { stage: number; feeds: Record<string, number[]> }[] = [];
    const r = await runCascade(stages(log), 'x', input, resolveExitPolicy('max-prob', [0, 0], [1, 1, 1], names));
    expect(r.samples.every((s) => s.exit === 0)).toBe(true);
    expect(log).toHaveLength(1);
    expect(r.stageMs.slice(1)).toEqual([0, 0]);
  });

  it('sliceRows copies the kept rows of any typed array, in runs', () => {
    const t = { data: Int32Array.from([0, 1, 10, 11, 20, 21, 30, 31]), dims: [4, 2] };
    const s = sliceRows(t, [0, 2, 3], 4);
    expect([...s.data]).toEqual([0, 1, 20, 21, 30, 31]);
    expect(s.data).toBeInstanceOf(Int32Array);
    expect(s.dims).toEqual([3, 2]);
    expect(() => sliceRows({ data: new Float32Array(4), dims: [2, 2] }, [0], 3, 'h')).toThrow(/carried tensor 'h'.*dim 0/);
  });

  it('sliceRows hands one contiguous run on as a view of the same buffer, not a copy', () => {
    const t = { data: Float32Array.from([0, 1, 10, 11, 20, 21, 30, 31]), dims: [4, 2] };
    const one = sliceRows(t, [2], 4);
    expect([...one.data]).toEqual([20, 21]);
    expect(one.dims).toEqual([1, 2]);
    expect(one.data.buffer).toBe(t.data.buffer);
    expect(one.data.byteOffset).toBe(4 * 4);
    const run = sliceRows(t, [1, 2, 3], 4);
    expect([...run.data]).toEqual([10, 11, 20, 21, 30, 31]);
    expect(run.data.buffer).toBe(t.data.buffer);
    // Two runs: copied, so a new buffer.
    expect(sliceRows(t, [0, 3], 4).data.buffer).not.toBe(t.data.buffer);
  });
});

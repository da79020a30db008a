import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NATIVE_RUN, availableExecutionProviders, createSession, type ModelSession } from '../../src/backends/onnxruntime.js';
import { InputError, UnsupportedError } from '../../src/util/errors.js';
import { TWO_EXIT_MODEL } from '../fixtures/data/samples.js';

let dir: string;
let session: ModelSession;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-ort-'));
  session = await createSession(TWO_EXIT_MODEL, { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
});
afterAll(async () => {
  await session.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

/** Normalised input rows: top half `top`, bottom half `bottom` (±1 = white/black after mean/std). */
function halves(...rows: [number, number][]): Float32Array {
  const out = new Float32Array(rows.length * 784);
  rows.forEach(([top, bottom], i) => {
    out.fill(top, i * 784, i * 784 + 392);
    out.fill(bottom, i * 784 + 392, (i + 1) * 784);
  });
  return out;
}

const cudaInstalled = availableExecutionProviders().some((p) => p.name === 'cuda' && p.installed);

describe('createSession / run', () => {
  it('describes inputs and outputs, dynamic batch dim included', () => {
    expect(session.inputNames).toEqual(['input']);
    expect(session.outputNames).toEqual(['exit0', 'exit1']);
    expect(session.inputs).toEqual([{ name: 'input', type: 'float32', shape: ['batch', 1, 28, 28] }]);
    expect(session.outputs).toEqual([
      { name: 'exit0', type: 'float32', shape: ['batch', 2] },
      { name: 'exit1', type: 'float32', shape: ['batch', 2] },
    ]);
    expect(session.executionProviders).toEqual(['cpu']);
    expect(session.skipped).toEqual([]);
  });

  it('returns plain typed outputs with the logits the hand-wired model predicts', async () => {
    const out = await session.run({ input: { data: halves([1, -1], [-1, 1], [1, 1]), dims: [3, 1, 28, 28] } });
    expect(Object.keys(out)).toEqual(['exit0', 'exit1']);
    const e0 = out.exit0!;
    expect(e0.type).toBe('float32');
    expect(e0.dims).toEqual([3, 2]);
    expect(e0.data).toBeInstanceOf(Float32Array);
    expect(e0.constructor).toBe(Object); // a plain object, not an ort.Tensor
    const round = (a: ArrayLike<number | bigint>) => Array.from(a, (v) => Math.round(Number(v) * 1e4) / 1e4);
    expect(round(e0.data)).toEqual([-1, 1, 1, -1, -1, 1]);
    expect(round(out.exit1!.data)).toEqual([1, -1, -1, 1, -1, 1]);
  });

  it('computes only the outputs asked for', async () => {
    const out = await session.run({ input: { data: halves([1, 1]), dims: [1, 1, 28, 28] } }, ['exit1']);
    expect(Object.keys(out)).toEqual(['exit1']);
  });

  it('loads from bytes too', async () => {
    const s = await createSession(await fsp.readFile(TWO_EXIT_MODEL));
    try {
      expect(s.source).toBe('<bytes>');
      const out = await s.run({ input: { data: halves([-1, -1]), dims: [1, 1, 28, 28] } });
      expect(out.exit0!.data[0]).toBeCloseTo(1, 5);
    } finally {
      await s.close();
    }
  });

  it('wrong dims, missing or unknown inputs/outputs → InputError naming the model', async () => {
    let err = await rejection(session.run({ input: { data: new Float32Array(10), dims: [1, 10] } }));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      `${TWO_EXIT_MODEL}: input 'input': expected dims [batch,1,28,28] (float32), got dims [1,10] with 10 values`,
    );
    err = await rejection(session.run({ pixels: { data: new Float32Array(784), dims: [1, 1, 28, 28] } }));
    expect(err.message).toBe(`${TWO_EXIT_MODEL}: missing input 'input' (model inputs: input; got: pixels)`);
    err = await rejection(session.run({ input: { data: new Float32Array(784), dims: [1, 1, 28, 28] } }, ['exit9']));
    expect(err.message).toBe(`${TWO_EXIT_MODEL}: unknown output "exit9" (model outputs: exit0, exit1)`);
    const x = { data: new Float32Array(784), dims: [1, 1, 28, 28] };
    err = await rejection(session.run({ input: x, extra: x }));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(`${TWO_EXIT_MODEL}: unknown input "extra" (model inputs: input)`);
    // Output lists are checked once per array (the cascades reuse theirs): a good list passes on
    // every call, and a bad one still fails on every call.
    const good = ['exit1'];
    for (let i = 0; i < 2; i++) expect(Object.keys(await session.run({ input: x }, good))).toEqual(['exit1']);
    const bad = ['exit0', 'nope'];
    for (let i = 0; i < 2; i++) expect((await rejection(session.run({ input: x }, bad))).message).toContain('unknown output "nope"');
  });

  it('a file that is not ONNX → InputError', async () => {
    const bad = path.join(dir, 'bad.onnx');
    await fsp.writeFile(bad, 'not a model');
    const err = await rejection(createSession(bad));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toMatch(new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot load ONNX model \\(`));
  });

  it('writes a profile when asked and says where', async () => {
    const s = await createSession(TWO_EXIT_MODEL, { enableProfiling: true, profileFilePrefix: path.join(dir, 'prof', 'run') });
    try {
      await s.run({ input: { data: halves([1, 1]), dims: [1, 1, 28, 28] } });
      const file = await s.endProfiling();
      expect(file).toMatch(/prof\/run.*\.json$/);
      const events = JSON.parse(await fsp.readFile(file!, 'utf8')) as { name: string }[];
      expect(events.some((e) => e.name.includes('head0'))).toBe(true);
    } finally {
      await s.close();
    }
  });
});

describe('native run path', () => {
  it('is available with the onnxruntime-node this repo pins (when it is not, sessions fall back to the public API)', () => {
    expect(NATIVE_RUN).toEqual({ available: true, reason: 'native binding' });
  });

  it('gives the same metadata and bit-identical outputs as the public API', async () => {
    const x = new Float32Array(3 * 784).map((_, i) => Math.sin(i) * 2);
    const feeds = { input: { data: x, dims: [3, 1, 28, 28] } };
    const before = process.env.EDGEEXIT_ORT_RUN;
    process.env.EDGEEXIT_ORT_RUN = 'public';
    const pub = await createSession(TWO_EXIT_MODEL, { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
    if (before === undefined) delete process.env.EDGEEXIT_ORT_RUN;
    else process.env.EDGEEXIT_ORT_RUN = before;
    try {
      expect(pub.inputs).toEqual(session.inputs);
      expect(pub.outputs).toEqual(session.outputs);
      const a = await session.run(feeds);
      const b = await pub.run(feeds);
      expect(Object.keys(a)).toEqual(Object.keys(b));
      for (const k of Object.keys(a)) {
        expect(a[k]!.dims).toEqual(b[k]!.dims);
        expect(Array.from(a[k]!.data as Float32Array)).toEqual(Array.from(b[k]!.data as Float32Array));
      }
    } finally {
      await pub.close();
    }
  });
});

describe('execution-provider fallback', () => {
  it.skipIf(cudaInstalled)("['cuda','cpu'] without CUDA libraries: one warning line, runs on cpu", async () => {
    const lines: string[] = [];
    const s = await createSession(TWO_EXIT_MODEL, { executionProviders: ['cuda', 'cpu'], onWarning: (l) => lines.push(l) });
    try {
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        /^warn: execution provider 'cuda' skipped: not available in this onnxruntime-node build \(.*libonnxruntime_providers_cuda\.so.* not installed; .*ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules\/onnxruntime-node\/script\/install.*\) — using 'cpu'$/,
      );
      expect(s.executionProviders).toEqual(['cpu']);
      expect(s.skipped.map((x) => x.name)).toEqual(['cuda']);
      const out = await s.run({ input: { data: halves([1, -1]), dims: [1, 1, 28, 28] } });
      expect(out.exit0!.data[1]).toBeCloseTo(1, 5);
    } finally {
      await s.close();
    }
  });

  it.skipIf(cudaInstalled)('by default the warning goes to stderr as a single line', async () => {
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: unknown) => {
      written.push(String(chunk));
      return true;
    });
    let s: ModelSession;
    try {
      s = await createSession(TWO_EXIT_MODEL, { executionProviders: ['cuda'] });
    } finally {
      spy.mockRestore();
    }
    await s.close();
    expect(written).toHaveLength(1);
    expect(written[0]).toMatch(/^warn: execution provider 'cuda' skipped: .* — using 'cpu'\n$/);
  });

  it('a provider this build does not have at all is skipped by name', async () => {
    const lines: string[] = [];
    const s = await createSession(TWO_EXIT_MODEL, { executionProviders: ['coreml', 'cpu'], onWarning: (l) => lines.push(l) });
    await s.close();
    expect(lines).toEqual([
      `warn: execution provider 'coreml' skipped: not available in this onnxruntime-node build (it has: ${availableExecutionProviders()
        .map((p) => p.name)
        .join(', ')}) — using 'cpu'`,
    ]);
  });

  it('fallbackToCpu: false fails with UnsupportedError listing the reasons', async () => {
    const err = await rejection(
      createSession(TWO_EXIT_MODEL, { executionProviders: ['coreml'], fallbackToCpu: false, onWarning: () => {} }),
    );
    expect(err).toBeInstanceOf(UnsupportedError);
    expect(err.message).toContain("none of the requested execution providers can run here: 'coreml' (not available");
  });
});

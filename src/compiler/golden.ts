// Golden I/O at compile time: seeded random images (pixels drawn uniformly, then normalised as
// the manifest's preprocess says) run through the compiled stages here, and each stage's exit is
// recorded with a tolerance the device's self-test compares against (bundle/golden.ts).
//
// The tolerance is relative to the size of the stage's output and widens with lower precision:
// another CPU's kernels (x86 without VNNI against an Arm with dotprod, say) round int8 and fp16
// differently, and a self-test that fails a healthy bundle on its target would teach operators to
// skip it. A wrong model is far outside these bounds.
import { createSession, type ModelSession, type PlainTensor } from '../backends/onnxruntime.js';
import { GOLDEN_FILE, encodeGolden, runGoldenChain, type GoldenTensor } from '../bundle/golden.js';
import type { Manifest, ManifestGolden } from '../bundle/manifest.js';
import { mulberry32 } from '../util/random.js';

/** Samples recorded: enough to exercise batching, small enough that golden.bin stays a few KiB. */
export const GOLDEN_SAMPLES = 4;
const GOLDEN_SEED = 0x601d;
/** Absolute tolerance as a fraction of the largest |expected| of the stage's output, per precision. */
const SCALE_TOLERANCE: Record<Manifest['target']['precision'], number> = { fp32: 1e-3, fp16: 2e-2, int8: 1e-1 };
const RTOL: Record<Manifest['target']['precision'], number> = { fp32: 1e-3, fp16: 1e-2, int8: 5e-2 };

/** Seeded images as the runtime would feed them: NCHW, normalised by the manifest's preprocess. */
export function goldenInput(m: Pick<Manifest, 'input'>, samples = GOLDEN_SAMPLES, seed = GOLDEN_SEED): GoldenTensor {
  // A model exported with a fixed batch size takes exactly that many samples.
  const dims = m.input.shape.map((d, i) => (typeof d === 'number' ? d : i === 0 ? samples : 1));
  const [, c = 1, h = 1, w = 1] = dims;
  const pre = m.input.preprocess;
  const rand = mulberry32(seed);
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) {
    const ch = Math.floor(i / (h * w)) % c;
    const pixel = Math.floor(rand() * 256);
    data[i] = (pixel * pre.scale - pre.mean[ch % pre.mean.length]!) / pre.std[ch % pre.std.length]!;
  }
  return { dims, data };
}

/** Run one verified-bytes session per stage; closes them. */
async function withSessions<T>(stageBytes: readonly Uint8Array[], fn: (s: ModelSession[]) => Promise<T>): Promise<T> {
  const sessions: ModelSession[] = [];
  try {
    // One thread: the recorded numbers must not depend on how many cores compiled them.
    for (const b of stageBytes) sessions.push(await createSession(b, { intraOpNumThreads: 1, onWarning: () => {} }));
    return await fn(sessions);
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
}

/**
 * golden.bin and the manifest's `golden` field for a bundle about to be written (its manifest
 * without the golden parts, and the compiled stage bytes in manifest order).
 *
 * @example
 * ```ts
 * const { bytes, golden } = await recordGolden(manifest, stageBytes);
 * ```
 */
export async function recordGolden(m: Manifest, stageBytes: readonly Uint8Array[]): Promise<{ bytes: Uint8Array; golden: ManifestGolden }> {
  const input = goldenInput(m);
  const { outputs } = await withSessions(stageBytes, (sessions) =>
    runGoldenChain(m, input, async (k, feeds) => {
      return sessions[k]!.run(feeds as Record<string, PlainTensor>);
    }),
  );
  const precision = m.target.precision;
  const stages = [...outputs.entries()].map(([stage, o]) => {
    let peak = 0;
    for (const v of o.tensor.data) peak = Math.max(peak, Math.abs(v));
    const atol = Number((SCALE_TOLERANCE[precision] * Math.max(peak, 1e-3)).toPrecision(3));
    return { stage, output: o.name, atol, rtol: RTOL[precision] };
  });
  return { bytes: encodeGolden({ input, outputs }), golden: { file: GOLDEN_FILE, samples: input.dims[0]!, stages } };
}

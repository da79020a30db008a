// One seedable random source for everything that must repeat run to run: calibration splits,
// check inputs, simulated fleets, benchmark resamples and test fixtures.

/** mulberry32: 32-bit state, uniform in [0, 1); small, fast, and plenty for splits and test data. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

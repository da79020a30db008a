// Small typed-array helpers shared by the compiler's passes over batched outputs.

/**
 * Join float32 chunks (one per batch) into one array, in order.
 *
 * @example
 * concatFloat32([new Float32Array([1, 2]), new Float32Array([3])]); // Float32Array [1, 2, 3]
 */
export function concatFloat32(chunks: readonly Float32Array[]): Float32Array {
  const all = new Float32Array(chunks.reduce((a, x) => a + x.length, 0));
  let o = 0;
  for (const x of chunks) {
    all.set(x, o);
    o += x.length;
  }
  return all;
}

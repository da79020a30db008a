import os from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

// Two cores here and in CI: run test files in forked workers (onnxruntime and sharp are native
// and happier in their own processes), with room for the slower end-to-end suites.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests never read or write the user's own bundle trust store (~/.config/edgeexit/trust):
    // a test that wants one passes --trust-dir / trustDir; everything else sees none.
    env: { EDGEEXIT_TRUST_DIR: path.join(os.tmpdir(), 'edgeexit-tests-no-trust-store') },
  },
});

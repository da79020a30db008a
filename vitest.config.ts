import { defineConfig } from 'vitest/config';

// Two cores here and in CI: run test files in forked workers (onnxruntime and sharp are native
// and happier in their own processes), with room for the slower end-to-end suites.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});

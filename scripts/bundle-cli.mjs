// Bundles the command line (dist/cli/main.js, built by tsc) into dist/bin/: one entry file plus a
// chunk per lazily loaded command, our code and the pure-JavaScript dependencies (yargs, zod, mqtt,
// protobuf, …) together. A device starts `edgeexit run` from a few files instead of a few hundred:
// Node's ES module loader resolves, reads and compiles each file separately, which was most of a
// one-image run's start-up (`npm run bench:startup` measures it). Native add-ons stay external and
// load from node_modules as before. The library (`import 'edgeexit'`) keeps tsc's unbundled dist/.
// dist/bin/meta.json (esbuild's metafile) says which source files each chunk holds, so
// bench:startup can still tell whether the device path loaded compiler or fleet code.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import path from 'node:path';

const outdir = 'dist/bin';
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: ['dist/cli/main.js'],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Native add-ons (and what loads them by path) cannot be bundled.
  external: ['onnxruntime-node', 'sharp', 'better-sqlite3'],
  // Bundled CommonJS dependencies call require() for Node's built-ins.
  banner: { js: "import { createRequire as __edgeexitRequire } from 'node:module'; const require = __edgeexitRequire(import.meta.url);" },
  // A staged copy without its own node_modules (the package test) names ours in NODE_PATH.
  nodePaths: process.env.NODE_PATH ? process.env.NODE_PATH.split(path.delimiter) : [],
  metafile: true,
  logLevel: 'warning',
  legalComments: 'none',
}).then(async (r) => {
  const { writeFileSync } = await import('node:fs');
  writeFileSync(`${outdir}/meta.json`, JSON.stringify(r.metafile));
});

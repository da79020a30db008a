#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/bin/ (bundled by `npm run build`, which `npm ci` runs via
// prepare; see scripts/bundle-cli.mjs).
import('../dist/bin/main.js').then((m) => m.main(process.argv.slice(2))).then((code) => {
  process.exitCode = code;
});

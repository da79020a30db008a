// Child process for the kill -9 test: one downloadBundle call with the options given as JSON,
// printing its stats as JSON when it completes.
import { downloadBundle, type DownloadOptions } from '../../src/agent/download.js';
import { loadTrustStore } from '../../src/bundle/index.js';

const [json, trustDir] = process.argv.slice(2);
if (!json || !trustDir) throw new Error('usage: download-child <options json> <trust dir>');
const opts = JSON.parse(json) as DownloadOptions;
const r = await downloadBundle({ ...opts, verify: { trust: await loadTrustStore(trustDir), requireSignature: true } });
process.stdout.write(JSON.stringify(r.stats) + '\n');

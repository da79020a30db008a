// Child process for the kill -9 tests: installs a bundle and kills itself with SIGKILL (no
// cleanup, no finally blocks) right after the named step is on disk.
import { installBundle } from '../../src/agent/install.js';

const [root, bundle, trustDir, killAt] = process.argv.slice(2);
if (!root || !bundle || !trustDir || !killAt) throw new Error('usage: install-child <root> <bundle> <trust-dir> <step>');
const r = await installBundle({
  root,
  bundle,
  trustDir,
  onStep: (step) => {
    process.stdout.write(`step ${step}\n`);
    if (step === killAt) process.kill(process.pid, 'SIGKILL');
  },
});
process.stdout.write(`done ${r.state}\n`);

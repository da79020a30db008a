// Child process for the rollout restart test: `edgeexit rollout …` from source (so a stale dist/
// cannot stand in for the code under test), killed with SIGKILL by the test mid-rollout.
import { main } from '../../src/cli/main.js';

process.exitCode = await main(['rollout', ...process.argv.slice(2)]);

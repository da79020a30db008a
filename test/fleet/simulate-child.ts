// Child process for the soak test: one simulated device through the real CLI (`edgeexit
// simulate`), run from source so a stale dist/ cannot stand in for the code under test.
import { main } from '../../src/cli/main.js';

process.exitCode = await main(['simulate', ...process.argv.slice(2)]);

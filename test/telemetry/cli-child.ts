// Child process for the signal test: the real CLI entry (main with process I/O), so SIGINT and
// SIGTERM reach the command's own handlers as they would on a device.
import { main } from '../../src/cli/main.js';

process.exitCode = await main(process.argv.slice(2));

// Child process for the delivery tests: a collector that the test can SIGKILL mid-batch, as a
// crash would. Args: <brokerUrl> <dbFile> <clientId>. Prints "ready" once subscribed.
import { startCollector } from '../../src/fleet/collector.js';

const [url, dbFile, clientId] = process.argv.slice(2) as [string, string, string];
const collector = await startCollector({
  brokerUrl: url,
  dbFile,
  clientId,
  fleet: 'e2e',
  backoff: { initialMs: 100, maxMs: 500, factor: 2, jitter: 0.5 },
  onLog: (l) => {
    if (!l.startsWith('duplicate:') && !l.startsWith('gap:')) process.stderr.write(l + '\n');
  },
});
process.stdout.write('ready\n');
process.once('SIGINT', () => void collector.close().then(() => process.exit(0)));

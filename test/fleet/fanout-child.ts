// Child process for fanout.test.ts: one collector of a shared-subscription group, which the test
// can SIGKILL mid-batch. Args: <brokerUrl> <db (file or postgres:// URL)> <clientId> <fleet>.
// Prints "ready" once subscribed, then "handled <n>" whenever its count of committed messages
// changed, so the test sees each collector's share without asking the broker.
import { startCollector } from '../../src/fleet/collector.js';

const [url, dbFile, clientId, fleet] = process.argv.slice(2) as [string, string, string, string];
const collector = await startCollector({
  brokerUrl: url,
  dbFile,
  clientId,
  fleet,
  backoff: { initialMs: 100, maxMs: 500, factor: 2, jitter: 0.5 },
  onLog: (l) => {
    if (!l.startsWith('duplicate:') && !l.startsWith('gap:')) process.stderr.write(l + '\n');
  },
});
process.stdout.write(`ready ${collector.protocolVersion}\n`);
let last = 0;
const ticker = setInterval(() => {
  const n = collector.handled();
  if (n !== last) process.stdout.write(`handled ${(last = n)}\n`);
}, 100);
process.once('SIGINT', () => {
  clearInterval(ticker);
  void collector.close().then(() => process.exit(0));
});

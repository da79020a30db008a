// Child process for the SIGKILL test: enqueues and acks as fast as it can, printing each operation
// only after it returned (so it is on disk), until the parent kills it mid-write.
import { Outbox } from '../../../src/telemetry/outbox.js';

const dir = process.argv[2];
if (!dir) throw new Error('usage: outbox-child <dir>');
const box = await Outbox.open<{ n: number; pad: string }>(dir, { maxEntries: 100_000 });
for (let n = 0; ; n++) {
  const id = await box.enqueue({ n, pad: 'x'.repeat(n % 500) });
  process.stdout.write(`e ${id}\n`);
  if (n % 3 === 2) {
    const oldest = box.peek(2).map((e) => e.id);
    await box.ack(oldest);
    process.stdout.write(`a ${oldest.join(' ')}\n`);
  }
}

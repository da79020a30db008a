// Counts, in a qemu `-d in_asm` log, the translated Armv8.2 dot-product instructions (SDOT/UDOT,
// vector and by-element forms, matched on their encodings since qemu prints them as `.byte`) and
// the widening multiply-accumulates a non-dot int8 kernel uses instead (SMULL, SADALP).
//   node count-dot.mjs <log> <run name>   → JSON on stdout
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

const [file, run] = process.argv.slice(2);
const counts = { run, sdot: 0, udot: 0, smull: 0, sadalp: 0, instructions: 0 };
const line = /^0x[0-9a-f]+:\s+([0-9a-f]{8})\s+(\S+)/;
for await (const l of createInterface({ input: createReadStream(file) })) {
  const m = line.exec(l);
  if (!m) continue;
  counts.instructions++;
  const op = Number.parseInt(m[1], 16) >>> 0;
  // SDOT/UDOT (vector): 0 Q U 01110 10 0 Rm 100101 Rn Rd; (by element): 0 Q U 01111 10 L M Rm 1110 H 0 Rn Rd.
  const vector = (op & 0xbfe0fc00) >>> 0;
  const element = (op & 0xbfc0f400) >>> 0;
  if (vector === 0x0e809400 || element === 0x0f80e000) counts.sdot++;
  else if (vector === 0x2e809400 || element === 0x2f80e000) counts.udot++;
  else if (m[2] === 'smull' || m[2] === 'smull2') counts.smull++;
  else if (m[2] === 'sadalp') counts.sadalp++;
}
console.log(JSON.stringify(counts));

// Run the CLI in-process with captured output.
import { main } from '../../src/cli/main.js';

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

export async function runCli(...argv: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (t) => void (out += t.endsWith('\n') ? t : t + '\n'), err: (t) => void (err += t) });
  return { code, out, err };
}

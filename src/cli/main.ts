// The edgeexit command line: a thin yargs layer over typed async command functions. This is the
// one place where errors become exit codes; nothing below it calls process.exit.
import yargs, { type Argv } from 'yargs';
import { edgeexitVersion } from '../bundle/version.js';
import { EdgeExitError } from '../util/errors.js';
import { COMMANDS, type CommandEntry } from './commands/index.js';
import { processIO, type CliIO } from './io.js';

export const EXIT_OK = 0;
export const EXIT_INTERNAL = 70; // EX_SOFTWARE: a bug in edgeexit, not in the user's input

/** Run the CLI with the given arguments; resolves to the process exit code. */
export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const stderr = { write: (t: string) => io.err(t) };
  let failure: unknown;
  const parser: Argv = yargs(argv)
    .scriptName('edgeexit')
    // Ours, not yargs' guess (it looks for package.json from the entry point, which a bundle moves).
    .version(edgeexitVersion())
    .usage('$0 <command> [options]\n\nCompile, calibrate, flash and watch early-exit and CBNet models on edge devices.')
    .strict()
    .demandCommand(1, 'Name a command (see the list above), e.g. `edgeexit models`.')
    .recommendCommands()
    // yargs renders the whole help text before every command's handler (to show it on a failure);
    // laying it out to a width is a large share of a one-image `edgeexit run`, so only --help wraps.
    .wrap(argv.includes('--help') ? Math.min(110, process.stdout.columns ?? 100) : null)
    .epilogue('Quick start: `npm run quickstart`. Docs: README.md. Every command has --help.')
    .fail((msg, err) => {
      failure = err ?? new UsageError(msg);
    })
    .exitProcess(false);
  // Only the command being run is loaded; the others are registered by name and description so
  // that --help and "did you mean" still list them.
  const chosen = chosenCommand(argv);
  for (const c of COMMANDS) {
    if (c === chosen) parser.command({ command: c.command, describe: c.describe, ...(await c.load(io)) });
    else parser.command({ command: c.command, describe: c.describe, handler: () => undefined });
  }
  try {
    await parser.parseAsync();
  } catch (err) {
    failure ??= err;
  }
  if (failure === undefined) return EXIT_OK;
  if (failure instanceof UsageError) {
    stderr.write(`error: ${failure.message}\nRun \`edgeexit --help\` (or \`edgeexit <command> --help\`) for usage.\n`);
    return failure.exitCode;
  }
  if (failure instanceof EdgeExitError) {
    stderr.write(`error: ${failure.message}\n`);
    return failure.exitCode;
  }
  const e = failure as Error;
  stderr.write(`internal error (a bug in edgeexit — please report it with this trace):\n${e?.stack ?? String(e)}\n`);
  return EXIT_INTERNAL;
}

/** The table row named by the first word that is not an option (none for `--help`, `--version`). */
function chosenCommand(argv: readonly string[]): CommandEntry | undefined {
  const word = argv.find((a) => !a.startsWith('-'));
  return COMMANDS.find((c) => c.name === word);
}

/** yargs' own complaints: unknown command, missing argument, bad choice. */
export class UsageError extends EdgeExitError {
  override readonly exitCode = 64; // EX_USAGE
}

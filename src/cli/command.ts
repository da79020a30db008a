// What a command module gives the CLI: its yargs builder and handler. Its name, positionals and
// one-line description live in the command table (commands/index.ts), so listing commands loads
// none of them.
import type { ArgumentsCamelCase, Argv } from 'yargs';

/** A command's builder (declares its options) and handler (parses nothing, calls a typed function). */
export interface CommandBody<O> {
  builder: (y: Argv) => Argv<O>;
  handler: (args: ArgumentsCamelCase<O>) => Promise<void>;
}

/** The table's view of any command body: the option type is the command's own business. */
export interface AnyCommandBody {
  /* eslint-disable @typescript-eslint/no-explicit-any -- Argv is invariant in its options; the table only hands these to yargs */
  builder: (y: Argv) => Argv<any>;
  handler: (args: any) => Promise<void>;
  /* eslint-enable @typescript-eslint/no-explicit-any */
}

// What a command module gives the CLI: its yargs builder and handler. Its name, positionals and
// one-line description live in the command table (commands/index.ts), so listing commands loads
// none of them.
//
// defineCommand ties the two together at compile time: the options the builder declares (as
// yargs infers them) must cover the options the handler takes, key by key and type by type, so
// renaming or retyping a flag without updating the command function fails to build.
import type { ArgumentsCamelCase, Argv } from 'yargs';

/** What yargs hands a handler for builder output B: kebab and camelCase keys, without yargs' catch-all index signature. */
export type ParsedFlags<B> = DropIndex<ArgumentsCamelCase<B>>;

type DropIndex<T> = { [K in keyof T as string extends K ? never : number extends K ? never : K]: T[K] };

/** Keys of the handler's options O that the builder does not declare, or declares with a type O cannot take. */
export type FlagProblems<B, O> = {
  [K in keyof O]-?: K extends keyof ParsedFlags<B> ? (ParsedFlags<B>[K] extends O[K] ? never : K) : K;
}[keyof O];

/** A command's builder (declares its options) and handler (parses nothing, calls a typed function). */
export interface CommandBody<B, O> {
  builder: (y: Argv) => Argv<B>;
  handler: (args: O) => Promise<void>;
}

/** The table's view of any command body: the option type is the command's own business. */
export interface AnyCommandBody {
  /* eslint-disable @typescript-eslint/no-explicit-any -- Argv is invariant in its options; the table only hands these to yargs */
  builder: (y: Argv) => Argv<any>;
  handler: (args: any) => Promise<void>;
  /* eslint-enable @typescript-eslint/no-explicit-any */
}

/** What defineCommand returns when the builder does not cover the handler's options (a compile error where a command body is expected). */
export interface FlagMismatch<K> {
  problem: 'the builder does not declare these handler options, or declares them with another type';
  flags: K;
}

/**
 * A command body whose builder is checked against its handler's options: when a flag the handler
 * takes is missing from the builder or has another type, the result is a FlagMismatch naming the
 * flags, which does not fit where the command table expects a body.
 *
 * @example
 * export const body = (io: CliIO): AnyCommandBody =>
 *   defineCommand({
 *     builder: (y) => y.option('json', { type: 'boolean' }),
 *     handler: async (args: { json?: boolean }) => io.out(String(args.json)),
 *   });
 */
export function defineCommand<B, O>(body: CommandBody<B, O>): [FlagProblems<B, O>] extends [never] ? AnyCommandBody : FlagMismatch<FlagProblems<B, O>> {
  const checked: AnyCommandBody = { builder: body.builder, handler: body.handler };
  // The conditional return type cannot be checked inside a generic body; the call site checks it.
  return checked as [FlagProblems<B, O>] extends [never] ? AnyCommandBody : FlagMismatch<FlagProblems<B, O>>;
}

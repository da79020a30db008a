// defineCommand checks a builder against its handler's options at compile time. The expected-
// error directives below fail `npm run typecheck` (run in CI) the day the check stops catching a
// renamed or retyped flag; the runtime part checks that a good body reaches yargs unchanged.
import { describe, expect, it } from 'vitest';
import yargs from 'yargs';
import { defineCommand, type AnyCommandBody } from '../../src/cli/command.js';

interface Opts {
  bundle: string;
  threads?: number;
  metric?: 'entropy' | 'margin';
}

describe('defineCommand', () => {
  it('accepts a builder that declares every option the handler takes, and yargs calls the handler with them', async () => {
    let got: Opts | undefined;
    const body: AnyCommandBody = defineCommand({
      builder: (y) =>
        y
          .positional('bundle', { type: 'string', demandOption: true })
          .option('threads', { type: 'number' })
          .option('metric', { type: 'string', choices: ['entropy', 'margin'] as const }),
      handler: async (args: Opts) => {
        got = args;
      },
    });
    await yargs(['go', 'b1', '--threads', '3', '--metric', 'margin']).command({ command: 'go <bundle>', describe: 'x', ...body }).strict().parseAsync();
    expect(got).toMatchObject({ bundle: 'b1', threads: 3, metric: 'margin' });
  });

  it('rejects, at compile time, a renamed flag and a flag of another type', () => {
    const renamed = (): AnyCommandBody =>
      // @ts-expect-error -- `thread` is declared but the handler needs `threads`
      defineCommand({
        builder: (y) => y.positional('bundle', { type: 'string', demandOption: true }).option('thread', { type: 'number' }),
        handler: async (_args: Opts) => undefined,
      });
    const retyped = (): AnyCommandBody =>
      // @ts-expect-error -- `metric` is any string here, the handler takes two values only
      defineCommand({
        builder: (y) => y.positional('bundle', { type: 'string', demandOption: true }).option('threads', { type: 'number' }).option('metric', { type: 'string' }),
        handler: async (_args: Opts) => undefined,
      });
    // The mismatch value is still an object at run time; the point is the compile error above.
    expect(typeof renamed).toBe('function');
    expect(typeof retyped).toBe('function');
  });
});

// Long-running commands (collect, agent, simulate) stop on Ctrl-C or a service manager's SIGTERM
// by way of an AbortSignal, so the command itself flushes and closes; the listeners are removed
// again so a test calling the command in-process leaves no handler behind.

/** Run `command` with a signal that aborts on SIGINT or SIGTERM. */
export async function untilStopped<T>(command: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    return await command(ac.signal);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

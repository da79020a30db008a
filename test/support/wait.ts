// Polling helpers for tests that wait on other processes (brokers, collectors, devices).

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Resolves once `pred()` holds, checking every `everyMs`; throws "timed out waiting for <what>"
 * after `ms`.
 *
 * @example
 * await until(() => store.totals().windows >= 10, '10 stored windows');
 */
export async function until(pred: () => boolean, what: string, ms = 20_000, everyMs = 20): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

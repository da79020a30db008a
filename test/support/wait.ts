// Polling helpers for tests that wait on other processes (brokers, collectors, devices).

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Resolves once `pred()` holds (or resolves to true), checking every `everyMs`; throws "timed out waiting for <what>"
 * after `ms`.
 *
 * @example
 * await until(async () => (await store.totals()).length >= 10, '10 devices with windows');
 */
export async function until(pred: () => boolean | Promise<boolean>, what: string, ms = 20_000, everyMs = 20): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

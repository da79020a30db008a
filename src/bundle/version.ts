// The running edgeexit's version, as package.json states it: recorded in every bundle's provenance
// and in every device birth.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../util/package.js';

let versionCache: string | undefined;

/**
 * The installed edgeexit's version ("0.0.0" when package.json cannot be read).
 *
 * @example
 * ```ts
 * import { edgeexitVersion } from 'edgeexit/bundle';
 * console.log(`edgeexit ${edgeexitVersion()}`);
 * ```
 */
export function edgeexitVersion(): string {
  if (!versionCache) {
    try {
      versionCache = (JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: string }).version ?? '0.0.0';
    } catch {
      versionCache = '0.0.0';
    }
  }
  return versionCache;
}

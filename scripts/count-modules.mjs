// Preload for `npm run bench:startup`: records every module a process loads (ESM through a loader
// hook, CommonJS through Module._load) and its peak RSS, into the file named by EDGEEXIT_MODLOG.
// Each line is one loaded file URL; the last line written at exit is `rss <bytes>`.
import { appendFileSync } from 'node:fs';
import Module, { register } from 'node:module';
import { pathToFileURL } from 'node:url';

const log = process.env.EDGEEXIT_MODLOG;
if (log) {
  const hooks = `
    import { appendFileSync } from 'node:fs';
    const log = ${JSON.stringify(log)};
    export async function load(url, context, next) {
      if (url.startsWith('file:')) appendFileSync(log, url + '\\n');
      return next(url, context);
    }`;
  register(`data:text/javascript,${encodeURIComponent(hooks)}`);
  const original = Module._load;
  Module._load = function (request, parent, isMain) {
    try {
      const file = Module._resolveFilename(request, parent, isMain);
      if (file.startsWith('/')) appendFileSync(log, pathToFileURL(file).href + '\n');
    } catch {
      // resolution errors surface from the real load below
    }
    return original.apply(this, arguments);
  };
  process.on('exit', () => appendFileSync(log, `rss ${process.resourceUsage().maxRSS * 1024}\n`));
}

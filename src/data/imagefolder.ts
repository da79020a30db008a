// ImageFolder reader: root/<class>/<image> (torchvision's layout), the simplest way for users to
// bring their own labelled images. Only lists files; decoding belongs to the sharp adapter
// (src/runtime/image.ts) so a corrupt image costs one sample, not the scan.
import { promises as fsp, type Dirent } from 'node:fs';
import path from 'node:path';
import { InputError, formatProblem, show, type Problem } from '../util/errors.js';
import { LABEL_MATCH_RULE, folderNameForLabel, labelMatcher, renameHints } from './labels.js';

export { folderNameForLabel } from './labels.js';

/** File extensions read as images (compared case-insensitively). */
export const IMAGE_EXTENSIONS: readonly string[] = Object.freeze(['.png', '.jpg', '.jpeg', '.webp']);

export interface ImageFolderItem {
  /** Absolute path of the image. */
  file: string;
  /** Index into `ImageFolder.classes`. */
  label: number;
}

export interface ImageFolder {
  root: string;
  /** Class names in label order. */
  classes: string[];
  /** Every image, ordered by class then by path (code-unit order, so the same on every machine). */
  items: ImageFolderItem[];
  /** Images per class, indexed like `classes`. */
  counts: number[];
}

export interface ImageFolderOptions {
  /**
   * Class names in label order (usually the model's `edgeexit.labels`). Every subfolder must
   * name one of them; labels without a folder simply have no samples. Without it, the classes
   * are the subfolders in alphabetical order.
   */
  labels?: readonly string[];
}

function fail(p: Problem): InputError {
  return new InputError(formatProblem(p), [p]);
}

/**
 * True when the folders and the labels pair up one to one under the label rule: each folder
 * matches a label, and each label has exactly one folder.
 *
 * @example foldersCoverLabels(['tshirt_top', 'Trouser'], ['T-shirt/top', 'trouser']) // true
 */
export function foldersCoverLabels(folders: readonly string[], labels: readonly string[]): boolean {
  const m = labelMatcher(labels);
  const hits = folders.map((f) => m.indexOf(f));
  return folders.length === labels.length && hits.every((i) => i !== undefined) && new Set(hits).size === labels.length;
}

// Plain code-unit comparison: localeCompare depends on the machine's ICU/locale and would make
// label indices differ between a laptop and a device.
function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isImage(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

async function isDir(dir: string, e: Dirent): Promise<boolean> {
  if (e.isDirectory()) return true;
  if (!e.isSymbolicLink()) return false;
  try {
    return (await fsp.stat(path.join(dir, e.name))).isDirectory();
  } catch {
    return false;
  }
}

async function isFile(dir: string, e: Dirent): Promise<boolean> {
  if (e.isFile()) return true;
  if (!e.isSymbolicLink()) return false;
  try {
    return (await fsp.stat(path.join(dir, e.name))).isFile();
  } catch {
    return false;
  }
}

/** Image files under `dir`, recursively (hidden entries skipped), sorted by relative path. */
async function listImages(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = await fsp.readdir(d, { withFileTypes: true });
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      if (await isDir(d, e)) await walk(path.join(d, e.name));
      else if (isImage(e.name) && (await isFile(d, e))) out.push(path.join(d, e.name));
    }
  };
  await walk(dir);
  return out.sort(byCodeUnit);
}

/** Scan an ImageFolder tree: classes, and every image with its label. */
export async function scanImageFolder(root: string, options: ImageFolderOptions = {}): Promise<ImageFolder> {
  const abs = path.resolve(root);
  let entries: Dirent[];
  try {
    entries = await fsp.readdir(abs, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw fail({
      where: root,
      message:
        code === 'ENOENT' ? 'folder not found' : code === 'ENOTDIR' ? 'not a folder' : `cannot read folder (${code})`,
      expected: 'an ImageFolder: one subfolder per class, each holding .png/.jpg/.jpeg/.webp images',
    });
  }
  const folders: string[] = [];
  let looseImages = 0;
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    if (await isDir(abs, e)) folders.push(e.name);
    else if (isImage(e.name)) looseImages++;
  }
  folders.sort(byCodeUnit);
  if (folders.length === 0) {
    throw fail({
      where: root,
      message: 'no class subfolders',
      expected: `one subfolder per class (${root}/<class>/<image>.png)`,
      got: looseImages > 0 ? `${looseImages} image file(s) directly in ${root}` : 'no subfolders',
      fix: 'move each image into a subfolder named after its class',
    });
  }

  let classes: string[];
  const folderOfClass = new Map<string, number>();
  if (options.labels) {
    classes = [...options.labels];
    const matcher = labelMatcher(classes);
    const unknown: string[] = [];
    for (const f of folders) {
      const i = matcher.indexOf(f);
      if (i === undefined) unknown.push(f);
      else folderOfClass.set(f, i);
    }
    if (unknown.length > 0) {
      const expected = classes.map(folderNameForLabel);
      throw fail({
        where: root,
        message: `subfolder${unknown.length === 1 ? '' : 's'} ${unknown.map((f) => show(f)).join(', ')} ${
          unknown.length === 1 ? 'matches' : 'match'
        } no label of the model (${LABEL_MATCH_RULE})`,
        expected: `subfolders named after the labels: ${expected.map((x) => show(x, 40)).join(', ')}`,
        got: folders.map((f) => show(f, 40)).join(', '),
        fix: renameHints(unknown, classes, folders).join('; '),
      });
    }
  } else {
    classes = folders;
    classes.forEach((c, i) => folderOfClass.set(c, i));
  }

  const items: ImageFolderItem[] = [];
  const counts = new Array<number>(classes.length).fill(0);
  // Walk in label order (not folder order) so items come grouped by label index.
  const byLabel = folders
    .map((f) => ({ folder: f, label: folderOfClass.get(f)! }))
    .sort((a, b) => a.label - b.label || byCodeUnit(a.folder, b.folder));
  for (const { folder, label } of byLabel) {
    const dir = path.join(abs, folder);
    const files = await listImages(dir);
    if (files.length === 0) {
      throw fail({
        where: dir,
        message: 'class folder holds no images',
        expected: `at least one ${IMAGE_EXTENSIONS.join('/')} file`,
        got: 'none',
        fix: 'add images for this class or remove the folder',
      });
    }
    for (const file of files) items.push({ file, label });
    counts[label] = (counts[label] ?? 0) + files.length;
  }
  return { root: abs, classes, items, counts };
}

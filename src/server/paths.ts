/**
 * Path checks for requests: every path a request names must lie under a configured root folder,
 * judged on the real path so that a symbolic link cannot lead outside.
 */
import { lstat, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';

import type { ResolvedServerOptions, RootKind } from './options.js';

/** Reason a path was rejected. */
export type PathRejection =
  | { kind: 'forbidden'; reason: string }
  | { kind: 'invalid'; reason: string };

/** The outcome of {@link PathGuard.check}. */
export type PathCheckResult = { ok: true; path: string } | ({ ok: false } & PathRejection);

/** Checks request paths against the root folders of the server. */
export class PathGuard {
  constructor(
    private readonly roots: ResolvedServerOptions['roots'],
    private readonly baseDir: string,
  ) {}

  /**
   * Resolves `path` (relative paths against the server's base folder) and checks it:
   * - a `..` segment or a NUL character is forbidden, whatever it resolves to;
   * - the real path (symbolic links followed) of the path, or of its nearest existing parent
   *   when it does not exist yet, must equal or lie under the real path of a root of `kind`.
   * Returns the absolute real path, with the parts that do not exist yet appended.
   */
  async check(kind: RootKind, path: string): Promise<PathCheckResult> {
    if (path.includes('\0')) {
      return { ok: false, kind: 'invalid', reason: 'contains a NUL character' };
    }
    if (path.split(/[\\/]/).includes('..')) {
      return { ok: false, kind: 'forbidden', reason: 'contains a ".." segment' };
    }

    const absolute = isAbsolute(path) ? resolve(path) : resolve(this.baseDir, path);
    let real: string;
    try {
      real = await realpathOfNearestExisting(absolute);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      return { ok: false, kind: 'invalid', reason: `cannot be resolved (${code})` };
    }
    const roots = this.roots[kind];
    if (!roots.some((root) => isInside(real, root))) {
      const allowed = roots.length === 0 ? 'no folder is configured' : roots.join(', ');
      return { ok: false, kind: 'forbidden', reason: `resolves to ${real}, outside the allowed ${kind} folders (${allowed})` };
    }
    return { ok: true, path: real };
  }
}

/** Tells whether `path` is `root` or lies under it; both are absolute real paths. */
export function isInside(path: string, root: string): boolean {
  const fromRoot = relative(root, path);
  return fromRoot === '' || (!fromRoot.startsWith(`..${sep}`) && fromRoot !== '..' && !isAbsolute(fromRoot));
}

/** Tells whether a path exists, following symbolic links. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return false;
    }
    throw error;
  }
}

/**
 * Returns the real path of `absolute`: symbolic links are followed on the longest prefix that
 * exists, and the rest is appended unchanged. A dangling symbolic link is followed to its target
 * as well, so a write through it can never land outside the roots unchecked.
 */
async function realpathOfNearestExisting(absolute: string, linksFollowed = 0): Promise<string> {
  const missing: string[] = [];
  let current = absolute;
  for (;;) {
    try {
      const real = await realpath(current);
      return join(real, ...[...missing].reverse());
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw error;
      }
    }

    const target = await danglingLinkTarget(current);
    if (target !== undefined) {
      if (linksFollowed >= MAX_DANGLING_LINKS) {
        throw Object.assign(new Error(`Too many dangling symbolic links at ${current}`), { code: 'ELOOP' });
      }
      const followed = resolve(dirname(current), target, ...[...missing].reverse());
      return realpathOfNearestExisting(followed, linksFollowed + 1);
    }

    const parent = dirname(current);
    if (parent === current) {
      return absolute;
    }
    missing.push(basename(current));
    current = parent;
  }
}

const MAX_DANGLING_LINKS = 16;

async function danglingLinkTarget(path: string): Promise<string | undefined> {
  try {
    const info = await lstat(path);
    return info.isSymbolicLink() ? await readlink(path) : undefined;
  } catch {
    return undefined;
  }
}

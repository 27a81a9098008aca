/**
 * Atomic file and folder writes: a reader, or a program that restarts after a crash, sees either
 * the old content or the complete new content, never a partly written file.
 *
 * Files are written to a temporary sibling in the same folder (so the rename cannot cross file
 * systems), flushed with fsync, renamed over the target, and then the folder itself is flushed so
 * the rename survives a power loss. On Windows, folders cannot be opened for fsync; that last step
 * is skipped there.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { FileFormatError, NestedLearningError } from '../errors.js';

/** Content for {@link writeFileAtomic}: text (written as UTF-8), bytes, or chunks of bytes. */
export type AtomicFileData = string | Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** Options of {@link writeJsonAtomic}. */
export interface WriteJsonOptions {
  /**
   * Spaces of indentation, or 0 for one line.
   * @default 2
   */
  indent?: number;
}

/**
 * Writes `data` to `filePath` atomically: to a temporary file in the same folder, fsync, rename
 * over `filePath`, fsync the folder. The folder must exist. If the write fails, the temporary file
 * is removed and an existing `filePath` is left unchanged.
 */
export async function writeFileAtomic(filePath: string, data: AtomicFileData): Promise<void> {
  const target = path.resolve(filePath);
  const temporary = siblingPath(target, 'tmp');

  try {
    const handle = await fs.open(temporary, 'wx');
    try {
      await writeData(handle, data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temporary, target);
  } catch (error) {
    await removeTemporaryFile(temporary);
    throw writeError(target, error);
  }
  await syncDirectory(path.dirname(target));
}

/** Writes `value` as JSON (with a final newline) to `filePath` atomically. */
export async function writeJsonAtomic(filePath: string, value: unknown, options: WriteJsonOptions = {}): Promise<void> {
  let text: string | undefined;
  try {
    text = JSON.stringify(value, null, options.indent ?? 2);
  } catch (error) {
    // JSON.stringify raises a TypeError for a circular structure or a BigInt.
    throw new FileFormatError('FILE_WRITE_FAILED', `Cannot write ${filePath}: the value has no JSON form (${(error as Error).message.split('\n')[0]}).`, {
      cause: error,
      details: { path: filePath },
    });
  }
  if (text === undefined) {
    throw new FileFormatError('FILE_WRITE_FAILED', `Cannot write ${filePath}: the value has no JSON form (it is ${typeof value}).`, {
      details: { path: filePath },
    });
  }
  await writeFileAtomic(filePath, `${text}\n`);
}

/**
 * Creates or replaces the folder `dir` atomically. `fill` writes the new content into an empty
 * temporary sibling folder. When it resolves, every file in it is flushed and the folder is
 * renamed into place. If `fill` throws, the temporary folder is removed and `dir` is untouched.
 *
 * Replacing an existing `dir` takes two renames, because no portable call swaps two folders:
 * 1. `dir` is renamed to `<dir>.old-<random>`;
 * 2. the new folder is renamed to `dir`;
 * 3. the old folder is deleted.
 * A crash between 1 and 2 leaves no `dir`, but the complete old copy under `.old-` and the
 * complete new copy under `.tmp-`; {@link recoverDirectoryAtomic} restores the old copy. A crash
 * during 3 leaves a stale `.old-` folder next to the new `dir`, which recovery deletes.
 * A crash before 1 leaves only a `.tmp-` folder, which recovery deletes.
 */
export async function writeDirectoryAtomic(dir: string, fill: (temporaryDir: string) => Promise<void>): Promise<void> {
  const target = path.resolve(dir);
  const parent = path.dirname(target);
  const temporary = siblingPath(target, 'tmp');

  try {
    await fs.mkdir(parent, { recursive: true });
    await fs.mkdir(temporary);
  } catch (error) {
    throw writeError(target, error);
  }
  try {
    await fill(temporary);
    await syncTree(temporary);
  } catch (error) {
    await fs.rm(temporary, { recursive: true, force: true });
    throw error;
  }

  const existing = await pathExists(target);
  if (!existing) {
    await renameOrThrow(temporary, target);
    await syncDirectory(parent);
    return;
  }

  const old = siblingPath(target, 'old');
  await renameOrThrow(target, old);
  try {
    await fs.rename(temporary, target);
  } catch (error) {
    // Put the old folder back so that `dir` never stays missing after a failure we can see.
    await fs.rename(old, target);
    await fs.rm(temporary, { recursive: true, force: true });
    throw writeError(target, error);
  }
  await syncDirectory(parent);
  await fs.rm(old, { recursive: true, force: true });
}

/** Outcome of {@link recoverDirectoryAtomic}. */
export interface DirectoryRecovery {
  /** Whether `dir` was missing and its old copy was renamed back. */
  restored: boolean;
  /** Leftover temporary and old folders that were deleted. */
  removed: string[];
}

/**
 * Repairs what a crash inside {@link writeDirectoryAtomic} left next to `dir`: if `dir` is missing
 * and an old copy exists, the old copy is renamed back; leftover temporary and old folders are
 * deleted. Call it before reading `dir` after an unclean exit, and never while another process
 * writes `dir`.
 */
export async function recoverDirectoryAtomic(dir: string): Promise<DirectoryRecovery> {
  const target = path.resolve(dir);
  const parent = path.dirname(target);
  const base = path.basename(target);

  let names: string[];
  try {
    names = await fs.readdir(parent);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { restored: false, removed: [] };
    throw error;
  }

  const olds = names.filter((name) => name.startsWith(`.${base}.old-`));
  const temporaries = names.filter((name) => name.startsWith(`.${base}.tmp-`));
  let restored = false;

  if (!(await pathExists(target)) && olds.length > 0) {
    const newest = await newestPath(olds.map((name) => path.join(parent, name)));
    await fs.rename(newest, target);
    await syncDirectory(parent);
    restored = true;
  }

  const removed: string[] = [];
  for (const name of [...olds, ...temporaries]) {
    const leftover = path.join(parent, name);
    if (await pathExists(leftover)) {
      await fs.rm(leftover, { recursive: true, force: true });
      removed.push(leftover);
    }
  }
  return { restored, removed };
}

/** Returns a hidden sibling path of `target` with a random suffix: `.<name>.<kind>-<pid>-<hex>`. */
function siblingPath(target: string, kind: 'tmp' | 'old'): string {
  const suffix = `${process.pid}-${randomBytes(6).toString('hex')}`;
  return path.join(path.dirname(target), `.${path.basename(target)}.${kind}-${suffix}`);
}

async function writeData(handle: fs.FileHandle, data: AtomicFileData): Promise<void> {
  if (typeof data === 'string' || data instanceof Uint8Array) {
    await handle.writeFile(data);
    return;
  }
  for await (const chunk of data) {
    let written = 0;
    while (written < chunk.length) {
      const { bytesWritten } = await handle.write(chunk, written, chunk.length - written);
      written += bytesWritten;
    }
  }
}

/** Flushes every file and folder under `root`, deepest first, then `root` itself. */
async function syncTree(root: string): Promise<void> {
  const entries = await fs.readdir(root, { withFileTypes: true });
  for (const entry of entries) {
    const child = path.join(root, entry.name);
    if (entry.isDirectory()) {
      await syncTree(child);
    } else if (entry.isFile()) {
      const handle = await fs.open(child, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
  }
  await syncDirectory(root);
}

/** Flushes a folder's entries (new names, renames) to disk; a no-op where folders cannot be opened. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(dir, 'r');
  } catch (error) {
    if (isUnsupportedDirectorySync(error)) return;
    throw error;
  }
  try {
    await handle.sync();
  } catch (error) {
    if (!isUnsupportedDirectorySync(error)) throw error;
  } finally {
    await handle.close();
  }
}

function isUnsupportedDirectorySync(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EISDIR' || code === 'EPERM' || code === 'EACCES' || code === 'EINVAL';
}

async function renameOrThrow(from: string, to: string): Promise<void> {
  try {
    await fs.rename(from, to);
  } catch (error) {
    throw writeError(to, error);
  }
}

async function pathExists(candidate: string): Promise<boolean> {
  try {
    await fs.lstat(candidate);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

async function newestPath(paths: string[]): Promise<string> {
  let newest = paths[0] as string;
  let newestTime = -Infinity;
  for (const candidate of paths) {
    // A rename updates the inode change time, so ctime orders the folders by when they were moved aside.
    const { ctimeMs } = await fs.stat(candidate);
    if (ctimeMs > newestTime) {
      newest = candidate;
      newestTime = ctimeMs;
    }
  }
  return newest;
}

/**
 * Removes the temporary file of a failed write. When a parent of the target is a file, the
 * temporary path cannot exist either, and `rm` reports ENOTDIR even with `force`, which would
 * hide the error of the write itself.
 */
async function removeTemporaryFile(temporary: string): Promise<void> {
  try {
    await fs.rm(temporary, { force: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOTDIR') throw error;
  }
}

/** Wraps a file-system error in a {@link FileFormatError}; the library's own errors pass through. */
function writeError(target: string, error: unknown): unknown {
  if (NestedLearningError.isInstance(error)) return error;
  const code = (error as NodeJS.ErrnoException).code;
  return new FileFormatError(
    'FILE_WRITE_FAILED',
    `Failed to write ${target}: ${(error as Error).message}. Check that the folder exists, is writable ` +
      'and has free space.',
    { cause: error, details: { path: target, errno: code } },
  );
}

import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  FileFormatError,
  recoverDirectoryAtomic,
  writeDirectoryAtomic,
  writeFileAtomic,
  writeJsonAtomic,
} from '../src/index.js';

let tmpDir: string;

beforeEach(async () => {
  tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'atomic-test-'));
});

afterEach(async () => {
  await fs.rm(tmpDir, { recursive: true, force: true });
});

async function listDir(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).sort();
}

describe('writeFileAtomic', () => {
  it('writes text, bytes and chunks', async () => {
    const textPath = path.join(tmpDir, 'a.txt');
    const bytesPath = path.join(tmpDir, 'b.bin');
    const chunksPath = path.join(tmpDir, 'c.bin');
    async function* chunks(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array([1, 2]);
      yield new Uint8Array([]);
      yield new Uint8Array([3]);
    }

    await writeFileAtomic(textPath, 'héllo');
    await writeFileAtomic(bytesPath, new Uint8Array([9, 8, 7]));
    await writeFileAtomic(chunksPath, chunks());

    expect(await fs.readFile(textPath, 'utf8')).toBe('héllo');
    expect(Array.from(await fs.readFile(bytesPath))).toEqual([9, 8, 7]);
    expect(Array.from(await fs.readFile(chunksPath))).toEqual([1, 2, 3]);
    expect(await listDir(tmpDir)).toEqual(['a.txt', 'b.bin', 'c.bin']);
  });

  it('replaces an existing file', async () => {
    const filePath = path.join(tmpDir, 'state.json');
    await writeFileAtomic(filePath, 'old');
    await writeFileAtomic(filePath, 'new');
    expect(await fs.readFile(filePath, 'utf8')).toBe('new');
  });

  it('keeps the old file when the data fails', async () => {
    const filePath = path.join(tmpDir, 'state.bin');
    await writeFileAtomic(filePath, 'old');
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array([1, 2, 3]);
      throw new Error('producer failed');
    }

    await expect(writeFileAtomic(filePath, failing())).rejects.toThrow(FileFormatError);
    expect(await fs.readFile(filePath, 'utf8')).toBe('old');
    expect(await listDir(tmpDir)).toEqual(['state.bin']);
  });

  it('reports a missing folder', async () => {
    const error = await writeFileAtomic(path.join(tmpDir, 'absent', 'x.txt'), 'x').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FileFormatError);
    expect((error as FileFormatError).code).toBe('FILE_WRITE_FAILED');
    expect((error as Error).message).toContain('absent');
  });
});

describe('writeJsonAtomic', () => {
  it('writes indented JSON with a newline', async () => {
    const filePath = path.join(tmpDir, 'config.json');
    await writeJsonAtomic(filePath, { rank: 8, keys: ['q'] });
    expect(await fs.readFile(filePath, 'utf8')).toBe('{\n  "rank": 8,\n  "keys": [\n    "q"\n  ]\n}\n');
  });

  it('rejects a value with no JSON form', async () => {
    const error = await writeJsonAtomic(path.join(tmpDir, 'x.json'), undefined).catch((e: unknown) => e);
    expect((error as FileFormatError).code).toBe('FILE_WRITE_FAILED');
  });
});

describe('writeDirectoryAtomic', () => {
  it('creates a folder with its files', async () => {
    const dir = path.join(tmpDir, 'checkpoints', 'step-1');
    await writeDirectoryAtomic(dir, async (temporaryDir) => {
      await fs.writeFile(path.join(temporaryDir, 'a.txt'), 'a');
      await fs.mkdir(path.join(temporaryDir, 'nested'));
      await fs.writeFile(path.join(temporaryDir, 'nested', 'b.txt'), 'b');
    });

    expect(await listDir(dir)).toEqual(['a.txt', 'nested']);
    expect(await fs.readFile(path.join(dir, 'nested', 'b.txt'), 'utf8')).toBe('b');
    expect(await listDir(path.dirname(dir))).toEqual(['step-1']);
  });

  it('replaces an existing folder', async () => {
    const dir = path.join(tmpDir, 'best');
    await writeDirectoryAtomic(dir, async (temporaryDir) => fs.writeFile(path.join(temporaryDir, 'old.txt'), 'old'));
    await writeDirectoryAtomic(dir, async (temporaryDir) => fs.writeFile(path.join(temporaryDir, 'new.txt'), 'new'));

    expect(await listDir(dir)).toEqual(['new.txt']);
    expect(await listDir(tmpDir)).toEqual(['best']);
  });

  it('keeps the old folder when filling fails', async () => {
    const dir = path.join(tmpDir, 'best');
    await writeDirectoryAtomic(dir, async (temporaryDir) => fs.writeFile(path.join(temporaryDir, 'old.txt'), 'old'));

    const failure = writeDirectoryAtomic(dir, async (temporaryDir) => {
      await fs.writeFile(path.join(temporaryDir, 'half.txt'), 'half');
      throw new Error('disk full');
    });

    await expect(failure).rejects.toThrow('disk full');
    expect(await listDir(dir)).toEqual(['old.txt']);
    expect(await listDir(tmpDir)).toEqual(['best']);
  });

  it('hides the folder until it is complete', async () => {
    const dir = path.join(tmpDir, 'final');
    let visibleDuringFill = true;
    await writeDirectoryAtomic(dir, async (temporaryDir) => {
      await fs.writeFile(path.join(temporaryDir, 'a.txt'), 'a');
      visibleDuringFill = await fs.stat(dir).then(
        () => true,
        () => false,
      );
    });
    expect(visibleDuringFill).toBe(false);
    expect(await listDir(dir)).toEqual(['a.txt']);
  });
});

describe('recoverDirectoryAtomic', () => {
  it('restores the old copy after a crash', async () => {
    // The state after a crash between the two renames: `best` is gone, the old copy is under
    // `.best.old-*`, and a possibly incomplete new copy is under `.best.tmp-*`.
    await fs.mkdir(path.join(tmpDir, '.best.old-1-aa'));
    await fs.writeFile(path.join(tmpDir, '.best.old-1-aa', 'weights.bin'), 'old');
    await fs.mkdir(path.join(tmpDir, '.best.tmp-1-bb'));

    const recovery = await recoverDirectoryAtomic(path.join(tmpDir, 'best'));

    expect(recovery.restored).toBe(true);
    expect(recovery.removed).toEqual([path.join(tmpDir, '.best.tmp-1-bb')]);
    expect(await fs.readFile(path.join(tmpDir, 'best', 'weights.bin'), 'utf8')).toBe('old');
    expect(await listDir(tmpDir)).toEqual(['best']);
  });

  it('removes leftovers next to a folder', async () => {
    await fs.mkdir(path.join(tmpDir, 'best'));
    await fs.mkdir(path.join(tmpDir, '.best.old-1-aa'));
    await fs.mkdir(path.join(tmpDir, '.best.tmp-2-bb'));
    await fs.mkdir(path.join(tmpDir, '.other.tmp-3-cc'));

    const recovery = await recoverDirectoryAtomic(path.join(tmpDir, 'best'));

    expect(recovery.restored).toBe(false);
    expect(recovery.removed).toHaveLength(2);
    expect(await listDir(tmpDir)).toEqual(['.other.tmp-3-cc', 'best']);
  });

  it('does nothing for a clean folder', async () => {
    await fs.mkdir(path.join(tmpDir, 'best'));
    expect(await recoverDirectoryAtomic(path.join(tmpDir, 'best'))).toEqual({ restored: false, removed: [] });
    expect(await recoverDirectoryAtomic(path.join(tmpDir, 'missing-parent', 'x'))).toEqual({ restored: false, removed: [] });
  });
});

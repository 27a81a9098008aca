import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { FileFormatError, readJsonl, readJsonlLines } from '../src/index.js';

const fixtures = join(import.meta.dirname, 'fixtures', 'data');
const scratch = mkdtempSync(join(tmpdir(), 'nl-jsonl-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function writeScratch(name: string, content: string | Buffer): string {
  const path = join(scratch, name);
  writeFileSync(path, content);
  return path;
}

async function readError(path: string): Promise<FileFormatError> {
  const error = await readJsonl(path).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(FileFormatError);
  return error as FileFormatError;
}

describe('readJsonlLines', () => {
  it('reads the BOM, CRLF, U+2028 and blank-line file as three records', async () => {
    // Bytes: EF BB BF {"text":"a"} \r\n \r\n {"text":"b<U+2028>c"} \n "   " \n {"text":"d"}
    const { lines, stats } = await readJsonl(join(fixtures, 'bom-crlf-u2028.jsonl'));
    expect(lines).toEqual([
      { lineNumber: 1, value: { text: 'a' } },
      { lineNumber: 3, value: { text: 'b\u2028c' } },
      { lineNumber: 5, value: { text: 'd' } },
    ]);
    expect(stats).toEqual({ lines: 5, records: 3, blank: 2, skippedInvalid: 0, skippedLineNumbers: [] });
  });

  it('reports the physical line of invalid JSON', async () => {
    const path = writeScratch('invalid.jsonl', '{"text":"a"}\n\n{"text": "b"\n{"text":"c"}\n');
    const error = await readError(path);
    expect(error.code).toBe('JSONL_INVALID_LINE');
    expect(error.details.lineNumber).toBe(3);
    expect(error.details.excerpt).toBe('"{\\"text\\": \\"b\\""');
    expect(error.message).toContain('line 3');
    expect(error.message).toContain(path);
    expect(error.message).toContain("onInvalidLine: 'skip'");
  });

  it('skips and counts invalid lines on request', async () => {
    const path = writeScratch('skip.jsonl', 'not json\n{"text":"a"}\n[1, 2\n{"text":"b"}\n');
    const reader = readJsonlLines(path, { onInvalidLine: 'skip' });
    const values: unknown[] = [];
    for await (const line of reader) values.push(line.value);
    expect(values).toEqual([{ text: 'a' }, { text: 'b' }]);
    expect(reader.stats.skippedInvalid).toBe(2);
    expect(reader.stats.skippedLineNumbers).toEqual([1, 3]);
    expect(reader.stats.records).toBe(2);
  });

  it('resets counters on each iteration', async () => {
    const path = writeScratch('twice.jsonl', 'oops\n{"a":1}\n');
    const reader = readJsonlLines(path, { onInvalidLine: 'skip' });
    for await (const _ of reader) void _;
    for await (const _ of reader) void _;
    expect(reader.stats.skippedInvalid).toBe(1);
    expect(reader.stats.records).toBe(1);
  });

  it('treats non-objects as invalid with objectsOnly', async () => {
    const path = writeScratch('scalars.jsonl', '{"a":1}\n42\n');
    const plain = await readJsonl(path);
    expect(plain.lines.map((line) => line.value)).toEqual([{ a: 1 }, 42]);

    const error = await readJsonl(path, { objectsOnly: true }).catch((e: unknown) => e);
    expect((error as FileFormatError).code).toBe('JSONL_INVALID_LINE');
    expect((error as FileFormatError).details.lineNumber).toBe(2);
    expect((error as Error).message).toContain('not a JSON object');
  });

  it('rejects invalid UTF-8 with its line', async () => {
    const path = writeScratch('latin1.jsonl', Buffer.concat([Buffer.from('{"a":1}\n{"a":"'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
    const error = await readError(path);
    expect(error.details.lineNumber).toBe(2);
    expect(error.message).toContain('not valid UTF-8');
  });

  it('shortens long lines in excerpts', async () => {
    const path = writeScratch('long.jsonl', `{"text": "${'x'.repeat(500)}"\n`);
    const error = await readError(path);
    const excerpt = error.details.excerpt as string;
    // 80 characters of the line, an ellipsis, and the two quotes JSON.stringify adds.
    expect(Array.from(JSON.parse(excerpt) as string)).toHaveLength(81);
    expect(excerpt.endsWith('…"')).toBe(true);
  });

  it('keeps a BOM after the first line as an error', async () => {
    const path = writeScratch('bom-later.jsonl', '{"a":1}\n\ufeff{"a":2}\n');
    const error = await readError(path);
    expect(error.details.lineNumber).toBe(2);
  });

  it('joins lines split across read chunks', async () => {
    // Lines of multi-byte characters over 200 KB, so chunk borders (64 KiB) fall inside lines and characters.
    const records = Array.from({ length: 3000 }, (_, index) => ({ index, text: `é日😀 ${'ü'.repeat(index % 50)}` }));
    const path = writeScratch('big.jsonl', records.map((record) => JSON.stringify(record)).join('\n'));
    const { lines, stats } = await readJsonl(path);
    expect(stats.records).toBe(3000);
    expect(lines.map((line) => line.value)).toEqual(records);
    expect(lines[2999]!.lineNumber).toBe(3000);
  });

  it('rejects a missing file', async () => {
    const error = await readError(join(scratch, 'missing.jsonl'));
    expect(error.code).toBe('JSONL_FILE_NOT_FOUND');
    expect(error.message).toContain('missing.jsonl');
  });

  it('rejects an unknown policy', () => {
    expect(() => readJsonlLines('x.jsonl', { onInvalidLine: 'ignore' as 'skip' })).toThrow(/onInvalidLine/);
  });
});

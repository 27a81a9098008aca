/**
 * Streaming reader for JSON Lines files.
 *
 * Lines are split on `\n` only, so a raw U+2028 or U+2029 inside a JSON string stays part of the
 * string. A UTF-8 byte order mark at the start of the file is removed, a `\r` before each `\n` is
 * removed, and lines that are empty or contain only whitespace are skipped. Line numbers are
 * physical: they count every `\n`-terminated line of the file, blank ones included, starting at 1.
 */

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

import { FileFormatError } from '../errors.js';

/** Handling of a line that is not valid JSON (or not an object, with `objectsOnly`). */
export type InvalidLinePolicy = 'error' | 'skip';

/** Options of {@link readJsonlLines}. */
export interface ReadJsonlOptions {
  /**
   * `error` throws a `FileFormatError` (code `JSONL_INVALID_LINE`) at the first invalid line;
   * `skip` leaves it out and counts it in {@link JsonlReadStats.skippedInvalid}.
   * @default 'error'
   */
  onInvalidLine?: InvalidLinePolicy;
  /**
   * When true, a line holding valid JSON that is not an object (`42`, `[1]`, `null`) is invalid too.
   * @default false
   */
  objectsOnly?: boolean;
}

/** One parsed line. */
export interface JsonlLine {
  /** Physical line number in the file, counted from 1. */
  lineNumber: number;
  value: unknown;
}

/** Counters of one pass over a file; final once iteration has finished. */
export interface JsonlReadStats {
  /** Physical lines read, blank and invalid ones included. */
  lines: number;
  /** Lines returned as values. */
  records: number;
  /** Empty and whitespace-only lines. */
  blank: number;
  /** Invalid lines left out because `onInvalidLine` is `skip`. */
  skippedInvalid: number;
  /** Line numbers of the skipped invalid lines, in file order. */
  skippedLineNumbers: number[];
}

/** An async iterable over the records of a JSONL file, with counters of what was read. */
export interface JsonlReader extends AsyncIterable<JsonlLine> {
  readonly path: string;
  readonly stats: JsonlReadStats;
}

/** Characters of a line shown in error messages. */
const EXCERPT_LENGTH = 80;

const UTF8_BOM = [0xef, 0xbb, 0xbf] as const;
const NEWLINE = 0x0a;

/**
 * Opens a JSONL file for streaming. Nothing is read until iteration starts, and each iteration
 * reads the file again with fresh counters.
 *
 * Iteration throws `FileFormatError` with code `JSONL_FILE_NOT_FOUND` when the file is missing and
 * `JSONL_INVALID_LINE` (with `details.lineNumber` and `details.excerpt`) at an invalid line unless
 * `onInvalidLine` is `skip`. Invalid UTF-8 makes a line invalid.
 */
export function readJsonlLines(path: string, options: ReadJsonlOptions = {}): JsonlReader {
  const policy = options.onInvalidLine ?? 'error';
  const objectsOnly = options.objectsOnly ?? false;
  if (policy !== 'error' && policy !== 'skip') {
    throw new FileFormatError(
      'JSONL_INVALID_OPTION',
      `Invalid onInvalidLine value ${JSON.stringify(policy)}; use 'error' or 'skip'.`,
      { details: { path, onInvalidLine: policy } },
    );
  }

  const reader: JsonlReader = {
    path,
    stats: emptyStats(),
    async *[Symbol.asyncIterator]() {
      const stats = reader.stats;
      Object.assign(stats, emptyStats());
      await assertFileExists(path);

      for await (const { lineNumber, bytes } of physicalLines(path)) {
        stats.lines = lineNumber;
        const parsed = parseLine(bytes, lineNumber === 1, objectsOnly);
        if (parsed.kind === 'blank') {
          stats.blank += 1;
          continue;
        }
        if (parsed.kind === 'invalid') {
          if (policy === 'skip') {
            stats.skippedInvalid += 1;
            stats.skippedLineNumbers.push(lineNumber);
            continue;
          }
          throw invalidLineError(path, lineNumber, parsed.text, parsed.reason);
        }
        stats.records += 1;
        yield { lineNumber, value: parsed.value };
      }
    },
  };
  return reader;
}

/** Reads every record of a JSONL file into memory; see {@link readJsonlLines} for the rules. */
export async function readJsonl(
  path: string,
  options: ReadJsonlOptions = {},
): Promise<{ lines: JsonlLine[]; stats: JsonlReadStats }> {
  const reader = readJsonlLines(path, options);
  const lines: JsonlLine[] = [];
  for await (const line of reader) lines.push(line);
  return { lines, stats: reader.stats };
}

/** Shortens a line for an error message, keeping control characters visible. */
export function lineExcerpt(text: string): string {
  // A code point takes one or two UTF-16 code units, so the first 2 * EXCERPT_LENGTH units contain
  // the excerpt, and splitting only them keeps a 50 MB line from becoming an array of 50 M strings.
  const head = Array.from(text.slice(0, 2 * EXCERPT_LENGTH));
  const cut = head.length > EXCERPT_LENGTH || text.length > 2 * EXCERPT_LENGTH;
  const excerpt = cut ? `${head.slice(0, EXCERPT_LENGTH).join('')}…` : text;
  return JSON.stringify(excerpt);
}

function emptyStats(): JsonlReadStats {
  return { lines: 0, records: 0, blank: 0, skippedInvalid: 0, skippedLineNumbers: [] };
}

async function assertFileExists(path: string): Promise<void> {
  try {
    const info = await stat(path);
    if (!info.isFile()) {
      throw new FileFormatError('JSONL_FILE_NOT_FOUND', `JSONL path ${path} is not a file; pass the path of a .jsonl file.`, {
        details: { path },
      });
    }
  } catch (error) {
    if (error instanceof FileFormatError) throw error;
    throw new FileFormatError('JSONL_FILE_NOT_FOUND', `JSONL file ${path} not found or not readable; check the path.`, {
      cause: error,
      details: { path },
    });
  }
}

type ParsedLine =
  | { kind: 'blank' }
  | { kind: 'record'; value: unknown }
  | { kind: 'invalid'; text: string; reason: string };

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function parseLine(bytes: Uint8Array, isFirstLine: boolean, objectsOnly: boolean): ParsedLine {
  let start = 0;
  let end = bytes.length;
  if (isFirstLine && startsWithBom(bytes)) start = UTF8_BOM.length;
  if (end > start && bytes[end - 1] === 0x0d) end -= 1;

  let text: string;
  try {
    text = utf8Decoder.decode(bytes.subarray(start, end));
  } catch {
    return { kind: 'invalid', text: Buffer.from(bytes.subarray(start, end)).toString('latin1'), reason: 'it is not valid UTF-8' };
  }
  if (text.trim() === '') return { kind: 'blank' };

  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { kind: 'invalid', text, reason: `it is not valid JSON (${(error as Error).message})` };
  }
  if (objectsOnly && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    return { kind: 'invalid', text, reason: 'it is not a JSON object' };
  }
  return { kind: 'record', value };
}

function startsWithBom(bytes: Uint8Array): boolean {
  return bytes[0] === UTF8_BOM[0] && bytes[1] === UTF8_BOM[1] && bytes[2] === UTF8_BOM[2];
}

function invalidLineError(path: string, lineNumber: number, text: string, reason: string): FileFormatError {
  const excerpt = lineExcerpt(text);
  return new FileFormatError(
    'JSONL_INVALID_LINE',
    `Invalid line ${lineNumber} in ${path}: ${reason}: ${excerpt}. ` +
      `Fix the line, or pass onInvalidLine: 'skip' to leave invalid lines out.`,
    { details: { path, lineNumber, excerpt } },
  );
}

/** Splits a file's bytes on `\n`, yielding each line without the `\n`; the last line may lack one. */
async function* physicalLines(path: string): AsyncGenerator<{ lineNumber: number; bytes: Uint8Array }> {
  let pending: Buffer[] = [];
  let lineNumber = 0;
  const stream = createReadStream(path);

  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let from = 0;
    let newlineAt = chunk.indexOf(NEWLINE, from);
    while (newlineAt !== -1) {
      pending.push(chunk.subarray(from, newlineAt));
      lineNumber += 1;
      yield { lineNumber, bytes: pending.length === 1 ? pending[0]! : Buffer.concat(pending) };
      pending = [];
      from = newlineAt + 1;
      newlineAt = chunk.indexOf(NEWLINE, from);
    }
    if (from < chunk.length) pending.push(chunk.subarray(from));
  }

  // A final line without a trailing newline still counts; an empty tail after the last `\n` does not.
  if (pending.length > 0) {
    lineNumber += 1;
    yield { lineNumber, bytes: Buffer.concat(pending) };
  }
}

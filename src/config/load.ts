/**
 * Reading configuration files: JSON (`.json`) and YAML (`.yaml`, `.yml`), chosen by extension.
 *
 * YAML is read as YAML 1.2 (core schema), so `1e-5` is a number, `yes` is a string, and a
 * duplicated key is an error. Every failure is a {@link ConfigError} with code
 * `CONFIG_FILE_INVALID` and `details.reason`.
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { LineCounter, parseDocument, type Document } from 'yaml';

import { ConfigError } from '../errors.js';
import { findDuplicateKey } from '../io/safetensors-header.js';
import type { ConfigSource } from './keys.js';
import { formatValue, isPlainObject } from './values.js';

/** Reason a configuration file could not be read. */
export type ConfigFileFailure = 'not_found' | 'read_failed' | 'unsupported_extension' | 'encoding' | 'syntax' | 'not_an_object';

/** The parsed top-level object of a configuration file, and how to find a value's line in it. */
export interface ConfigFileContent {
  values: Record<string, unknown>;
  source: ConfigSource;
}

const JSON_EXTENSIONS = new Set(['.json']);
const YAML_EXTENSIONS = new Set(['.yaml', '.yml']);

/** yaml's own default. An option file needs few aliases, and nested aliases can expand exponentially. */
const MAX_YAML_ALIAS_COUNT = 100;

/** Reads and parses a configuration file into its top-level object. */
export async function readConfigFile(path: string): Promise<ConfigFileContent> {
  const extension = extname(path).toLowerCase();
  if (!JSON_EXTENSIONS.has(extension) && !YAML_EXTENSIONS.has(extension)) {
    throw fileError(
      'unsupported_extension',
      path,
      `Config file ${path} has the extension "${extension}", which is not supported. Use .json, .yaml or .yml.`,
    );
  }

  const text = stripByteOrderMark(await readText(path));
  const values = JSON_EXTENSIONS.has(extension) ? parseJson(path, text) : parseYaml(path, text);
  if (!isPlainObject(values)) {
    throw fileError(
      'not_an_object',
      path,
      `Config file ${path} must contain an object of options at the top level, but it contains ${formatValue(values)}.`,
    );
  }
  return { values, source: { file: path, locate: lineLocator(text) } };
}

async function readText(path: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw fileError('not_found', path, `Config file not found: ${path}. Check the path and the working directory.`, error);
    }
    throw fileError('read_failed', path, `Failed to read config file ${path}: ${(error as Error).message}.`, error);
  }
  return decodeUtf8(path, bytes);
}

/** Decodes UTF-8 strictly, because a lenient decoder would turn invalid bytes into U+FFFD inside paths and keys. */
function decodeUtf8(path: string, bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (error) {
    const offset = firstInvalidUtf8Offset(bytes);
    const where = linePosition(new TextDecoder('utf-8').decode(bytes.subarray(0, offset)), offset);
    throw fileError(
      'encoding',
      path,
      `Config file ${path} is not valid UTF-8: byte 0x${(bytes[offset] ?? 0).toString(16).padStart(2, '0')} at offset ${offset} ` +
        `(line ${where.line}). Save the file as UTF-8.`,
      error,
      where,
    );
  }
}

/** Returns the offset of the first byte that does not start or continue a valid UTF-8 sequence. */
function firstInvalidUtf8Offset(bytes: Uint8Array): number {
  let index = 0;
  while (index < bytes.length) {
    const lead = bytes[index] as number;
    if (lead < 0x80) {
      index += 1;
      continue;
    }

    // The allowed range of the second byte excludes overlong forms and UTF-16 surrogates (RFC 3629, section 4).
    let length: number;
    let secondLow = 0x80;
    let secondHigh = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      if (lead === 0xe0) secondLow = 0xa0;
      if (lead === 0xed) secondHigh = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      if (lead === 0xf0) secondLow = 0x90;
      if (lead === 0xf4) secondHigh = 0x8f;
    } else {
      return index;
    }

    for (let offset = 1; offset < length; offset += 1) {
      const byte = bytes[index + offset];
      const low = offset === 1 ? secondLow : 0x80;
      const high = offset === 1 ? secondHigh : 0xbf;
      if (byte === undefined || byte < low || byte > high) {
        return index;
      }
    }
    index += length;
  }
  return index;
}

function parseJson(path: string, text: string): unknown {
  let values: unknown;
  try {
    values = JSON.parse(text);
  } catch (error) {
    const position = /at position (\d+)/.exec((error as Error).message);
    const where = position === null ? {} : linePosition(text, Number(position[1]));
    const at = where.line === undefined ? '' : ` at line ${where.line}, column ${where.column}`;
    throw fileError('syntax', path, `Config file ${path} is not valid JSON${at}: ${(error as Error).message}.`, error, where);
  }

  // JSON.parse keeps the last of two equal keys without a word, while YAML rejects them, so both
  // kinds of file reject them here.
  const duplicate = findDuplicateKey(text);
  if (duplicate !== undefined) {
    const inside = duplicate.parentKey === undefined ? 'at the top level' : `inside "${duplicate.parentKey}"`;
    throw fileError(
      'syntax',
      path,
      `Config file ${path} sets the key "${duplicate.key}" twice ${inside}. Keep only one of them.`,
    );
  }
  return values;
}

function parseYaml(path: string, text: string): unknown {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter });
  const [first] = document.errors;
  if (first !== undefined) {
    const start = first.linePos?.[0];
    const where = start === undefined ? {} : { line: start.line, column: start.col };
    // The yaml message ends with a copy of the offending lines, so only its first line is kept.
    const summary = first.message.split('\n')[0] ?? first.message;
    const more = document.errors.length > 1 ? ` (and ${document.errors.length - 1} more)` : '';
    throw fileError('syntax', path, `Config file ${path} is not valid YAML: ${summary}${more}.`, first, where);
  }

  try {
    return document.toJS({ maxAliasCount: MAX_YAML_ALIAS_COUNT });
  } catch (error) {
    // yaml raises a ReferenceError when aliases expand to more than maxAliasCount nodes, which
    // guards against "billion laughs" files.
    throw fileError(
      'syntax',
      path,
      `Config file ${path} is not valid YAML: its aliases expand to too many values (${(error as Error).message}). ` +
        'Write the values out instead of nesting aliases.',
      error,
    );
  }
}

/**
 * Returns a function that finds the 1-based line of a value by its path. JSON is a subset of YAML
 * 1.2, so the YAML parser locates values in both kinds of file.
 */
function lineLocator(text: string): (path: readonly (string | number)[]) => number | undefined {
  let parsed: { document: Document; lineCounter: LineCounter } | undefined;
  return (path) => {
    if (parsed === undefined) {
      const lineCounter = new LineCounter();
      parsed = { document: parseDocument(text, { lineCounter }), lineCounter };
    }
    if (parsed.document.errors.length > 0) {
      return undefined;
    }
    const node = parsed.document.getIn(path, true) as { range?: [number, number, number] } | undefined;
    if (node?.range === undefined) {
      return undefined;
    }
    return parsed.lineCounter.linePos(node.range[0]).line;
  };
}

function linePosition(text: string, offset: number): { line?: number; column?: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return { line, column };
}

function stripByteOrderMark(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function fileError(
  reason: ConfigFileFailure,
  path: string,
  message: string,
  cause?: unknown,
  where: { line?: number; column?: number } = {},
): ConfigError {
  return new ConfigError('CONFIG_FILE_INVALID', message, {
    ...(cause === undefined ? {} : { cause }),
    details: { path, reason, ...where },
  });
}

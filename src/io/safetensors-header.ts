/**
 * Parsing and validation of a safetensors header.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON, and a data
 * buffer. The rules enforced here follow the reference implementation (huggingface/safetensors,
 * `safetensors/src/tensor.rs`):
 * - the header is at most 100,000,000 bytes and lies within the file;
 * - it is a JSON object whose `__metadata__` is absent, null or a string-to-string map;
 * - every other key names a tensor with a known dtype, an integer shape and `data_offsets` whose
 *   span equals the tensor's byte size;
 * - the tensors tile the data buffer from its first byte to the end of the file.
 * Duplicate names are rejected too. The reference JSON parser keeps the last of them silently.
 *
 * Nothing here allocates memory in proportion to a size that the header declares.
 */
import { FileFormatError } from '../errors.js';
import { DTYPE_BITS, isSafetensorsDtype, type SafetensorsDtype } from './dtypes.js';

/** Largest header length the reference implementation accepts, in bytes. */
export const MAX_HEADER_LENGTH = 100_000_000;

/** Bytes before the JSON header: its length as a little-endian unsigned 64-bit integer. */
export const HEADER_LENGTH_BYTES = 8;

/** One tensor described by a safetensors header. */
export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDtype;
  /** Dimensions, outermost first; `[]` is a scalar. */
  shape: number[];
  /** Start and end of the tensor's bytes, relative to the start of the data buffer. */
  dataOffsets: [number, number];
}

/** A validated header and the layout of the file around it. */
export interface SafetensorsHeader {
  /** The `__metadata__` map, or an empty object when the file has none. */
  metadata: Record<string, string>;
  /** Every tensor, ordered by position in the data buffer. */
  entries: SafetensorsEntry[];
  /** Length of the JSON header in bytes (N). */
  headerLength: number;
  /** File offset of the first data byte: 8 + N. */
  dataStart: number;
}

const MAX_UINT64 = (1n << 64n) - 1n;

/**
 * Reads the header length from the first 8 bytes and checks it against the size limit and the
 * file size, before anything reads the header itself.
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, source: string): number {
  if (fileSize < HEADER_LENGTH_BYTES || prefix.length < HEADER_LENGTH_BYTES) {
    throw new FileFormatError(
      'SAFETENSORS_HEADER_TOO_SMALL',
      `Invalid safetensors file ${source}: it has ${fileSize} bytes, fewer than the 8 bytes of the ` +
        'header length. The file is empty or truncated; download or export it again.',
      { details: { source, fileSize } },
    );
  }

  const view = new DataView(prefix.buffer, prefix.byteOffset, HEADER_LENGTH_BYTES);
  const headerLength = view.getBigUint64(0, true);

  if (headerLength > BigInt(MAX_HEADER_LENGTH)) {
    throw new FileFormatError(
      'SAFETENSORS_HEADER_TOO_LARGE',
      `Invalid safetensors file ${source}: the header length is ${headerLength} bytes, more than ` +
        `the maximum of ${MAX_HEADER_LENGTH}. The file is damaged or is not a safetensors file.`,
      { details: { source, headerLength: headerLength.toString(), maxHeaderLength: MAX_HEADER_LENGTH, fileSize } },
    );
  }

  const length = Number(headerLength);
  if (HEADER_LENGTH_BYTES + length > fileSize) {
    throw new FileFormatError(
      'SAFETENSORS_HEADER_LENGTH_INVALID',
      `Invalid safetensors file ${source}: the header length is ${length} bytes, but the file has ` +
        `only ${fileSize - HEADER_LENGTH_BYTES} bytes after the length field. The file is truncated ` +
        'or damaged; download or export it again.',
      { details: { source, headerLength: length, fileSize } },
    );
  }
  return length;
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses and validates the JSON header. `fileSize` is the size of the whole file (or buffer), so
 * that the tensors can be checked to end exactly at its last byte.
 */
export function parseHeader(headerBytes: Uint8Array, fileSize: number, source: string): SafetensorsHeader {
  const headerLength = headerBytes.length;
  const dataStart = HEADER_LENGTH_BYTES + headerLength;

  const root = parseHeaderJson(headerBytes, source);
  let metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];

  for (const [key, value] of Object.entries(root)) {
    if (key === '__metadata__') {
      metadata = parseMetadata(value, source);
    } else {
      entries.push(parseEntry(key, value, source));
    }
  }

  // Empty tensors may share their start offset with each other and with the next tensor.
  // Ordering ties by end offset puts them before that tensor.
  entries.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  checkTiling(entries, fileSize - dataStart, source);

  return { metadata, entries, headerLength, dataStart };
}

function parseHeaderJson(headerBytes: Uint8Array, source: string): Record<string, unknown> {
  let text: string;
  try {
    text = utf8Decoder.decode(headerBytes);
  } catch (error) {
    throw new FileFormatError(
      'SAFETENSORS_HEADER_NOT_UTF8',
      `Invalid safetensors file ${source}: the ${headerBytes.length}-byte header is not valid UTF-8. ` +
        'The file is damaged or is not a safetensors file.',
      { cause: error, details: { source, headerLength: headerBytes.length } },
    );
  }

  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (error) {
    throw new FileFormatError(
      'SAFETENSORS_HEADER_INVALID_JSON',
      `Invalid safetensors file ${source}: the header is not valid JSON (${(error as Error).message}). ` +
        'The file is damaged or is not a safetensors file.',
      { cause: error, details: { source, headerLength: headerBytes.length } },
    );
  }

  if (typeof root !== 'object' || root === null || Array.isArray(root)) {
    throw new FileFormatError(
      'SAFETENSORS_HEADER_NOT_OBJECT',
      `Invalid safetensors file ${source}: the header is a JSON ${describeJsonType(root)}, not an object ` +
        'of tensor entries.',
      { details: { source } },
    );
  }

  // JSON.parse keeps the last of two equal keys, which would hide a tensor, so scan the text.
  const duplicate = findDuplicateKey(text);
  if (duplicate !== undefined) {
    const where = duplicate.parentKey === undefined ? 'the header' : `the entry "${duplicate.parentKey}"`;
    throw new FileFormatError(
      'SAFETENSORS_DUPLICATE_KEY',
      `Invalid safetensors file ${source}: the key "${duplicate.key}" appears more than once in ${where}. ` +
        'Every tensor name must be unique; the file was written by a faulty writer.',
      { details: { source, key: duplicate.key, parentKey: duplicate.parentKey } },
    );
  }

  return root as Record<string, unknown>;
}

function parseMetadata(value: unknown, source: string): Record<string, string> {
  if (value === null) {
    return {};
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new FileFormatError(
      'SAFETENSORS_METADATA_INVALID',
      `Invalid safetensors file ${source}: "__metadata__" is a JSON ${describeJsonType(value)}, ` +
        'but it must be an object whose values are strings.',
      { details: { source } },
    );
  }

  const metadata: Record<string, string> = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    if (typeof item !== 'string') {
      throw new FileFormatError(
        'SAFETENSORS_METADATA_INVALID',
        `Invalid safetensors file ${source}: "__metadata__" key "${key}" is a JSON ` +
          `${describeJsonType(item)}, but metadata values must be strings.`,
        { details: { source, key } },
      );
    }
    metadata[key] = item;
  }
  return metadata;
}

function parseEntry(name: string, value: unknown, source: string): SafetensorsEntry {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw entryError(source, name, `is a JSON ${describeJsonType(value)}, not an object with dtype, shape and data_offsets`);
  }
  const fields = value as Record<string, unknown>;

  const dtype = fields.dtype;
  if (!isSafetensorsDtype(dtype)) {
    throw new FileFormatError(
      'SAFETENSORS_DTYPE_UNKNOWN',
      `Invalid safetensors file ${source}: tensor "${name}" has dtype ${JSON.stringify(dtype) ?? 'undefined'}, ` +
        `which is not one of ${Object.keys(DTYPE_BITS).join(', ')}.`,
      { details: { source, tensor: name, dtype } },
    );
  }

  const shape = fields.shape;
  if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
    throw new FileFormatError(
      'SAFETENSORS_SHAPE_INVALID',
      `Invalid safetensors file ${source}: tensor "${name}" has shape ${JSON.stringify(shape) ?? 'undefined'}, ` +
        'but a shape must be an array of non-negative integers.',
      { details: { source, tensor: name, shape } },
    );
  }

  const offsets = fields.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !isNonNegativeSafeInteger(offsets[0]) ||
    !isNonNegativeSafeInteger(offsets[1]) ||
    offsets[1] < offsets[0]
  ) {
    throw new FileFormatError(
      'SAFETENSORS_OFFSETS_INVALID',
      `Invalid safetensors file ${source}: tensor "${name}" has data_offsets ` +
        `${JSON.stringify(offsets) ?? 'undefined'}, but they must be [start, end] with integers ` +
        '0 <= start <= end < 2^53.',
      { details: { source, tensor: name, dataOffsets: offsets } },
    );
  }
  const [start, end] = offsets as [number, number];

  checkByteSize(name, dtype, shape as number[], end - start, source);
  return { name, dtype, shape: [...(shape as number[])], dataOffsets: [start, end] };
}

/** Checks that shape times element size, computed without overflow, equals the span of the offsets. */
function checkByteSize(name: string, dtype: SafetensorsDtype, shape: number[], span: number, source: string): void {
  let elements = 1n;
  for (const dimension of shape) {
    elements *= BigInt(dimension);
  }
  const bits = elements * BigInt(DTYPE_BITS[dtype]);
  const described = `${dtype} [${shape.join(', ')}]`;

  if (bits > MAX_UINT64) {
    throw new FileFormatError(
      'SAFETENSORS_SIZE_OVERFLOW',
      `Invalid safetensors file ${source}: tensor "${name}" (${described}) has ${elements} elements, ` +
        'whose size in bits overflows a 64-bit integer.',
      { details: { source, tensor: name, dtype, shape, elements: elements.toString() } },
    );
  }
  if (bits % 8n !== 0n) {
    throw new FileFormatError(
      'SAFETENSORS_SIZE_NOT_WHOLE_BYTES',
      `Invalid safetensors file ${source}: tensor "${name}" (${described}) takes ${bits} bits, ` +
        'which is not a whole number of bytes.',
      { details: { source, tensor: name, dtype, shape, bits: bits.toString() } },
    );
  }
  if (bits / 8n !== BigInt(span)) {
    throw new FileFormatError(
      'SAFETENSORS_SIZE_MISMATCH',
      `Invalid safetensors file ${source}: tensor "${name}" (${described}) needs ${bits / 8n} bytes, ` +
        `but its data_offsets span ${span} bytes. The file is damaged or was written by a faulty writer.`,
      { details: { source, tensor: name, dtype, shape, expectedBytes: (bits / 8n).toString(), actualBytes: span } },
    );
  }
}

/** Checks that the entries, sorted by offset, cover `[0, dataLength)` with no gap or overlap. */
function checkTiling(entries: SafetensorsEntry[], dataLength: number, source: string): void {
  let expectedStart = 0;
  let previous: SafetensorsEntry | undefined;

  for (const entry of entries) {
    const [start, end] = entry.dataOffsets;
    if (start < expectedStart) {
      throw new FileFormatError(
        'SAFETENSORS_DATA_OVERLAP',
        `Invalid safetensors file ${source}: tensor "${entry.name}" starts at data byte ${start}, ` +
          `inside tensor "${previous?.name}", which ends at byte ${expectedStart}. Tensors must not overlap.`,
        { details: { source, tensor: entry.name, start, previous: previous?.name, previousEnd: expectedStart } },
      );
    }
    if (start > expectedStart) {
      const after = previous === undefined ? 'the start of the data buffer' : `tensor "${previous.name}"`;
      throw new FileFormatError(
        'SAFETENSORS_DATA_GAP',
        `Invalid safetensors file ${source}: tensor "${entry.name}" starts at data byte ${start}, ` +
          `leaving a gap of ${start - expectedStart} bytes after ${after} (byte ${expectedStart}). ` +
          'Tensors must cover the data buffer with no gaps.',
        { details: { source, tensor: entry.name, start, expectedStart } },
      );
    }
    expectedStart = end;
    previous = entry;
  }

  if (expectedStart > dataLength) {
    throw new FileFormatError(
      'SAFETENSORS_DATA_TRUNCATED',
      `Invalid safetensors file ${source}: tensor "${previous?.name}" ends at data byte ${expectedStart}, ` +
        `but the data buffer has only ${dataLength} bytes. The file is truncated; download or export it again.`,
      { details: { source, tensor: previous?.name, end: expectedStart, dataLength } },
    );
  }
  if (expectedStart < dataLength) {
    const last = previous === undefined ? 'the header (the file has no tensors)' : `tensor "${previous.name}"`;
    throw new FileFormatError(
      'SAFETENSORS_DATA_TRAILING_BYTES',
      `Invalid safetensors file ${source}: the file has ${dataLength - expectedStart} bytes after ${last}, ` +
        `which ends at data byte ${expectedStart} of ${dataLength}. Tensors must cover the file to its end.`,
      { details: { source, tensor: previous?.name, end: expectedStart, dataLength } },
    );
  }
}

function entryError(source: string, name: string, problem: string): FileFormatError {
  return new FileFormatError('SAFETENSORS_ENTRY_INVALID', `Invalid safetensors file ${source}: tensor "${name}" ${problem}.`, {
    details: { source, tensor: name },
  });
}

function isNonNegativeSafeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function describeJsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

interface DuplicateKey {
  key: string;
  /** Key of the object that contains the duplicate, or undefined for the top-level object. */
  parentKey: string | undefined;
}

interface ScanFrame {
  /** Keys seen so far, or null for an array. */
  keys: Set<string> | null;
  expectKey: boolean;
  lastKey: string | undefined;
  parentKey: string | undefined;
}

/**
 * Finds the first key that appears twice in one object of a JSON text, at any depth.
 * `text` must already be valid JSON: the scan only tracks strings, brackets and commas.
 */
export function findDuplicateKey(text: string): DuplicateKey | undefined {
  const stack: ScanFrame[] = [];
  let index = 0;

  while (index < text.length) {
    const code = text.charCodeAt(index);
    const top = stack[stack.length - 1];

    if (code === 0x22) {
      const end = endOfJsonString(text, index);
      if (top !== undefined && top.keys !== null && top.expectKey) {
        const raw = text.slice(index + 1, end);
        const key = raw.includes('\\') ? (JSON.parse(text.slice(index, end + 1)) as string) : raw;
        if (top.keys.has(key)) {
          return { key, parentKey: top.parentKey };
        }
        top.keys.add(key);
        top.expectKey = false;
        top.lastKey = key;
      }
      index = end + 1;
      continue;
    }

    if (code === 0x7b) {
      stack.push({ keys: new Set(), expectKey: true, lastKey: undefined, parentKey: top?.keys ? top.lastKey : top?.parentKey });
    } else if (code === 0x5b) {
      stack.push({ keys: null, expectKey: false, lastKey: undefined, parentKey: top?.keys ? top.lastKey : top?.parentKey });
    } else if (code === 0x7d || code === 0x5d) {
      stack.pop();
    } else if (code === 0x2c && top !== undefined && top.keys !== null) {
      top.expectKey = true;
    }
    index += 1;
  }
  return undefined;
}

/** Returns the index of the quote that closes the JSON string opened at `start`. */
function endOfJsonString(text: string, start: number): number {
  let index = start + 1;
  while (index < text.length) {
    const code = text.charCodeAt(index);
    if (code === 0x5c) {
      index += 2;
    } else if (code === 0x22) {
      return index;
    } else {
      index += 1;
    }
  }
  return text.length;
}

/**
 * Reading and writing safetensors files.
 *
 * {@link openSafetensors} reads and validates only the header; each tensor is then read from its
 * own byte range with positional reads, so a single tensor of a multi-gigabyte file costs only its
 * own bytes of memory. See `./safetensors-header.ts` for the header rules and
 * `./safetensors-codec.ts` for how each dtype maps onto tfjs tensors.
 */
import * as tf from '@tensorflow/tfjs';
import { promises as fs } from 'node:fs';

import { ArgumentError, FileFormatError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';
import { DTYPE_BITS, isSafetensorsDtype, type SafetensorsDtype } from './dtypes.js';
import {
  decodeTensorBytes,
  encodeTensorValues,
  float32InPlace,
  sharedRegions,
  widenHalfInPlace,
  type DecodedDtype,
  type DecodedValues,
  type FloatWriteDtype,
} from './safetensors-codec.js';
import {
  HEADER_LENGTH_BYTES,
  parseHeader,
  readHeaderLength,
  type SafetensorsEntry,
  type SafetensorsHeader,
} from './safetensors-header.js';

export type { SafetensorsEntry } from './safetensors-header.js';
export type { DecodedDtype, FloatWriteDtype } from './safetensors-codec.js';

/** A tensor as stored bytes: little-endian, C order, exactly `shape` times the dtype size. */
export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Uint8Array;
}

/** Options of `readTensor`. */
export interface ReadTensorOptions {
  /** Cast the decoded tensor to this tfjs dtype (with `tf.cast` semantics); by default the dtype follows the file. */
  dtype?: DecodedDtype;
}

/** The parts shared by a safetensors file on disk and one held in memory. */
export interface SafetensorsContents {
  /** The `__metadata__` map, or an empty object when the file has none. */
  readonly metadata: Record<string, string>;
  /** Every tensor, ordered by position in the data buffer. */
  readonly entries: readonly SafetensorsEntry[];
  /** Tells whether a tensor of this name exists. */
  has(name: string): boolean;
  /** Returns the entry of a tensor; throws `SAFETENSORS_TENSOR_NOT_FOUND` when absent. */
  entry(name: string): SafetensorsEntry;
}

/** An open safetensors file whose header has been validated. Call `close()` when done. */
export interface SafetensorsFile extends SafetensorsContents {
  readonly path: string;
  /** Reads one tensor's byte range and decodes it to a tfjs tensor (dtype rules in `./safetensors-codec.ts`). */
  readTensor(name: string, options?: ReadTensorOptions): Promise<tf.Tensor>;
  /**
   * Reads several tensors, keyed by name, after checking every name. A repeated name is read once.
   * Float tensors (F32, F16, BF16) share memory blocks of up to 1 GiB, so V8 collects less garbage.
   *
   * NOTE: on the `cpu` backend a block stays allocated until every tensor decoded into it is
   * disposed. The `wasm` backend copies the values, so there the block is garbage after the read.
   */
  readTensors(names: readonly string[], options?: ReadTensorOptions): Promise<Record<string, tf.Tensor>>;
  /** Reads one tensor's bytes as stored. */
  readRaw(name: string): Promise<RawTensor>;
  /** Closes the file handle; later reads fail. */
  close(): Promise<void>;
}

/** A safetensors file held in memory whose header has been validated. */
export interface SafetensorsBuffer extends SafetensorsContents {
  /** Decodes one tensor to a tfjs tensor (dtype rules in `./safetensors-codec.ts`). */
  readTensor(name: string, options?: ReadTensorOptions): tf.Tensor;
  /** Returns a copy of one tensor's bytes as stored. */
  readRaw(name: string): RawTensor;
}

/** Options of {@link readSafetensors}. */
export interface ReadSafetensorsOptions {
  /** Read only these tensors; a name the file lacks is an error. By default every tensor is read. */
  names?: string[];
}

/** Options of {@link writeSafetensors} and {@link encodeSafetensors}. */
export interface WriteSafetensorsOptions {
  /** The `__metadata__` map; values must be strings. */
  metadata?: Record<string, string>;
  /**
   * Storage dtype of float32 tensors, narrowed with round-to-nearest-even. int32 tensors are
   * always written as I32 and bool tensors as BOOL; raw tensors keep their own dtype.
   * @default 'F32'
   */
  dtype?: FloatWriteDtype;
}

/**
 * Tensors that `readTensors` reads ahead of the one being decoded, so file reads overlap with
 * widening. Values of 2 and 3 were not faster in `bench/safetensors.bench.ts` on 2 cores.
 */
const READ_AHEAD = 1;

/** Largest number of bytes read by one `read` call; bigger ranges are read in steps. */
const READ_CHUNK_BYTES = 64 * 1024 * 1024;

/**
 * Opens a safetensors file and validates its header without reading tensor data.
 * Throws a {@link FileFormatError} whose code names the violated rule.
 */
export async function openSafetensors(filePath: string): Promise<SafetensorsFile> {
  const handle = await openForReading(filePath);
  try {
    const { size } = await handle.stat();
    const prefix = await readRange(handle, 0, Math.min(HEADER_LENGTH_BYTES, size), filePath);
    const headerLength = readHeaderLength(prefix, size, filePath);
    const headerBytes = await readRange(handle, HEADER_LENGTH_BYTES, headerLength, filePath);
    const header = parseHeader(headerBytes, size, filePath);
    return new OpenSafetensorsFile(filePath, handle, header);
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Reads tensors (all, or `options.names`) and the metadata of a safetensors file. */
export async function readSafetensors(
  filePath: string,
  options: ReadSafetensorsOptions = {},
): Promise<{ tensors: Record<string, tf.Tensor>; metadata: Record<string, string> }> {
  const file = await openSafetensors(filePath);
  try {
    const names = [...new Set(options.names ?? file.entries.map((entry) => entry.name))];
    const tensors = await file.readTensors(names);
    return { tensors, metadata: { ...file.metadata } };
  } finally {
    await file.close();
  }
}

/** Validates a safetensors file held in memory (for example a downloaded buffer). */
export function parseSafetensors(bytes: Uint8Array, source = '<buffer>'): SafetensorsBuffer {
  const prefix = bytes.subarray(0, HEADER_LENGTH_BYTES);
  const headerLength = readHeaderLength(prefix, bytes.length, source);
  const header = parseHeader(bytes.subarray(HEADER_LENGTH_BYTES, HEADER_LENGTH_BYTES + headerLength), bytes.length, source);
  return new InMemorySafetensors(source, bytes, header);
}

/**
 * Writes tensors to a safetensors file atomically (temporary file, fsync, rename), so an
 * interrupted write never damages an existing file.
 *
 * Tensors are laid out contiguously, largest element size first and then by name, as the
 * reference writer does. Every tensor then starts at a multiple of its element size, because the
 * header is padded with spaces so the data starts at a multiple of 8. Tensors are encoded one at
 * a time, so memory use stays near the size of the largest tensor.
 */
export async function writeSafetensors(
  filePath: string,
  tensors: Record<string, tf.Tensor | RawTensor>,
  options: WriteSafetensorsOptions = {},
): Promise<void> {
  const plan = planLayout(tensors, options);
  async function* chunks(): AsyncGenerator<Uint8Array> {
    yield plan.prefix;
    for (const item of plan.items) {
      yield await encodeItem(item);
    }
  }
  await writeFileAtomic(filePath, chunks());
}

/** Encodes tensors as the bytes of a safetensors file, with the layout of {@link writeSafetensors}. */
export function encodeSafetensors(
  tensors: Record<string, tf.Tensor | RawTensor>,
  options: WriteSafetensorsOptions = {},
): Uint8Array {
  const plan = planLayout(tensors, options);
  const output = new Uint8Array(plan.totalBytes);
  output.set(plan.prefix, 0);
  let offset = plan.prefix.length;
  for (const item of plan.items) {
    const bytes = encodeItemSync(item);
    output.set(bytes, offset);
    offset += bytes.length;
  }
  return output;
}

class OpenSafetensorsFile implements SafetensorsFile {
  readonly metadata: Record<string, string>;
  readonly entries: readonly SafetensorsEntry[];
  private readonly byName: Map<string, SafetensorsEntry>;

  constructor(
    readonly path: string,
    private readonly handle: fs.FileHandle,
    private readonly header: SafetensorsHeader,
  ) {
    this.metadata = header.metadata;
    this.entries = header.entries;
    this.byName = new Map(header.entries.map((entry) => [entry.name, entry]));
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  entry(name: string): SafetensorsEntry {
    return lookupEntry(this.byName, name, this.path);
  }

  async readRaw(name: string): Promise<RawTensor> {
    const entry = this.entry(name);
    const [start, end] = entry.dataOffsets;
    const data = await readRange(this.handle, this.header.dataStart + start, end - start, this.path);
    return { dtype: entry.dtype, shape: [...entry.shape], data };
  }

  async readTensor(name: string, options: ReadTensorOptions = {}): Promise<tf.Tensor> {
    return this.decodeEntry(this.entry(name), undefined, options.dtype);
  }

  async readTensors(names: readonly string[], options: ReadTensorOptions = {}): Promise<Record<string, tf.Tensor>> {
    const entries = [...new Set(names)].map((name) => this.entry(name));
    const regions = sharedRegions(entries);
    // No prototype, so a tensor named "__proto__" is stored as an ordinary key.
    const tensors: Record<string, tf.Tensor> = Object.create(null) as Record<string, tf.Tensor>;

    // Keep the next reads in flight while the current tensor is widened, so file reads (in the
    // libuv thread pool) overlap with decoding on the main thread.
    const pending: Array<Promise<tf.Tensor>> = [];
    let started = 0;
    const startReads = (): void => {
      while (started < entries.length && pending.length < READ_AHEAD) {
        const read = this.decodeEntry(entries[started] as SafetensorsEntry, regions[started], options.dtype);
        // A read ahead can fail before the loop awaits it, so mark it handled now. The loop
        // still gets the error when it awaits, and Node reports no unhandled rejection.
        read.catch(() => undefined);
        pending.push(read);
        started += 1;
      }
    };
    try {
      startReads();
      for (const entry of entries) {
        const current = pending.shift() as Promise<tf.Tensor>;
        startReads();
        tensors[entry.name] = await current;
      }
      return tensors;
    } catch (error) {
      // Let the reads in flight finish before the caller closes the file, and release every tensor.
      await Promise.all(pending.map((read) => read.then((tensor) => tensor.dispose(), () => undefined)));
      tf.dispose(Object.values(tensors));
      throw error;
    }
  }

  /**
   * Reads and decodes one tensor, into `region` when given (float dtypes only) or a new buffer.
   * F16 and BF16 bytes go into the upper half of the float32 output and are widened in place.
   */
  private async decodeEntry(entry: SafetensorsEntry, region: Uint8Array | undefined, cast: DecodedDtype | undefined): Promise<tf.Tensor> {
    const [start, end] = entry.dataOffsets;
    const position = this.header.dataStart + start;
    const shape = [...entry.shape];

    if (entry.dtype === 'BF16' || entry.dtype === 'F16') {
      const output = region ?? new Uint8Array(2 * (end - start));
      await readRangeInto(this.handle, position, output.subarray(end - start), this.path);
      return toTensor({ dtype: 'float32', values: widenHalfInPlace(entry.dtype, output) }, shape, cast);
    }
    if (entry.dtype === 'F32' && region !== undefined) {
      await readRangeInto(this.handle, position, region, this.path);
      return toTensor({ dtype: 'float32', values: float32InPlace(region) }, shape, cast);
    }

    const data = await readRange(this.handle, position, end - start, this.path);
    return toTensor(decodeTensorBytes(entry.dtype, data, entry.name, this.path), shape, cast);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

class InMemorySafetensors implements SafetensorsBuffer {
  readonly metadata: Record<string, string>;
  readonly entries: readonly SafetensorsEntry[];
  private readonly byName: Map<string, SafetensorsEntry>;

  constructor(
    private readonly source: string,
    private readonly bytes: Uint8Array,
    private readonly header: SafetensorsHeader,
  ) {
    this.metadata = header.metadata;
    this.entries = header.entries;
    this.byName = new Map(header.entries.map((entry) => [entry.name, entry]));
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  entry(name: string): SafetensorsEntry {
    return lookupEntry(this.byName, name, this.source);
  }

  readRaw(name: string): RawTensor {
    const entry = this.entry(name);
    const [start, end] = entry.dataOffsets;
    const offset = this.header.dataStart;
    // slice() copies into a new buffer at offset 0, so typed-array views over it are aligned
    // even when the data starts at an odd file offset.
    const data = this.bytes.slice(offset + start, offset + end);
    return { dtype: entry.dtype, shape: [...entry.shape], data };
  }

  readTensor(name: string, options: ReadTensorOptions = {}): tf.Tensor {
    const raw = this.readRaw(name);
    return toTensor(decodeTensorBytes(raw.dtype, raw.data, name, this.source), raw.shape, options.dtype);
  }
}

function lookupEntry(byName: Map<string, SafetensorsEntry>, name: string, source: string): SafetensorsEntry {
  const entry = byName.get(name);
  if (entry === undefined) {
    const names = [...byName.keys()];
    const listed = names.slice(0, 10).join(', ') + (names.length > 10 ? `, and ${names.length - 10} more` : '');
    throw new FileFormatError(
      'SAFETENSORS_TENSOR_NOT_FOUND',
      `Tensor "${name}" not found in ${source}. The file has ${names.length} tensors: ${listed || '(none)'}.`,
      { details: { source, tensor: name } },
    );
  }
  return entry;
}

function toTensor(decoded: DecodedValues, shape: number[], cast: DecodedDtype | undefined): tf.Tensor {
  const tensor = tf.tensor(decoded.values, shape, decoded.dtype);
  if (cast === undefined || cast === decoded.dtype) {
    return tensor;
  }
  const converted = tf.cast(tensor, cast);
  tensor.dispose();
  return converted;
}

async function openForReading(filePath: string): Promise<fs.FileHandle> {
  try {
    return await fs.open(filePath, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new FileFormatError('SAFETENSORS_FILE_NOT_FOUND', `safetensors file not found: ${filePath}.`, {
        cause: error,
        details: { path: filePath },
      });
    }
    throw new FileFormatError('SAFETENSORS_READ_FAILED', `Failed to open ${filePath}: ${(error as Error).message}.`, {
      cause: error,
      details: { path: filePath, errno: code },
    });
  }
}

/** Reads `length` bytes at `position` into a new buffer that starts at offset 0 of its ArrayBuffer. */
async function readRange(handle: fs.FileHandle, position: number, length: number, filePath: string): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  await readRangeInto(handle, position, bytes, filePath);
  return bytes;
}

/** Fills `bytes` from the file, starting at `position`, in reads of at most 64 MiB. */
async function readRangeInto(handle: fs.FileHandle, position: number, bytes: Uint8Array, filePath: string): Promise<void> {
  const length = bytes.length;
  let done = 0;
  while (done < length) {
    const step = Math.min(READ_CHUNK_BYTES, length - done);
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(bytes, done, step, position + done));
    } catch (error) {
      throw new FileFormatError('SAFETENSORS_READ_FAILED', `Failed to read ${filePath}: ${(error as Error).message}.`, {
        cause: error,
        details: { path: filePath, position: position + done },
      });
    }
    if (bytesRead === 0) {
      throw new FileFormatError(
        'SAFETENSORS_READ_FAILED',
        `Failed to read ${filePath}: the file ended at byte ${position + done}, before byte ${position + length}. ` +
          'It was truncated after it was opened.',
        { details: { path: filePath, position: position + done, expectedEnd: position + length } },
      );
    }
    done += bytesRead;
  }
}

interface LayoutItem {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  byteLength: number;
  source: tf.Tensor | RawTensor;
}

interface Layout {
  /** The 8-byte length and the padded header. */
  prefix: Uint8Array;
  items: LayoutItem[];
  totalBytes: number;
}

function planLayout(tensors: Record<string, tf.Tensor | RawTensor>, options: WriteSafetensorsOptions): Layout {
  const floatDtype = options.dtype ?? 'F32';
  if (floatDtype !== 'F32' && floatDtype !== 'F16' && floatDtype !== 'BF16') {
    throw new ArgumentError('SAFETENSORS_WRITE_DTYPE_INVALID', `Invalid write dtype ${JSON.stringify(floatDtype)}: use F32, F16 or BF16.`, {
      details: { dtype: floatDtype },
    });
  }

  const items = Object.entries(tensors).map(([name, source]) => planItem(name, source, floatDtype));
  items.sort(compareLayoutOrder);

  // No prototype, so a tensor named "__proto__" becomes a key of the JSON header.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  const metadata = checkMetadata(options.metadata);
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const item of items) {
    header[item.name] = { dtype: item.dtype, shape: item.shape, data_offsets: [offset, offset + item.byteLength] };
    offset += item.byteLength;
  }

  const json = new TextEncoder().encode(JSON.stringify(header));
  const paddedLength = Math.ceil(json.length / 8) * 8;
  const prefix = new Uint8Array(HEADER_LENGTH_BYTES + paddedLength).fill(0x20);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(paddedLength), true);
  prefix.set(json, HEADER_LENGTH_BYTES);

  return { prefix, items, totalBytes: prefix.length + offset };
}

/** Orders tensors by element size, largest first, then by name in code-unit order. */
function compareLayoutOrder(a: LayoutItem, b: LayoutItem): number {
  const bySize = DTYPE_BITS[b.dtype] - DTYPE_BITS[a.dtype];
  if (bySize !== 0) return bySize;
  if (a.name === b.name) return 0;
  return a.name < b.name ? -1 : 1;
}

function planItem(name: string, source: tf.Tensor | RawTensor, floatDtype: FloatWriteDtype): LayoutItem {
  if (name === '__metadata__') {
    throw new ArgumentError(
      'SAFETENSORS_RESERVED_NAME',
      'Cannot write a tensor named "__metadata__": the name is reserved for the metadata map. Rename the tensor.',
      { details: { tensor: name } },
    );
  }

  if (!isRawTensor(source)) {
    if (source.isDisposed) {
      throw new ArgumentError(
        'SAFETENSORS_TENSOR_DISPOSED',
        `Cannot write tensor "${name}": it has been disposed. Write tensors before disposing them, or pass a clone.`,
        { details: { tensor: name } },
      );
    }
    const dtype = storageDtype(name, source.dtype, floatDtype);
    return { name, dtype, shape: [...source.shape], byteLength: (source.size * DTYPE_BITS[dtype]) / 8, source };
  }

  const raw = source;
  if (!isSafetensorsDtype(raw.dtype)) {
    throw new ArgumentError('SAFETENSORS_WRITE_DTYPE_INVALID', `Cannot write tensor "${name}": unknown dtype ${JSON.stringify(raw.dtype)}.`, {
      details: { tensor: name, dtype: raw.dtype },
    });
  }
  if (!Array.isArray(raw.shape) || !raw.shape.every((dimension) => Number.isSafeInteger(dimension) && dimension >= 0)) {
    throw new ArgumentError(
      'SAFETENSORS_WRITE_SHAPE_INVALID',
      `Cannot write tensor "${name}": shape ${JSON.stringify(raw.shape)} is not an array of non-negative integers.`,
      { details: { tensor: name, shape: raw.shape } },
    );
  }
  const bits = raw.shape.reduce((product, dimension) => product * dimension, 1) * DTYPE_BITS[raw.dtype];
  if (bits % 8 !== 0 || raw.data.length !== bits / 8) {
    throw new ArgumentError(
      'SAFETENSORS_WRITE_SIZE_MISMATCH',
      `Cannot write tensor "${name}": ${raw.dtype} [${raw.shape.join(', ')}] takes ${bits / 8} bytes, ` +
        `but its data has ${raw.data.length} bytes.`,
      { details: { tensor: name, dtype: raw.dtype, shape: raw.shape, expectedBytes: bits / 8, actualBytes: raw.data.length } },
    );
  }
  return { name, dtype: raw.dtype, shape: [...raw.shape], byteLength: raw.data.length, source: raw };
}

function storageDtype(name: string, dtype: tf.DataType, floatDtype: FloatWriteDtype): SafetensorsDtype {
  switch (dtype) {
    case 'float32':
      return floatDtype;
    case 'int32':
      return 'I32';
    case 'bool':
      return 'BOOL';
    default:
      throw new ArgumentError(
        'SAFETENSORS_WRITE_DTYPE_INVALID',
        `Cannot write tensor "${name}": tfjs dtype ${dtype} has no safetensors counterpart here. ` +
          'Write float32, int32 or bool tensors, or pass the bytes as a RawTensor.',
        { details: { tensor: name, dtype } },
      );
  }
}

function checkMetadata(metadata: Record<string, string> | undefined): Record<string, string> | undefined {
  if (metadata === undefined) return undefined;
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') {
      throw new ArgumentError(
        'SAFETENSORS_METADATA_NOT_STRING',
        `Cannot write metadata key "${key}": its value is a ${typeof value}, but safetensors metadata values ` +
          'must be strings. Convert it, for example with JSON.stringify.',
        { details: { key, type: typeof value } },
      );
    }
  }
  return metadata;
}

async function encodeItem(item: LayoutItem): Promise<Uint8Array> {
  if (isRawTensor(item.source)) return item.source.data;
  const values = await item.source.data();
  return encodeTensorValues(values as Float32Array | Int32Array | Uint8Array, item.dtype);
}

function encodeItemSync(item: LayoutItem): Uint8Array {
  if (isRawTensor(item.source)) return item.source.data;
  return encodeTensorValues(item.source.dataSync() as Float32Array | Int32Array | Uint8Array, item.dtype);
}

/** Tells a RawTensor from a tfjs tensor, whose `data` is a method rather than bytes. */
function isRawTensor(value: tf.Tensor | RawTensor): value is RawTensor {
  return (value as RawTensor).data instanceof Uint8Array;
}

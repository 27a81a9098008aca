/**
 * Conversion between safetensors tensor bytes (little-endian, C order) and tfjs tensor values.
 *
 * tfjs has only float32, int32 and bool tensors for numeric data, so reading maps every dtype onto
 * one of them:
 * - F32 is read as is; F16 and BF16 are widened to float32 exactly.
 * - F64 is narrowed to float32 with round-to-nearest, which loses precision and turns values
 *   beyond the float32 range into infinities.
 * - I8, U8, I16, U16 and I32 become int32 exactly. U32, I64 and U64 become int32 when every value
 *   lies in [-2^31, 2^31 - 1]; any value outside is an error, never a silent wrap.
 * - BOOL becomes a bool tensor; any non-zero byte is true.
 * - F8, F6, F4 and C64 have no tfjs counterpart and can only be read as raw bytes.
 */
import { FileFormatError } from '../errors.js';
import { DTYPE_BITS, f16LookupTable, float32BitsToBf16, float32BitsToF16, type SafetensorsDtype } from './dtypes.js';
import type { SafetensorsEntry } from './safetensors-header.js';

/** A tfjs dtype that safetensors data can be decoded to. */
export type DecodedDtype = 'float32' | 'int32' | 'bool';

/** Decoded tensor values in the array type tfjs takes for their dtype. */
export type DecodedValues =
  | { dtype: 'float32'; values: Float32Array }
  | { dtype: 'int32'; values: Int32Array }
  | { dtype: 'bool'; values: Uint8Array };

/** The dtypes a float32 tfjs tensor can be written as. */
export type FloatWriteDtype = 'F32' | 'F16' | 'BF16';

/**
 * Largest memory block that `SafetensorsFile.readTensors` shares between float tensors. V8
 * collects garbage as external memory grows, so 50 BF16 tensors read into a buffer each (8 MiB
 * as float32) took 1.7 times as long as into one block, measured with tfjs loaded.
 */
const SHARED_BLOCK_BYTES = 2 ** 30;

/**
 * Assigns each F32, F16 and BF16 entry a 4-byte-aligned float32 region in shared blocks of at most
 * `limitBytes`. A bigger entry gets a block of its own, and other dtypes get no region.
 */
export function sharedRegions(
  entries: readonly SafetensorsEntry[],
  limitBytes = SHARED_BLOCK_BYTES,
): Array<Uint8Array | undefined> {
  const sizes = entries.map((entry) => {
    if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') return undefined;
    const [start, end] = entry.dataOffsets;
    return ((end - start) * 32) / DTYPE_BITS[entry.dtype];
  });

  const regions: Array<Uint8Array | undefined> = new Array(entries.length).fill(undefined);
  let members: number[] = [];
  let blockBytes = 0;
  const closeBlock = (): void => {
    const block = new ArrayBuffer(blockBytes);
    let offset = 0;
    for (const index of members) {
      const size = sizes[index] as number;
      regions[index] = new Uint8Array(block, offset, size);
      offset += size;
    }
    members = [];
    blockBytes = 0;
  };

  sizes.forEach((size, index) => {
    if (size === undefined) return;
    if (members.length > 0 && blockBytes + size > limitBytes) closeBlock();
    members.push(index);
    blockBytes += size;
  });
  if (members.length > 0) closeBlock();
  return regions;
}

/** Whether this machine stores multi-byte numbers little-endian, as safetensors does. */
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Decodes one tensor's bytes. Pass a fresh copy that starts at offset 0 of its ArrayBuffer: the
 * decoded values may be views of it (F32, I32), so typed-array views are aligned and never see a
 * misaligned file offset. Any other input is copied first.
 */
export function decodeTensorBytes(
  dtype: SafetensorsDtype,
  input: Uint8Array,
  tensorName: string,
  source: string,
): DecodedValues {
  const bytes = input.byteOffset === 0 ? input : input.slice();
  const buffer = bytes.buffer;

  switch (dtype) {
    case 'F32':
      swapToHostOrder(bytes, 4);
      return { dtype: 'float32', values: new Float32Array(buffer, 0, bytes.length / 4) };
    case 'F16':
    case 'BF16': {
      const region = new Uint8Array(2 * bytes.length);
      region.set(bytes, bytes.length);
      return { dtype: 'float32', values: widenHalfInPlace(dtype, region) };
    }
    case 'F64':
      swapToHostOrder(bytes, 8);
      return { dtype: 'float32', values: Float32Array.from(new Float64Array(buffer, 0, bytes.length / 8)) };
    case 'I32':
      swapToHostOrder(bytes, 4);
      return { dtype: 'int32', values: new Int32Array(buffer, 0, bytes.length / 4) };
    case 'I16':
      swapToHostOrder(bytes, 2);
      return { dtype: 'int32', values: Int32Array.from(new Int16Array(buffer, 0, bytes.length / 2)) };
    case 'U16':
      swapToHostOrder(bytes, 2);
      return { dtype: 'int32', values: Int32Array.from(new Uint16Array(buffer, 0, bytes.length / 2)) };
    case 'I8':
      return { dtype: 'int32', values: Int32Array.from(new Int8Array(buffer, 0, bytes.length)) };
    case 'U8':
      return { dtype: 'int32', values: Int32Array.from(bytes) };
    case 'BOOL':
      return { dtype: 'bool', values: bytes.map((byte) => (byte === 0 ? 0 : 1)) };
    case 'U32':
      swapToHostOrder(bytes, 4);
      return { dtype: 'int32', values: narrowUint32(new Uint32Array(buffer, 0, bytes.length / 4), tensorName, source) };
    case 'I64':
    case 'U64':
      swapToHostOrder(bytes, 8);
      return { dtype: 'int32', values: narrowInt64(bytes, dtype, tensorName, source) };
    default:
      throw new FileFormatError(
        'SAFETENSORS_DTYPE_UNSUPPORTED',
        `Cannot decode tensor "${tensorName}" of ${source}: dtype ${dtype} has no tfjs counterpart. ` +
          'Read its bytes with readRaw, or convert the file to F32, F16 or BF16.',
        { details: { source, tensor: tensorName, dtype } },
      );
  }
}

/**
 * Views `region` as float32 values, after putting them in host byte order. `region` must start at
 * a multiple of 4 bytes of its buffer.
 */
export function float32InPlace(region: Uint8Array): Float32Array {
  swapToHostOrder(region, 4);
  return new Float32Array(region.buffer, region.byteOffset, region.length / 4);
}

/**
 * Widens the F16 or BF16 values stored in the upper half of `region` (4 bytes per element, 4-byte
 * aligned) to float32 over the whole region. Going forwards is safe: element i writes 2-byte slots
 * 2i and 2i + 1, which are below slot `elementCount + i + 1`, the next one still to read.
 */
export function widenHalfInPlace(dtype: 'F16' | 'BF16', region: Uint8Array): Float32Array {
  const elementCount = region.length / 4;
  const { buffer, byteOffset } = region;
  if (!HOST_IS_LITTLE_ENDIAN) swapToHostOrder(region.subarray(2 * elementCount), 2);
  const values = new Float32Array(buffer, byteOffset, elementCount);

  if (dtype === 'BF16') {
    const words = new Uint32Array(buffer, byteOffset, elementCount);
    if (elementCount % 2 === 0) {
      widenBf16Pairs(words, elementCount >>> 1);
    } else {
      // The staged values start at a 2-byte offset that is not 4-byte aligned: go one at a time.
      const halves = new Uint16Array(buffer, byteOffset, 2 * elementCount);
      for (let index = 0; index < elementCount; index += 1) {
        words[index] = (halves[elementCount + index] as number) << 16;
      }
    }
    return values;
  }

  const halves = new Uint16Array(buffer, byteOffset, 2 * elementCount);
  const table = f16LookupTable();
  for (let index = 0; index < elementCount; index += 1) {
    values[index] = table[halves[elementCount + index] as number] as number;
  }
  return values;
}

/**
 * Widens the `2 * pairs` bfloat16 values in the upper half of `words`: each becomes the upper 16
 * bits of a float32. A word contains two values, the first in its low half (little-endian).
 */
function widenBf16Pairs(words: Uint32Array, pairs: number): void {
  let pair = 0;
  for (; pair + 4 <= pairs; pair += 4) {
    const a = words[pairs + pair] as number;
    const b = words[pairs + pair + 1] as number;
    const c = words[pairs + pair + 2] as number;
    const d = words[pairs + pair + 3] as number;
    const out = 2 * pair;
    words[out] = a << 16;
    words[out + 1] = a & 0xffff0000;
    words[out + 2] = b << 16;
    words[out + 3] = b & 0xffff0000;
    words[out + 4] = c << 16;
    words[out + 5] = c & 0xffff0000;
    words[out + 6] = d << 16;
    words[out + 7] = d & 0xffff0000;
  }
  for (; pair < pairs; pair += 1) {
    const word = words[pairs + pair] as number;
    words[2 * pair] = word << 16;
    words[2 * pair + 1] = word & 0xffff0000;
  }
}

function narrowUint32(words: Uint32Array, tensorName: string, source: string): Int32Array {
  const values = new Int32Array(words.length);
  for (let index = 0; index < words.length; index += 1) {
    const value = words[index] as number;
    if (value > 0x7fffffff) {
      throw integerRangeError('U32', value.toString(), index, tensorName, source);
    }
    values[index] = value;
  }
  return values;
}

/**
 * Narrows 64-bit integers to int32. A signed value fits when its high word is the sign extension
 * of its low word. An unsigned one fits when its high word is 0 and its low word is below 2^31.
 */
function narrowInt64(bytes: Uint8Array, dtype: 'I64' | 'U64', tensorName: string, source: string): Int32Array {
  const words = new Int32Array(bytes.buffer, 0, bytes.length / 4);
  const count = words.length / 2;
  const values = new Int32Array(count);

  for (let index = 0; index < count; index += 1) {
    const low = words[2 * index] as number;
    const high = words[2 * index + 1] as number;
    const fits = dtype === 'I64' ? high === low >> 31 : high === 0 && low >= 0;
    if (!fits) {
      const view = new DataView(bytes.buffer, 8 * index, 8);
      const value = dtype === 'I64' ? view.getBigInt64(0, HOST_IS_LITTLE_ENDIAN) : view.getBigUint64(0, HOST_IS_LITTLE_ENDIAN);
      throw integerRangeError(dtype, value.toString(), index, tensorName, source);
    }
    values[index] = low;
  }
  return values;
}

function integerRangeError(dtype: string, value: string, index: number, tensorName: string, source: string): FileFormatError {
  return new FileFormatError(
    'SAFETENSORS_INTEGER_OUT_OF_RANGE',
    `Cannot read tensor "${tensorName}" of ${source}: element ${index} is ${value}, which does not fit ` +
      `the int32 tensors of tfjs (range -2147483648 to 2147483647, source dtype ${dtype}). ` +
      'Read its bytes with readRaw instead.',
    { details: { source, tensor: tensorName, dtype, index, value } },
  );
}

/**
 * Encodes float32, int32 or bool tensor values as little-endian safetensors bytes. The result may
 * share memory with `values` (F32 and I32 on little-endian machines), so write it out before the
 * values change.
 */
export function encodeTensorValues(
  values: Float32Array | Int32Array | Uint8Array,
  target: SafetensorsDtype,
): Uint8Array {
  if (target === 'BOOL') {
    return (values as Uint8Array).map((value) => (value === 0 ? 0 : 1));
  }
  if (target === 'F32' || target === 'I32') {
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    return HOST_IS_LITTLE_ENDIAN ? bytes : swapped(bytes, 4);
  }

  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const narrow = target === 'BF16' ? float32BitsToBf16 : float32BitsToF16;
  const halves = new Uint16Array(values.length);
  for (let index = 0; index < halves.length; index += 1) {
    halves[index] = narrow(bits[index] as number);
  }
  const bytes = new Uint8Array(halves.buffer);
  if (!HOST_IS_LITTLE_ENDIAN) swapToHostOrder(bytes, 2);
  return bytes;
}

/** Reverses the bytes of every `width`-byte element in place on big-endian machines. */
function swapToHostOrder(bytes: Uint8Array, width: number): void {
  if (HOST_IS_LITTLE_ENDIAN) return;
  for (let start = 0; start + width <= bytes.length; start += width) {
    bytes.subarray(start, start + width).reverse();
  }
}

function swapped(bytes: Uint8Array, width: number): Uint8Array {
  const copy = bytes.slice();
  for (let start = 0; start + width <= copy.length; start += width) {
    copy.subarray(start, start + width).reverse();
  }
  return copy;
}

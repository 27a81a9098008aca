import * as tf from '@tensorflow/tfjs';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, afterEach, describe, expect, it } from 'vitest';

import {
  ArgumentError,
  bf16ToF32,
  encodeSafetensors,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  FileFormatError,
  NestedLearningError,
  openSafetensors,
  parseSafetensors,
  readSafetensors,
  writeSafetensors,
  type RawTensor,
  type SafetensorsEntry,
} from '../src/index.js';
import { sharedRegions } from '../src/io/safetensors-codec.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'safetensors');

/** Builds a safetensors file from header text (used verbatim) and data bytes. */
function buildFile(headerText: string, data: Uint8Array | number[] = [], headerLength?: bigint): Uint8Array {
  const header = new TextEncoder().encode(headerText);
  const bytes = new Uint8Array(8 + header.length + data.length);
  new DataView(bytes.buffer).setBigUint64(0, headerLength ?? BigInt(header.length), true);
  bytes.set(header, 8);
  bytes.set(data, 8 + header.length);
  return bytes;
}

function f32Bytes(values: number[]): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((value, index) => view.setFloat32(index * 4, value, true));
  return bytes;
}

function u16Bytes(values: number[]): Uint8Array {
  const bytes = new Uint8Array(values.length * 2);
  const view = new DataView(bytes.buffer);
  values.forEach((value, index) => view.setUint16(index * 2, value, true));
  return bytes;
}

/** Returns the error thrown by `action`, or fails when nothing is thrown. */
function thrown(action: () => unknown): NestedLearningError {
  try {
    action();
  } catch (error) {
    if (!NestedLearningError.isInstance(error)) throw error;
    return error;
  }
  throw new Error('expected an error, but none was thrown');
}

async function thrownAsync(action: () => Promise<unknown>): Promise<NestedLearningError> {
  try {
    await action();
  } catch (error) {
    if (!NestedLearningError.isInstance(error)) throw error;
    return error;
  }
  throw new Error('expected an error, but none was thrown');
}

let tmpDir: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'safetensors-test-'));
});

afterAll(async () => {
  await fs.rm(tmpDir, { recursive: true, force: true });
});

let tensorsBefore = 0;
beforeEach(() => {
  tensorsBefore = tf.memory().numTensors;
});
afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsBefore);
});

describe('safetensors header rules', () => {
  it('rejects a file under 8 bytes', () => {
    const error = thrown(() => parseSafetensors(new Uint8Array(5)));
    expect(error).toBeInstanceOf(FileFormatError);
    expect(error.code).toBe('SAFETENSORS_HEADER_TOO_SMALL');
    expect(error.message).toContain('5 bytes');
  });

  it('rejects a header length of 2^40 in a 100-byte file', async () => {
    const bytes = new Uint8Array(100).fill(0x20);
    new DataView(bytes.buffer).setBigUint64(0, 2n ** 40n, true);
    const filePath = path.join(tmpDir, 'huge-length.safetensors');
    await fs.writeFile(filePath, bytes);

    const error = await thrownAsync(() => openSafetensors(filePath));
    expect(error.code).toBe('SAFETENSORS_HEADER_TOO_LARGE');
    expect(error.message).toContain('1099511627776');
    expect(error.message).toContain('100000000');
    expect(thrown(() => parseSafetensors(bytes)).code).toBe('SAFETENSORS_HEADER_TOO_LARGE');
  });

  it('rejects a header length one over the limit', () => {
    const bytes = buildFile('{}', [], 100_000_001n);
    expect(thrown(() => parseSafetensors(bytes)).code).toBe('SAFETENSORS_HEADER_TOO_LARGE');
  });

  it('rejects a header length past the end', () => {
    const bytes = new Uint8Array(100).fill(0x20);
    new DataView(bytes.buffer).setBigUint64(0, 200n, true);
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_HEADER_LENGTH_INVALID');
    expect(error.message).toContain('200 bytes');
    expect(error.message).toContain('only 92 bytes');
  });

  it('rejects a header that is not UTF-8', () => {
    const bytes = buildFile('{"a":1}');
    bytes[10] = 0xff;
    expect(thrown(() => parseSafetensors(bytes)).code).toBe('SAFETENSORS_HEADER_NOT_UTF8');
  });

  it('rejects a header that is not JSON', () => {
    expect(thrown(() => parseSafetensors(buildFile('{"a": '))).code).toBe('SAFETENSORS_HEADER_INVALID_JSON');
  });

  it('rejects a header that is not an object', () => {
    const error = thrown(() => parseSafetensors(buildFile('[1, 2]')));
    expect(error.code).toBe('SAFETENSORS_HEADER_NOT_OBJECT');
    expect(error.message).toContain('array');
  });

  it('rejects the same name twice', () => {
    const entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
    const bytes = buildFile(`{"w":${entry},"w":${entry}}`, f32Bytes([1]));
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_DUPLICATE_KEY');
    expect(error.message).toContain('"w"');
    expect(error.details.key).toBe('w');
  });

  it('rejects a duplicate spelled with an escape', () => {
    const bytes = buildFile(
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\\u0061":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
      f32Bytes([1, 2]),
    );
    expect(thrown(() => parseSafetensors(bytes)).code).toBe('SAFETENSORS_DUPLICATE_KEY');
  });

  it('rejects a duplicate field inside an entry', () => {
    const bytes = buildFile('{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32Bytes([1]));
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_DUPLICATE_KEY');
    expect(error.message).toContain('the entry "w"');
  });

  it('accepts equal keys in different entries', () => {
    const bytes = buildFile(
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
      f32Bytes([1, 2]),
    );
    expect(parseSafetensors(bytes).entries.map((entry) => entry.name)).toEqual(['a', 'b']);
  });

  it('rejects metadata with a non-string value', () => {
    const error = thrown(() => parseSafetensors(buildFile('{"__metadata__":{"step":3}}')));
    expect(error.code).toBe('SAFETENSORS_METADATA_INVALID');
    expect(error.message).toContain('"step"');
  });

  it('rejects metadata that is an array', () => {
    expect(thrown(() => parseSafetensors(buildFile('{"__metadata__":["a"]}'))).code).toBe('SAFETENSORS_METADATA_INVALID');
  });

  it('accepts null metadata', () => {
    expect(parseSafetensors(buildFile('{"__metadata__":null}')).metadata).toEqual({});
  });

  it('rejects an entry that is not an object', () => {
    const error = thrown(() => parseSafetensors(buildFile('{"w":[1,2]}')));
    expect(error.code).toBe('SAFETENSORS_ENTRY_INVALID');
    expect(error.message).toContain('"w"');
  });

  it('rejects an unknown dtype', () => {
    const error = thrown(() => parseSafetensors(buildFile('{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', new Uint8Array(16))));
    expect(error.code).toBe('SAFETENSORS_DTYPE_UNKNOWN');
    expect(error.message).toContain('"F128"');
    expect(error.message).toContain('BF16');
  });

  it.each([
    ['negative', '[-1]'],
    ['fractional', '[1.5]'],
    ['string', '["2"]'],
    ['missing', 'null'],
  ])('rejects a %s shape', (_label, shape) => {
    const bytes = buildFile(`{"w":{"dtype":"F32","shape":${shape},"data_offsets":[0,4]}}`, f32Bytes([1]));
    expect(thrown(() => parseSafetensors(bytes)).code).toBe('SAFETENSORS_SHAPE_INVALID');
  });

  it.each([
    ['one number', '[0]'],
    ['three numbers', '[0,4,8]'],
    ['end before start', '[4,0]'],
    ['negative start', '[-4,0]'],
    ['fraction', '[0,4.5]'],
    ['above 2^53', '[0,18446744073709551616]'],
  ])('rejects data_offsets with %s', (_label, offsets) => {
    const bytes = buildFile(`{"w":{"dtype":"F32","shape":[1],"data_offsets":${offsets}}}`, f32Bytes([1]));
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_OFFSETS_INVALID');
    expect(error.message).toContain('"w"');
  });

  it('rejects F32 [1000, 1000] with 4 data bytes', () => {
    const bytes = buildFile('{"big":{"dtype":"F32","shape":[1000,1000],"data_offsets":[0,4]}}', f32Bytes([1]));
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_SIZE_MISMATCH');
    expect(error.message).toContain('"big"');
    expect(error.message).toContain('F32 [1000, 1000]');
    // 1000 * 1000 elements * 4 bytes = 4,000,000 bytes expected; the offsets span 4.
    expect(error.message).toContain('needs 4000000 bytes');
    expect(error.message).toContain('span 4 bytes');
  });

  it('rejects a size that overflows 64 bits', () => {
    const dimension = Number.MAX_SAFE_INTEGER;
    const bytes = buildFile(`{"w":{"dtype":"F64","shape":[${dimension},${dimension}],"data_offsets":[0,8]}}`, new Uint8Array(8));
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_SIZE_OVERFLOW');
    expect(error.message).toContain('"w"');
  });

  it('rejects a sub-byte size', () => {
    // F4 is 4 bits per element: 3 elements take 12 bits, not a whole number of bytes.
    const bytes = buildFile('{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', new Uint8Array(2));
    expect(thrown(() => parseSafetensors(bytes)).code).toBe('SAFETENSORS_SIZE_NOT_WHOLE_BYTES');
  });

  it('rejects a gap between tensors', () => {
    const bytes = buildFile(
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}',
      new Uint8Array(12),
    );
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_DATA_GAP');
    expect(error.message).toContain('"b" starts at data byte 8');
    expect(error.message).toContain('gap of 4 bytes');
  });

  it('rejects a first tensor after byte 0', () => {
    const bytes = buildFile('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', new Uint8Array(8));
    expect(thrown(() => parseSafetensors(bytes)).code).toBe('SAFETENSORS_DATA_GAP');
  });

  it('rejects overlapping tensors', () => {
    const bytes = buildFile(
      '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
      new Uint8Array(8),
    );
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_DATA_OVERLAP');
    expect(error.message).toContain('"b"');
    expect(error.message).toContain('"a"');
  });

  it('rejects bytes after the last tensor', () => {
    const bytes = buildFile('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(6));
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_DATA_TRAILING_BYTES');
    expect(error.message).toContain('2 bytes after tensor "a"');
  });

  it('rejects data bytes with no tensors', () => {
    expect(thrown(() => parseSafetensors(buildFile('{}', [1, 2]))).code).toBe('SAFETENSORS_DATA_TRAILING_BYTES');
  });

  it('rejects a tensor past the end', () => {
    const bytes = buildFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', new Uint8Array(4));
    const error = thrown(() => parseSafetensors(bytes));
    expect(error.code).toBe('SAFETENSORS_DATA_TRUNCATED');
    expect(error.message).toContain('ends at data byte 8');
    expect(error.message).toContain('only 4 bytes');
  });

  it('accepts an empty file body', () => {
    const file = parseSafetensors(buildFile('{}'));
    expect(file.entries).toEqual([]);
    expect(file.metadata).toEqual({});
  });

  it('reports a missing tensor by name', () => {
    const file = parseSafetensors(buildFile('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32Bytes([1])));
    const error = thrown(() => file.readTensor('b'));
    expect(error.code).toBe('SAFETENSORS_TENSOR_NOT_FOUND');
    expect(error.message).toContain('"b"');
    expect(error.message).toContain('a');
  });

  it('reports a missing file', async () => {
    const error = await thrownAsync(() => openSafetensors(path.join(tmpDir, 'absent.safetensors')));
    expect(error.code).toBe('SAFETENSORS_FILE_NOT_FOUND');
  });
});

describe('safetensors hand-made inputs', () => {
  it('reads [0, 4], [0] and a scalar', () => {
    const bytes = buildFile(
      '{"empty2d":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},' +
        '"empty1d":{"dtype":"I32","shape":[0],"data_offsets":[0,0]},' +
        '"scalar":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}',
      f32Bytes([2.5]),
    );
    const file = parseSafetensors(bytes);

    const empty2d = file.readTensor('empty2d');
    const empty1d = file.readTensor('empty1d');
    const scalar = file.readTensor('scalar');
    expect(empty2d.shape).toEqual([0, 4]);
    expect(empty2d.dtype).toBe('float32');
    expect(empty1d.shape).toEqual([0]);
    expect(empty1d.dtype).toBe('int32');
    expect(scalar.shape).toEqual([]);
    expect(scalar.dataSync()[0]).toBe(2.5);
    tf.dispose([empty2d, empty1d, scalar]);
  });

  it('reads data that starts at byte 83', () => {
    // 8 length bytes + a 75-byte header: the data starts at an odd offset, where a Float32Array
    // view over the file's buffer would throw RangeError.
    const text = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    const header = text + ' '.repeat(75 - text.length);
    const file = parseSafetensors(buildFile(header, f32Bytes([1.5, -2])));
    expect(header.length).toBe(75);

    const w = file.readTensor('w');
    expect(Array.from(w.dataSync())).toEqual([1.5, -2]);
    w.dispose();
  });

  it('reads odd-offset data from disk', async () => {
    const header = ' '.repeat(21) + '{"w":{"dtype":"F16","shape":[3],"data_offsets":[0,6]}}';
    const filePath = path.join(tmpDir, 'odd-offset.safetensors');
    await fs.writeFile(filePath, buildFile(header, u16Bytes([0x3c00, 0xc000, 0x0001])));
    expect((8 + header.length) % 2).toBe(1);

    const { tensors } = await readSafetensors(filePath);
    expect(Array.from(tensors.w?.dataSync() ?? [])).toEqual([1, -2, Math.fround(2 ** -24)]);
    tf.dispose(Object.values(tensors));
  });

  it('accepts five trailing spaces', () => {
    const bytes = buildFile('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}     ', f32Bytes([7]));
    const file = parseSafetensors(bytes);
    const tensor = file.readTensor('w');
    expect(tensor.dataSync()[0]).toBe(7);
    tensor.dispose();
  });

  it('decodes F16 0x0001, 0x3C00, 0x7C00, 0x7E00', () => {
    const bytes = buildFile('{"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}', u16Bytes([0x0001, 0x3c00, 0x7c00, 0x7e00]));
    const tensor = parseSafetensors(bytes).readTensor('h');
    const values = tensor.dataSync();
    // 0x0001 is the smallest subnormal, 2^-24 = 5.9604645e-8.
    expect(values[0]).toBe(2 ** -24);
    expect(values[0]).toBeCloseTo(5.9604645e-8, 14);
    expect(values[1]).toBe(1);
    expect(values[2]).toBe(Infinity);
    expect(Number.isNaN(values[3])).toBe(true);
    tensor.dispose();
  });

  it('rejects I64 outside int32', () => {
    const data = new Uint8Array(16);
    const view = new DataView(data.buffer);
    view.setBigInt64(0, -5n, true);
    view.setBigInt64(8, 2n ** 31n, true);
    const file = parseSafetensors(buildFile('{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}', data));
    const error = thrown(() => file.readTensor('ids'));
    expect(error.code).toBe('SAFETENSORS_INTEGER_OUT_OF_RANGE');
    expect(error.message).toContain('element 1 is 2147483648');
    expect(error.message).toContain('"ids"');
  });

  it('rejects U64 and U32 above int32', () => {
    const u64 = new Uint8Array(8);
    new DataView(u64.buffer).setBigUint64(0, 2n ** 63n, true);
    const u32 = new Uint8Array(4);
    new DataView(u32.buffer).setUint32(0, 2 ** 31, true);

    const first = parseSafetensors(buildFile('{"a":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}', u64));
    const second = parseSafetensors(buildFile('{"a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}}', u32));
    expect(thrown(() => first.readTensor('a')).code).toBe('SAFETENSORS_INTEGER_OUT_OF_RANGE');
    expect(thrown(() => second.readTensor('a')).code).toBe('SAFETENSORS_INTEGER_OUT_OF_RANGE');
  });

  it('reads F8 only as raw bytes', () => {
    const file = parseSafetensors(buildFile('{"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}', [0x38, 0xb8]));
    expect(thrown(() => file.readTensor('q')).code).toBe('SAFETENSORS_DTYPE_UNSUPPORTED');
    expect(Array.from(file.readRaw('q').data)).toEqual([0x38, 0xb8]);
  });

  it('releases tensors when a read fails', async () => {
    // "b" cannot be decoded, so readSafetensors fails after "a" was read and "c" was started.
    const data = new Uint8Array(4 + 1 + 4);
    data.set(f32Bytes([1]), 0);
    data.set(f32Bytes([2]), 5);
    const header =
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[4,5]},' +
      '"c":{"dtype":"F32","shape":[1],"data_offsets":[5,9]}}';
    const filePath = path.join(tmpDir, 'failing-read.safetensors');
    await fs.writeFile(filePath, buildFile(header, data));

    const error = await thrownAsync(() => readSafetensors(filePath));
    expect(error.code).toBe('SAFETENSORS_DTYPE_UNSUPPORTED');
    expect(error.message).toContain('"b"');
  });

  it('casts on request', () => {
    const file = parseSafetensors(buildFile('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32Bytes([1.75, -2.5])));
    const tensor = file.readTensor('w', { dtype: 'int32' });
    expect(tensor.dtype).toBe('int32');
    // tf.cast truncates toward zero.
    expect(Array.from(tensor.dataSync())).toEqual([1, -2]);
    tensor.dispose();
  });
});

describe('half-precision helpers', () => {
  it('widens bf16 patterns', () => {
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xc040)).toBe(-3);
    expect(bf16ToF32(0x7f80)).toBe(Infinity);
    expect(Number.isNaN(bf16ToF32(0x7fc0))).toBe(true);
    // 0x0001 is the smallest bf16 subnormal: 2^-133.
    expect(bf16ToF32(0x0001)).toBe(2 ** -133);
  });

  it('rounds to bf16 with ties to even', () => {
    // 1 + 2^-8 lies halfway between 1 (0x3F80) and 1 + 2^-7 (0x3F81): the even one, 0x3F80, wins.
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80);
    // 1 + 3 * 2^-8 lies halfway between 0x3F81 and 0x3F82: 0x3F82 is even.
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    // Just above the tie rounds up.
    expect(f32ToBf16(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    // The float32 maximum rounds past the largest bf16 (0x7F7F) to infinity.
    expect(f32ToBf16(3.4028234663852886e38)).toBe(0x7f80);
    expect(f32ToBf16(-0)).toBe(0x8000);
  });

  it('rounds to f16 with ties to even', () => {
    // 1 + 2^-11 is halfway between 1 (0x3C00) and 1 + 2^-10 (0x3C01): rounds to 0x3C00.
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    // 65504 is the f16 maximum; 65520 is halfway to 2^16 and rounds to infinity.
    expect(f32ToF16(65519)).toBe(0x7bff);
    expect(f32ToF16(65520)).toBe(0x7c00);
    // 2^-25 is half the smallest subnormal: ties to even gives 0; 3 * 2^-26 rounds up to 2^-24.
    expect(f32ToF16(2 ** -25)).toBe(0x0000);
    expect(f32ToF16(3 * 2 ** -26)).toBe(0x0001);
    expect(f32ToF16(-(2 ** -14))).toBe(0x8400);
  });

  it('keeps NaN as NaN', () => {
    expect(Number.isNaN(bf16ToF32(f32ToBf16(NaN)))).toBe(true);
    expect(Number.isNaN(f16ToF32(f32ToF16(NaN)))).toBe(true);
    // A float32 NaN whose payload sits only in the low 16 bits would truncate to infinity.
    const lowPayloadNaN = new Float32Array(new Uint32Array([0x7f800001]).buffer)[0] as number;
    expect(Number.isNaN(bf16ToF32(f32ToBf16(lowPayloadNaN)))).toBe(true);
    expect(Number.isNaN(f16ToF32(f32ToF16(lowPayloadNaN)))).toBe(true);
  });

  it('round-trips every non-NaN pattern', () => {
    for (let bits = 0; bits < 65536; bits += 1) {
      const bf16 = bf16ToF32(bits);
      if (!Number.isNaN(bf16)) expect(f32ToBf16(bf16)).toBe(bits);
      const f16 = f16ToF32(bits);
      if (!Number.isNaN(f16)) expect(f32ToF16(f16)).toBe(bits);
    }
  });
});

describe('safetensors Python fixtures', () => {
  it('reads every dtype as Python wrote it', async () => {
    const expected = JSON.parse(await fs.readFile(path.join(FIXTURES, 'dtypes.expected.json'), 'utf8')) as Record<
      string,
      { shape: number[]; values: Array<number | string> }
    >;
    const { tensors, metadata } = await readSafetensors(path.join(FIXTURES, 'dtypes.safetensors'));

    expect(metadata).toEqual({ format: 'pt', producer: 'make_fixtures.py' });
    expect(Object.keys(tensors).sort()).toEqual(Object.keys(expected).sort());
    for (const [name, { shape, values }] of Object.entries(expected)) {
      const tensor = tensors[name] as tf.Tensor;
      const expectedValues = values.map((value) => (value === 'inf' ? Infinity : value === '-inf' ? -Infinity : (value as number)));
      expect(tensor.shape, name).toEqual(shape);
      expect(Array.from(tensor.dataSync()), name).toEqual(expectedValues);
    }
    expect(tensors.bool?.dtype).toBe('bool');
    expect(tensors.i64?.dtype).toBe('int32');
    tf.dispose(Object.values(tensors));
  });

  it('narrows to BF16 and F16 as PyTorch does', async () => {
    const file = await openSafetensors(path.join(FIXTURES, 'rounding.safetensors'));
    const source = await file.readTensor('source');
    const torchBf16 = await file.readRaw('bf16');
    const torchF16 = await file.readRaw('f16');
    await file.close();

    const asBf16 = parseSafetensors(encodeSafetensors({ x: source }, { dtype: 'BF16' })).readRaw('x');
    const asF16 = parseSafetensors(encodeSafetensors({ x: source }, { dtype: 'F16' })).readRaw('x');
    source.dispose();

    const patterns = (raw: RawTensor): number[] => Array.from({ length: raw.data.length / 2 }, (_, i) => raw.data[2 * i]! | (raw.data[2 * i + 1]! << 8));
    const ours = { bf16: patterns(asBf16), f16: patterns(asF16) };
    const torch = { bf16: patterns(torchBf16), f16: patterns(torchF16) };
    const widen = { bf16: bf16ToF32, f16: f16ToF32 };
    for (const kind of ['bf16', 'f16'] as const) {
      ours[kind].forEach((bits, index) => {
        const reference = torch[kind][index] as number;
        if (Number.isNaN(widen[kind](reference))) {
          // PyTorch's vectorised CPU path writes NaN as 0xFFFF and its scalar path as 0x7FC0;
          // any NaN pattern is correct.
          expect(Number.isNaN(widen[kind](bits)), `${kind} element ${index}`).toBe(true);
        } else {
          expect(bits, `${kind} element ${index}`).toBe(reference);
        }
      });
    }
  });
});

describe('safetensors writer', () => {
  /** float32 values with the hard cases: NaN, infinities, signed zero, subnormals, extremes. */
  function awkwardFloats(count: number): Float32Array {
    const values = new Float32Array(count);
    const special = [NaN, Infinity, -Infinity, -0, 0, 1e-45, -1e-40, 3.4028234663852886e38, 1 / 3];
    let seed = 12345;
    for (let index = 0; index < count; index += 1) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      values[index] = index < special.length ? (special[index] as number) : (seed / 2 ** 32 - 0.5) * 2 ** ((seed % 60) - 30);
    }
    return values;
  }

  it('round-trips bit-exactly', async () => {
    const values = awkwardFloats(1000);
    const weight = tf.tensor(values, [10, 100]);
    const ids = tf.tensor([-3, 0, 2147483647], [3], 'int32');
    const mask = tf.tensor([1, 0, 1, 1], [2, 2], 'bool');
    const scalar = tf.scalar(-0.125);
    const empty = tf.zeros([0, 4]);
    const filePath = path.join(tmpDir, 'round-trip.safetensors');

    await writeSafetensors(filePath, { weight, ids, mask, scalar, empty }, { metadata: { step: '7' } });
    const file = await openSafetensors(filePath);
    const raw = await file.readRaw('weight');
    const readIds = await file.readTensor('ids');
    const readMask = await file.readTensor('mask');
    const readScalar = await file.readTensor('scalar');
    const readEmpty = await file.readTensor('empty');
    await file.close();

    expect(raw.dtype).toBe('F32');
    expect(Array.from(raw.data)).toEqual(Array.from(new Uint8Array(values.buffer)));
    expect(file.metadata).toEqual({ step: '7' });
    expect(Array.from(readIds.dataSync())).toEqual([-3, 0, 2147483647]);
    expect(readMask.dtype).toBe('bool');
    expect(Array.from(readMask.dataSync())).toEqual([1, 0, 1, 1]);
    expect(readScalar.shape).toEqual([]);
    expect(readScalar.dataSync()[0]).toBe(-0.125);
    expect(readEmpty.shape).toEqual([0, 4]);

    // Writing what was read gives the same file, byte for byte.
    const original = await fs.readFile(filePath);
    const { tensors, metadata } = await readSafetensors(filePath);
    expect(Buffer.from(encodeSafetensors(tensors, { metadata })).equals(original)).toBe(true);
    tf.dispose([weight, ids, mask, scalar, empty, readIds, readMask, readScalar, readEmpty, ...Object.values(tensors)]);
  });

  it('lays out data aligned and contiguous', () => {
    const b = tf.tensor([1, 2, 3], [3], 'int32');
    const bytes = encodeSafetensors({
      b,
      a: { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
      c: { dtype: 'F64', shape: [1], data: new Uint8Array(8) },
    });
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const file = parseSafetensors(bytes);

    expect((8 + headerLength) % 8).toBe(0);
    expect(bytes[8 + headerLength - 1]).toBe(0x20);
    // Largest element size first, so each tensor starts at a multiple of its element size.
    expect(file.entries.map((entry) => [entry.name, entry.dataOffsets])).toEqual([
      ['c', [0, 8]],
      ['b', [8, 20]],
      ['a', [20, 23]],
    ]);
    b.dispose();
  });

  it('round-trips a tensor named __proto__', async () => {
    const tensor = tf.tensor([1, 2]);
    const filePath = path.join(tmpDir, 'proto.safetensors');
    const named = Object.create(null) as Record<string, tf.Tensor>;
    named['__proto__'] = tensor;

    await writeSafetensors(filePath, named);
    const { tensors } = await readSafetensors(filePath);
    expect(Object.keys(tensors)).toEqual(['__proto__']);
    expect(Array.from(tensors['__proto__']?.dataSync() ?? [])).toEqual([1, 2]);
    tf.dispose([tensor, ...Object.values(tensors)]);
  });

  it('writes raw tensors unchanged', () => {
    const raw: RawTensor = { dtype: 'F8_E5M2', shape: [2, 2], data: new Uint8Array([1, 2, 3, 4]) };
    const file = parseSafetensors(encodeSafetensors({ raw }));
    expect(file.readRaw('raw')).toEqual(raw);
  });

  it('rejects a tensor named __metadata__', () => {
    const tensor = tf.scalar(1);
    const error = thrown(() => encodeSafetensors({ __metadata__: tensor }));
    expect(error).toBeInstanceOf(ArgumentError);
    expect(error.code).toBe('SAFETENSORS_RESERVED_NAME');
    tensor.dispose();
  });

  it('rejects non-string metadata', () => {
    const error = thrown(() => encodeSafetensors({}, { metadata: { step: 3 as unknown as string } }));
    expect(error.code).toBe('SAFETENSORS_METADATA_NOT_STRING');
    expect(error.message).toContain('"step"');
  });

  it('rejects raw data of the wrong size', () => {
    const error = thrown(() => encodeSafetensors({ w: { dtype: 'F32', shape: [2], data: new Uint8Array(4) } }));
    expect(error.code).toBe('SAFETENSORS_WRITE_SIZE_MISMATCH');
    expect(error.message).toContain('8 bytes');
  });

  it('keeps the old file when a write fails', async () => {
    const filePath = path.join(tmpDir, 'kept.safetensors');
    const good = tf.tensor([1, 2]);
    await writeSafetensors(filePath, { good });
    const before = await fs.readFile(filePath);

    // The second tensor is disposed, so reading its values fails after the header was written.
    const disposed = tf.tensor([3, 4]);
    disposed.dispose();
    await expect(writeSafetensors(filePath, { a: good, b: disposed })).rejects.toThrow();

    expect((await fs.readFile(filePath)).equals(before)).toBe(true);
    const leftovers = (await fs.readdir(tmpDir)).filter((name) => name.includes('kept.safetensors.tmp'));
    expect(leftovers).toEqual([]);
    good.dispose();
  });
});

describe('safetensors batched reads', () => {
  // The header is padded to 501 bytes, so data starts at byte 509, an odd offset. Data buffer:
  //   f32    F32  [2]     bytes 0..8    1.5, -2
  //   bf16   BF16 [2, 2]  bytes 8..16   0x3F80 0xC040 0x7F80 0x0001 = 1, -3, +Inf, 2^-133 (9.18e-41)
  //   odd    BF16 [3]     bytes 16..22  0x4049 0xC2F7 0x7FC0 = 3.140625, -123.5, NaN
  //   half   F16  [2]     bytes 22..26  0x3C00 0xC000 = 1, -2
  //   ids    I32  [2]     bytes 26..34  7, -1
  //   mask   BOOL [3]     bytes 34..37  0, 2, 1 -> false, true, true
  //   none   BF16 [0, 4]  bytes 37..37
  //   scalar F32  []      bytes 37..41  0.25
  const entries: Array<[string, string, number[], number[]]> = [
    ['f32', 'F32', [2], [0, 8]],
    ['bf16', 'BF16', [2, 2], [8, 16]],
    ['odd', 'BF16', [3], [16, 22]],
    ['half', 'F16', [2], [22, 26]],
    ['ids', 'I32', [2], [26, 34]],
    ['mask', 'BOOL', [3], [34, 37]],
    ['none', 'BF16', [0, 4], [37, 37]],
    ['scalar', 'F32', [], [37, 41]],
  ];
  const expected: Record<string, number[]> = {
    f32: [1.5, -2],
    bf16: [1, -3, Infinity, 2 ** -133],
    odd: [3.140625, -123.5, NaN],
    half: [1, -2],
    ids: [7, -1],
    mask: [0, 1, 1],
    none: [],
    scalar: [0.25],
  };
  let filePath: string;

  beforeAll(async () => {
    const header = JSON.stringify(
      Object.fromEntries(entries.map(([name, dtype, shape, offsets]) => [name, { dtype, shape, data_offsets: offsets }])),
    );
    const text = header + ' '.repeat(501 - header.length);
    const int32 = new Uint8Array(8);
    new DataView(int32.buffer).setInt32(0, 7, true);
    new DataView(int32.buffer).setInt32(4, -1, true);
    const data = new Uint8Array(41);
    data.set(f32Bytes([1.5, -2]), 0);
    data.set(u16Bytes([0x3f80, 0xc040, 0x7f80, 0x0001]), 8);
    data.set(u16Bytes([0x4049, 0xc2f7, 0x7fc0]), 16);
    data.set(u16Bytes([0x3c00, 0xc000]), 22);
    data.set(int32, 26);
    data.set([0, 2, 1], 34);
    data.set(f32Bytes([0.25]), 37);
    expect(text.length).toBe(501);
    filePath = path.join(tmpDir, 'batched.safetensors');
    await fs.writeFile(filePath, buildFile(text, data));
  });

  it('matches readTensor at odd offset', async () => {
    const file = await openSafetensors(filePath);
    const names = entries.map(([name]) => name);
    const tensors = await file.readTensors(names);

    expect(Object.keys(tensors)).toEqual(names);
    for (const [name, , shape] of entries) {
      const batched = tensors[name] as tf.Tensor;
      const single = await file.readTensor(name);
      expect(batched.shape).toEqual(shape);
      expect(batched.dtype).toBe(single.dtype);
      expect(Array.from(batched.dataSync())).toEqual(expected[name]);
      expect(Array.from(batched.dataSync())).toEqual(Array.from(single.dataSync()));
      single.dispose();
    }
    await file.close();
    tf.dispose(Object.values(tensors));
  });

  it('shares one block per read', async () => {
    const { tensors } = await readSafetensors(filePath);
    const block = (tensors.f32?.dataSync() as Float32Array).buffer;

    for (const name of ['bf16', 'odd', 'half', 'scalar']) {
      expect((tensors[name]?.dataSync() as Float32Array).buffer).toBe(block);
    }
    // 2 + 4 + 3 + 2 + 0 + 1 float32 values.
    expect(block.byteLength).toBe(12 * 4);
    expect((tensors.ids?.dataSync() as Int32Array).buffer).not.toBe(block);
    tf.dispose(Object.values(tensors));
  });

  it('reads a repeated name once', async () => {
    const file = await openSafetensors(filePath);
    const tensors = await file.readTensors(['odd', 'f32', 'odd']);
    await file.close();

    expect(Object.keys(tensors)).toEqual(['odd', 'f32']);
    tf.dispose(Object.values(tensors));
  });

  it('casts batched reads on request', async () => {
    const file = await openSafetensors(filePath);
    const tensors = await file.readTensors(['bf16', 'f32'], { dtype: 'int32' });
    await file.close();

    expect(tensors.f32?.dtype).toBe('int32');
    // tf.cast truncates toward zero. The infinity and the subnormal of "bf16" are not compared.
    expect(Array.from(tensors.f32?.dataSync() ?? [])).toEqual([1, -2]);
    expect(Array.from(tensors.bf16?.dataSync() ?? []).slice(0, 2)).toEqual([1, -3]);
    tf.dispose(Object.values(tensors));
  });

  it('checks names before reading data', async () => {
    const file = await openSafetensors(filePath);
    const error = await thrownAsync(() => file.readTensors(['f32', 'absent']));
    await file.close();

    expect(error.code).toBe('SAFETENSORS_TENSOR_NOT_FOUND');
    expect(error.message).toContain('"absent"');
  });

  it('widens all bf16 patterns exactly', async () => {
    // 65,538 values: all 65,536 patterns, then 0x3F80 and 0xC040. The widening loop takes four
    // 32-bit words (eight values) per step, so the last pair goes through its tail loop.
    const count = 65_538;
    const patterns = Array.from({ length: count }, (_, index) => (index < 65_536 ? index : [0x3f80, 0xc040][index - 65_536] as number));
    const allPath = path.join(tmpDir, 'all-bf16.safetensors');
    await fs.writeFile(allPath, buildFile(`{"all":{"dtype":"BF16","shape":[${count}],"data_offsets":[0,${2 * count}]}}`, u16Bytes(patterns)));

    const { tensors } = await readSafetensors(allPath);
    const values = tensors.all?.dataSync() as Float32Array;
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);

    // The float32 bit pattern of each value is its bf16 pattern shifted up by 16 bits.
    const mismatches = patterns.filter((pattern, index) => bits[index] !== ((pattern << 16) >>> 0));
    expect(mismatches).toEqual([]);
    expect([values[count - 2], values[count - 1]]).toEqual([1, -3]);
    tf.dispose(Object.values(tensors));
  });

  it('fails cleanly on truncated file', async () => {
    // The read of "ids" fails, and so does the read of "mask" started ahead of it. When the second
    // failure lands first it must not surface as an unhandled rejection (vitest reports those).
    // The afterEach hook checks that no tensor is left behind.
    const copy = path.join(tmpDir, 'batched-cut.safetensors');
    await fs.copyFile(filePath, copy);
    const file = await openSafetensors(copy);
    // The header is intact, but the data now ends inside "ids".
    await fs.truncate(copy, 8 + 501 + 30);

    const error = await thrownAsync(() => file.readTensors(entries.map(([name]) => name)));
    await file.close();

    expect(error.code).toBe('SAFETENSORS_READ_FAILED');
    expect(error.message).toContain('truncated');
  });

  it('splits shared blocks at the size limit', () => {
    const entry = (name: string, dtype: SafetensorsEntry['dtype'], bytes: number): SafetensorsEntry => ({
      name,
      dtype,
      shape: [],
      dataOffsets: [0, bytes],
    });
    // float32 sizes: a 16, b 8, c (I32) none, d 40 (over the 32-byte limit), e 8.
    const regions = sharedRegions(
      [entry('a', 'BF16', 8), entry('b', 'F32', 8), entry('c', 'I32', 8), entry('d', 'F16', 20), entry('e', 'BF16', 4)],
      32,
    );
    const [a, b, c, d, e] = regions;

    expect(regions.map((region) => region?.length)).toEqual([16, 8, undefined, 40, 8]);
    expect(c).toBeUndefined();
    expect(b?.buffer).toBe(a?.buffer);
    expect([a?.byteOffset, b?.byteOffset]).toEqual([0, 16]);
    expect(a?.buffer.byteLength).toBe(24);
    expect(d?.buffer).not.toBe(a?.buffer);
    expect(d?.buffer.byteLength).toBe(40);
    expect(e?.buffer).not.toBe(d?.buffer);
    expect([e?.byteOffset, e?.buffer.byteLength]).toEqual([0, 8]);
  });
});

describe('safetensors large files', () => {
  it('reads one tensor past 4 GiB', async () => {
    // A sparse file: "big" spans 4.5 GiB of unwritten zeros, "tail" sits after it. Only the
    // header and the tail's 16 bytes are ever read, so this needs no disk space or memory.
    const bigBytes = 4.5 * 2 ** 30;
    const header = JSON.stringify({
      big: { dtype: 'U8', shape: [bigBytes], data_offsets: [0, bigBytes] },
      tail: { dtype: 'F32', shape: [4], data_offsets: [bigBytes, bigBytes + 16] },
    });
    const prefix = buildFile(header);
    const filePath = path.join(tmpDir, 'sparse.safetensors');
    const handle = await fs.open(filePath, 'w');
    await handle.write(prefix, 0, prefix.length, 0);
    await handle.write(f32Bytes([1, -2, 3.5, 1e30]), 0, 16, prefix.length + bigBytes);
    await handle.close();

    const memoryBefore = process.memoryUsage().arrayBuffers;
    const file = await openSafetensors(filePath);
    const tail = await file.readTensor('tail');
    await file.close();

    expect(file.entry('big').shape).toEqual([bigBytes]);
    expect(Array.from(tail.dataSync())).toEqual([1, -2, 3.5, Math.fround(1e30)]);
    expect(process.memoryUsage().arrayBuffers - memoryBefore).toBeLessThan(64 * 2 ** 20);
    tail.dispose();
    await fs.rm(filePath);
  });
});

/**
 * safetensors element types and the conversions between half-precision floats (IEEE 754 binary16
 * and bfloat16) and float32.
 *
 * Narrowing to a half-precision type rounds to nearest, ties to even, as IEEE 754 and PyTorch's
 * `tensor.to(torch.bfloat16)` do. A NaN stays a NaN: its payload is kept where it fits and the
 * result is always a quiet NaN, so a NaN never turns into an infinity.
 */

/** An element type that may appear in a safetensors header (safetensors 0.6 `Dtype`). */
export type SafetensorsDtype =
  | 'BOOL'
  | 'F4'
  | 'F6_E2M3'
  | 'F6_E3M2'
  | 'U8'
  | 'I8'
  | 'F8_E5M2'
  | 'F8_E4M3'
  | 'F8_E8M0'
  | 'F8_E4M3FNUZ'
  | 'F8_E5M2FNUZ'
  | 'I16'
  | 'U16'
  | 'F16'
  | 'BF16'
  | 'I32'
  | 'U32'
  | 'F32'
  | 'C64'
  | 'F64'
  | 'I64'
  | 'U64';

/** Size of one element of each dtype, in bits (F4 and F6 are smaller than a byte). */
export const DTYPE_BITS: Readonly<Record<SafetensorsDtype, number>> = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
};

/** Tells whether `value` is a dtype name that safetensors defines. */
export function isSafetensorsDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BITS, value);
}

const scratchView = new DataView(new ArrayBuffer(4));

function float32Bits(value: number): number {
  scratchView.setFloat32(0, value, true);
  return scratchView.getUint32(0, true);
}

function float32FromBits(bits: number): number {
  scratchView.setUint32(0, bits >>> 0, true);
  return scratchView.getFloat32(0, true);
}

/** Widens a bfloat16 bit pattern (0..0xFFFF) to the float32 value it encodes, as a JS number. */
export function bf16ToF32(bits: number): number {
  return float32FromBits((bits & 0xffff) << 16);
}

/**
 * Narrows `value` to bfloat16 and returns the 16-bit pattern.
 *
 * The value is first rounded to float32, then to bfloat16 with round-to-nearest-even.
 */
export function f32ToBf16(value: number): number {
  return float32BitsToBf16(float32Bits(value));
}

/** Widens an IEEE 754 binary16 bit pattern (0..0xFFFF) to the value it encodes. */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;

  if (exponent === 0) {
    // Zero or subnormal: mantissa * 2^-24.
    return sign * mantissa * 2 ** -24;
  }
  if (exponent === 0x1f) {
    return mantissa === 0 ? sign * Infinity : NaN;
  }
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/**
 * Narrows `value` to IEEE 754 binary16 and returns the 16-bit pattern.
 *
 * The value is first rounded to float32, then to binary16 with round-to-nearest-even. Values of
 * 65520 and above in magnitude become infinities, as IEEE 754 rounding requires.
 */
export function f32ToF16(value: number): number {
  return float32BitsToF16(float32Bits(value));
}

/** Rounds float32 bits to bfloat16 bits, ties to even. */
export function float32BitsToBf16(bits: number): number {
  const upper = bits >>> 16;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
    // NaN: keep sign and the top of the payload, and set the quiet bit so the result stays NaN.
    return upper | 0x0040;
  }
  const roundingBias = 0x7fff + (upper & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

/** Rounds float32 bits to binary16 bits, ties to even, with subnormal results where needed. */
export function float32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;

  if (exponent === 0xff) {
    // Infinity, or a NaN that keeps the top of its payload and is made quiet.
    return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13);
  }
  if (exponent > 142) {
    // 2^16 and above overflow even before rounding.
    return sign | 0x7c00;
  }

  if (exponent >= 113) {
    // Normal binary16 range (2^-14 and above): rebias the exponent and drop 13 mantissa bits.
    // A carry out of the mantissa moves into the exponent, which also rounds 65520 up to infinity.
    let half = ((exponent - 112) << 10) | (mantissa >>> 13);
    const dropped = mantissa & 0x1fff;
    if (dropped > 0x1000 || (dropped === 0x1000 && (half & 1) === 1)) {
      half += 1;
    }
    return sign | half;
  }

  if (exponent < 102) {
    // Below 2^-25, half the smallest subnormal: rounds to a signed zero.
    return sign;
  }

  // Subnormal result, in units of 2^-24: the value is significand * 2^(exponent - 126).
  const significand = mantissa | 0x800000;
  const shift = 126 - exponent;
  let half = significand >>> shift;
  const dropped = significand & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (dropped > halfway || (dropped === halfway && (half & 1) === 1)) {
    half += 1;
  }
  return sign | half;
}

let f16Table: Float32Array | undefined;

/** Returns the float32 value of every binary16 bit pattern, built on first use (256 KiB). */
export function f16LookupTable(): Float32Array {
  if (f16Table === undefined) {
    const table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits += 1) {
      table[bits] = f16ToF32(bits);
    }
    f16Table = table;
  }
  return f16Table;
}

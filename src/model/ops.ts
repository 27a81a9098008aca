/**
 * Differentiable building blocks of the decoder, each one tfjs op with a hand-written gradient.
 *
 * Hand-written gradients serve two purposes. They compute only what LoRA training needs: no gradient
 * for frozen weights, and no input gradient where nothing trainable lies upstream (the caller passes
 * that knowledge in as flags). They also keep every matrix product in the one form that the wasm
 * backend runs through XNNPACK: `a @ b` with neither operand transposed and no batch dimension.
 * For anything else tfjs 4.22's wasm `BatchMatMul` falls back to a scalar loop that ran about ten
 * times slower in bench/model.bench.ts. So on wasm, transposes are made explicitly and batched
 * products are split per batch entry.
 *
 * Each gradient function runs in its own tf.tidy: tfjs calls custom gradient functions outside any
 * scope, so their temporaries (such as transposed weights) would otherwise live until the whole
 * backward pass ends.
 */
import * as tf from '@tensorflow/tfjs';

/** The LoRA branch of a projection: `scale * ((x * dropoutMask) @ a) @ b`. */
export interface LoraBranch {
  /** `lora_a`, `[in, rank]`. */
  a: tf.Tensor2D;
  /** `lora_b`, `[rank, out]`. */
  b: tf.Tensor2D;
  scale: number;
  /** Inverted-dropout mask `[rows, in]` (0 or `1 / (1 - p)`), or null without dropout. */
  dropoutMask: tf.Tensor2D | null;
}

function explicitTransposes(): boolean {
  return tf.getBackend() === 'wasm';
}

/** Computes `a @ b^T`. */
export function matMulTransposeB(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return explicitTransposes() ? tf.matMul(a, tf.transpose(b)) : tf.matMul(a, b, false, true);
}

/** Computes `a^T @ b`. */
export function matMulTransposeA(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return explicitTransposes() ? tf.matMul(tf.transpose(a), b) : tf.matMul(a, b, true, false);
}

/**
 * Computes the batched product `op(a) @ op(b)` of two `[batch, m, n]` tensors. On wasm each batch entry
 * runs as its own 2-D product. Not differentiable: it is meant for the forward and backward functions
 * of custom ops.
 */
export function batchMatMul(a: tf.Tensor3D, b: tf.Tensor3D, transposeA = false, transposeB = false): tf.Tensor3D {
  if (!explicitTransposes()) {
    return tf.matMul(a, b, transposeA, transposeB);
  }
  const [batch] = a.shape;
  const rows = transposeA ? a.shape[2] : a.shape[1];
  const columns = transposeB ? b.shape[1] : b.shape[2];
  return entryProducts(splitBatch(a, transposeA), splitBatch(b, transposeB), batch, rows, columns);
}

/** Multiplies matching entries and stacks the products into `[batch, rows, columns]`. */
function entryProducts(left: tf.Tensor2D[], right: tf.Tensor2D[], batch: number, rows: number, columns: number): tf.Tensor3D {
  const products = left.map((entry, i) => tf.matMul(entry, right[i] as tf.Tensor2D));
  return tf.reshape(products.length === 1 ? (products[0] as tf.Tensor2D) : tf.concat(products, 0), [batch, rows, columns]);
}

/**
 * Splits `[batch, m, n]` into `batch` tensors `[m, n]`, or `[n, m]` with `transpose`. One `dataSync`
 * copies the values out, the transpose happens in that copy, and each entry is written back.
 * tfjs 4.22's wasm `slice` copies the whole input once per slice, its `gather` and `transpose` are
 * several times slower than this, and splitting with them cost more than the products themselves.
 */
function splitBatch(x: tf.Tensor3D, transpose: boolean): tf.Tensor2D[] {
  const [batch, rows, columns] = x.shape;
  const size = rows * columns;
  const values = x.dataSync() as Float32Array;
  return Array.from({ length: batch }, (_, entry) => {
    const source = values.subarray(entry * size, (entry + 1) * size);
    if (!transpose) {
      return tf.tensor2d(source, [rows, columns]);
    }
    const transposed = new Float32Array(size);
    for (let row = 0; row < rows; row++) {
      const offset = row * columns;
      for (let column = 0; column < columns; column++) {
        transposed[column * rows + row] = source[offset + column] as number;
      }
    }
    return tf.tensor2d(transposed, [columns, rows]);
  });
}

/**
 * Applies a projection `x @ weight (+ bias)` with an optional LoRA branch.
 *
 * `weight` is `[in, out]` and frozen. The gradient is computed for the LoRA parameters and, when
 * `inputNeedsGradient` is true, for `x`. The base product is computed the same way with and without
 * LoRA, so an adapter whose `b` is zero leaves the output bit-identical.
 */
export function linear(
  x: tf.Tensor2D,
  weight: tf.Tensor2D,
  bias: tf.Tensor1D | null,
  lora: LoraBranch | null,
  inputNeedsGradient: boolean,
): tf.Tensor2D {
  const base = (): tf.Tensor2D => {
    const product = tf.matMul(x, weight) as tf.Tensor2D;
    return bias === null ? product : (tf.add(product, bias) as tf.Tensor2D);
  };

  if (lora === null) {
    if (!inputNeedsGradient) {
      return base();
    }
    // The gradient needs only the frozen weight, which the model owns, so nothing is saved.
    const op = tf.customGrad((input) => ({
      value: base(),
      gradFunc: (dy) => tf.tidy(() => matMulTransposeB(dy as tf.Tensor2D, weight)),
    }));
    return op(x) as tf.Tensor2D;
  }

  return loraLinear(x, weight, base, lora, inputNeedsGradient);
}

function loraLinear(
  x: tf.Tensor2D,
  weight: tf.Tensor2D,
  base: () => tf.Tensor2D,
  lora: LoraBranch,
  inputNeedsGradient: boolean,
): tf.Tensor2D {
  const { scale, dropoutMask } = lora;

  // Runs inside the tf.tidy of the custom op: every tensor the gradient needs is passed to `save`,
  // which keeps a reference until backpropagation ends.
  const forward = (save: tf.GradSaveFunc): tf.Tensor2D => {
    const droppedInput = dropoutMask === null ? x : (tf.mul(x, dropoutMask) as tf.Tensor2D);
    const down = tf.matMul(droppedInput, lora.a) as tf.Tensor2D;
    save(dropoutMask === null ? [droppedInput, down] : [droppedInput, down, dropoutMask]);
    return tf.add(base(), tf.mul(tf.matMul(down, lora.b), scale)) as tf.Tensor2D;
  };

  // y = base + scale * (xd @ A) @ B, with xd = x * mask, so
  //   dB = scale * (xd @ A)^T @ dy,  dA = scale * xd^T @ (dy @ B^T),
  //   dx = dy @ W^T + scale * ((dy @ B^T) @ A^T) * mask.
  const gradients = (dy: tf.Tensor2D, saved: tf.Tensor[]): tf.Tensor[] => {
    const [droppedInput, down, mask] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D | undefined];
    const upGradient = tf.mul(matMulTransposeB(dy, lora.b), scale) as tf.Tensor2D;
    // dA = xd^T @ g, computed as (g^T @ xd)^T: on wasm the transposes are of [rows, rank] and [rank, in]
    // matrices, and xd, shared by the projections that read the same input, is packed once.
    const gradA = explicitTransposes()
      ? (tf.transpose(tf.matMul(tf.transpose(upGradient), droppedInput)) as tf.Tensor2D)
      : matMulTransposeA(droppedInput, upGradient);
    const gradB = matMulTransposeA(tf.mul(down, scale) as tf.Tensor2D, dy);
    if (!inputNeedsGradient) {
      return [gradA, gradB];
    }
    let loraInputGradient: tf.Tensor = matMulTransposeB(upGradient, lora.a);
    if (mask !== undefined) {
      loraInputGradient = tf.mul(loraInputGradient, mask);
    }
    const gradX = tf.add(matMulTransposeB(dy, weight), loraInputGradient);
    return [gradX, gradA, gradB];
  };

  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: forward(args[args.length - 1] as tf.GradSaveFunc),
    gradFunc: (dy, saved) => tf.tidy(() => gradients(dy as tf.Tensor2D, saved)),
  }));
  return (inputNeedsGradient ? op(x, lora.a, lora.b) : op(lora.a, lora.b)) as tf.Tensor2D;
}

/**
 * Applies RMSNorm over the last axis in float32: `x * rsqrt(mean(x^2) + epsilon) * weight`.
 * The gradient flows to `x` only, because `weight` is frozen.
 */
export function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor1D, epsilon: number): tf.Tensor2D {
  const op = tf.customGrad((input, save) => {
    const inverseRms = tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), epsilon));
    const normalized = tf.mul(x, inverseRms);
    (save as tf.GradSaveFunc)([normalized, inverseRms]);
    return {
      value: tf.mul(normalized, weight),
      // With n = x * r and g = dy * weight: dx = r * (g - n * mean(g * n)).
      gradFunc: (dy, saved) =>
        tf.tidy(() => {
          const [savedNormalized, savedInverseRms] = saved as [tf.Tensor, tf.Tensor];
          const scaled = tf.mul(dy, weight);
          const projection = tf.mean(tf.mul(scaled, savedNormalized), -1, true);
          return tf.mul(tf.sub(scaled, tf.mul(savedNormalized, projection)), savedInverseRms);
        }),
    };
  });
  return op(x) as tf.Tensor2D;
}

/**
 * Rotates `x` of shape `[batch, time, heads, headDim]` by the rotary embedding:
 * `x * cos + rotate_half(x) * sin`, where `cos` and `sin` broadcast to `x` (`[batch or 1, time, 1, headDim]`)
 * and `rotateHalf` is the matrix of {@link rotateHalfMatrix}.
 */
export function applyRotary(
  x: tf.Tensor4D,
  cos: tf.Tensor4D,
  sin: tf.Tensor4D,
  rotateHalf: tf.Tensor2D,
): tf.Tensor4D {
  const shape = x.shape;
  const headDim = shape[3];
  const rotate = (value: tf.Tensor): tf.Tensor => tf.reshape(tf.matMul(tf.reshape(value, [-1, headDim]), rotateHalf), shape);

  const op = tf.customGrad((input, save) => {
    (save as tf.GradSaveFunc)([cos, sin]);
    return {
      value: tf.add(tf.mul(x, cos), tf.mul(rotate(x), sin)),
      // R is a signed permutation with R^T = -R, so dx = dy * cos - (dy * sin) @ R.
      gradFunc: (dy, saved) =>
        tf.tidy(() => {
          const [savedCos, savedSin] = saved as [tf.Tensor, tf.Tensor];
          return tf.sub(tf.mul(dy, savedCos), rotate(tf.mul(dy, savedSin)));
        }),
    };
  });
  return op(x) as tf.Tensor4D;
}

/** Flags for the inputs of {@link attention} that need a gradient. */
export interface AttentionGradientFlags {
  query: boolean;
  key: boolean;
  value: boolean;
}

/**
 * Computes scaled dot-product attention with grouped-query heads.
 *
 * `query` is `[batch, heads, time, headDim]`, and `key` and `value` are `[batch, kvHeads, keyTime, headDim]`.
 * Query head `h` reads key/value head `floor(h / (heads / kvHeads))`, as `repeat_kv` in `transformers`.
 * `mask` is additive, `[batch or 1, 1, time, keyTime]`, with 0 where a key is visible and a large
 * negative number elsewhere. Returns `[batch, heads, time, headDim]`.
 */
export function attention(
  query: tf.Tensor4D,
  key: tf.Tensor4D,
  value: tf.Tensor4D,
  mask: tf.Tensor4D,
  scale: number,
  needsGradient: AttentionGradientFlags,
): tf.Tensor4D {
  const [batch, heads, time, headDim] = query.shape;
  const [, kvHeads, keyTime] = key.shape;
  const groups = batch * kvHeads;
  const groupRows = (heads / kvHeads) * time;

  // Query heads that share a key/value head are adjacent, so [batch, heads, time, d] is laid out
  // in memory as [batch * kvHeads, (heads / kvHeads) * time, d] and no key/value copy is needed.
  const asGroups = (tensor: tf.Tensor, rows: number): tf.Tensor3D => tf.reshape(tensor, [groups, rows, headDim]) as tf.Tensor3D;

  const forward = (save: tf.GradSaveFunc | null): tf.Tensor4D => {
    const query3 = asGroups(query, groupRows);
    const key3 = asGroups(key, keyTime);
    const value3 = asGroups(value, keyTime);
    const scores = tf.reshape(batchMatMul(query3, key3, false, true), [batch, heads, time, keyTime]);
    const probabilities = tf.reshape(tf.softmax(tf.add(tf.mul(scores, scale), mask)), [groups, groupRows, keyTime]) as tf.Tensor3D;
    save?.([query3, key3, value3, probabilities]);
    return tf.reshape(batchMatMul(probabilities, value3), [batch, heads, time, headDim]) as tf.Tensor4D;
  };

  const gradients = (dy: tf.Tensor, saved: tf.Tensor[]): Partial<Record<keyof AttentionGradientFlags, tf.Tensor>> => {
    const [query3, key3, value3, probabilities] = saved as tf.Tensor3D[] as [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D, tf.Tensor3D];
    const outputGradient = asGroups(dy, groupRows);
    const result: Partial<Record<keyof AttentionGradientFlags, tf.Tensor>> = {};

    if (needsGradient.value) {
      result.value = tf.reshape(batchMatMul(probabilities, outputGradient, true, false), value.shape);
    }
    if (needsGradient.query || needsGradient.key) {
      // Softmax backward: dS = P * (dP - sum(dP * P)), then the score scale.
      const probabilityGradient = batchMatMul(outputGradient, value3, false, true);
      const rowDot = tf.sum(tf.mul(probabilityGradient, probabilities), -1, true);
      const scoreGradient = tf.mul(tf.mul(tf.sub(probabilityGradient, rowDot), probabilities), scale) as tf.Tensor3D;
      if (needsGradient.query) {
        result.query = tf.reshape(batchMatMul(scoreGradient, key3), query.shape);
      }
      if (needsGradient.key) {
        result.key = tf.reshape(batchMatMul(scoreGradient, query3, true, false), key.shape);
      }
    }
    return result;
  };

  const names = (['query', 'key', 'value'] as const).filter((name) => needsGradient[name]);
  if (names.length === 0) {
    return tf.tidy(() => forward(null));
  }

  const inputs = { query, key, value };
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: forward(args[args.length - 1] as tf.GradSaveFunc),
    gradFunc: (dy, saved) =>
      tf.tidy(() => {
        const result = gradients(dy, saved);
        return names.map((name) => result[name] as tf.Tensor);
      }),
  }));
  return op(...names.map((name) => inputs[name])) as tf.Tensor4D;
}

/** Flags for the inputs of {@link swiGlu} that need a gradient. */
export interface SwiGluGradientFlags {
  gate: boolean;
  up: boolean;
}

/** Computes the SwiGLU activation `silu(gate) * up`, with `silu(g) = g * sigmoid(g)`. */
export function swiGlu(gate: tf.Tensor2D, up: tf.Tensor2D, needsGradient: SwiGluGradientFlags): tf.Tensor2D {
  const forward = (save: tf.GradSaveFunc | null): tf.Tensor2D => {
    const sigmoid = tf.sigmoid(gate);
    const activated = tf.mul(gate, sigmoid);
    save?.([up, sigmoid, activated]);
    return tf.mul(activated, up) as tf.Tensor2D;
  };

  const names = (['gate', 'up'] as const).filter((name) => needsGradient[name]);
  if (names.length === 0) {
    return tf.tidy(() => forward(null));
  }

  const inputs = { gate, up };
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: forward(args[args.length - 1] as tf.GradSaveFunc),
    // d silu(g) / dg = s + g * s * (1 - s) = s + silu(g) * (1 - s), with s = sigmoid(g).
    gradFunc: (dy, saved) => {
      const [savedUp, sigmoid, activated] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
      const grads: Record<'gate' | 'up', () => tf.Tensor> = {
        gate: () => tf.mul(tf.mul(dy, savedUp), tf.add(sigmoid, tf.mul(activated, tf.sub(1, sigmoid)))),
        up: () => tf.mul(dy, activated),
      };
      return tf.tidy(() => names.map((name) => grads[name]()));
    },
  }));
  return op(...names.map((name) => inputs[name])) as tf.Tensor2D;
}

/**
 * Computes logits `hidden @ headTransposed` where `headTransposed` is the `[hidden, vocab]` output
 * matrix. The input gradient uses `head`, the `[vocab, hidden]` matrix, when the model keeps one (the
 * tied embedding table), and a transpose made for the backward pass otherwise.
 */
export function outputProjection(
  hidden: tf.Tensor2D,
  headTransposed: tf.Tensor2D,
  head: tf.Tensor2D | null,
  inputNeedsGradient: boolean,
): tf.Tensor2D {
  if (!inputNeedsGradient) {
    return tf.matMul(hidden, headTransposed);
  }
  const op = tf.customGrad((input) => ({
    value: tf.matMul(hidden, headTransposed),
    gradFunc: (dy) =>
      tf.tidy(() => (head === null ? matMulTransposeB(dy as tf.Tensor2D, headTransposed) : tf.matMul(dy as tf.Tensor2D, head))),
  }));
  return op(hidden) as tf.Tensor2D;
}

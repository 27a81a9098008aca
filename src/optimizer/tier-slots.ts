/**
 * Flat storage of one tier's optimizer slots.
 *
 * A tier keeps the first moments, the second moments and (when it accumulates) the gradient
 * accumulator of all its parameters in one 1-D variable each, laid out parameter after parameter.
 * An update then runs the AdamW math once over the whole tier instead of once per parameter,
 * which removes most of the per-operation overhead of tfjs when a tier contains hundreds of small
 * LoRA matrices.
 */
import * as tf from '@tensorflow/tfjs';

/** One parameter's place in a tier's flat tensors. */
export interface SlotEntry {
  name: string;
  shape: number[];
  size: number;
  /** Offset of the parameter's first element in the flat tensors. */
  offset: number;
}

/** The per-parameter slot kinds; each is also the suffix of the slot's state key (`{name}/m`). */
export type SlotKind = 'm' | 'v' | 'accum';

/** The flat slot variables of one tier. */
export class TierSlots {
  /** Parameters in layout order. */
  readonly entries: SlotEntry[] = [];
  /** Total number of elements over all entries. */
  size = 0;

  private readonly indexByName = new Map<string, number>();
  private readonly variables = new Map<SlotKind, tf.Variable>();

  /** @param kinds the slot kinds this tier stores: `m` and `v`, plus `accum` when it accumulates. */
  constructor(readonly kinds: readonly SlotKind[]) {}

  /** Tells whether `name` has slots in this tier. */
  has(name: string): boolean {
    return this.indexByName.has(name);
  }

  /** Returns the entry of `name`, or `undefined` when it has no slots in this tier. */
  entryOf(name: string): SlotEntry | undefined {
    const index = this.indexByName.get(name);
    return index === undefined ? undefined : this.entries[index];
  }

  /** Returns the flat variable of a slot kind; it exists once the tier has an entry. */
  slot(kind: SlotKind): tf.Variable {
    const variable = this.variables.get(kind);
    if (variable === undefined) {
      throw new Error(`TierSlots has no "${kind}" slot: the tier has no parameters yet or does not store that kind`);
    }
    return variable;
  }

  /** Appends parameters with zero slots; their offsets follow the existing entries. */
  append(parameters: ReadonlyArray<{ name: string; shape: number[] }>): void {
    if (parameters.length === 0) {
      return;
    }
    let added = 0;
    for (const { name, shape } of parameters) {
      const size = shape.reduce((product, dimension) => product * dimension, 1);
      this.indexByName.set(name, this.entries.length);
      this.entries.push({ name, shape: [...shape], size, offset: this.size + added });
      added += size;
    }

    for (const kind of this.kinds) {
      const previous = this.variables.get(kind);
      const grown = tf.tidy(() => (previous === undefined ? tf.zeros([added]) : tf.concat([previous, tf.zeros([added])])));
      this.variables.set(kind, tf.variable(grown, false));
      grown.dispose();
      previous?.dispose();
    }
    this.size += added;
  }

  /**
   * Overwrites every slot from per-parameter tensors keyed `{name}/{kind}`, which must cover all
   * entries with matching sizes (the caller validates that).
   */
  load(tensors: Readonly<Record<string, tf.Tensor>>): void {
    for (const kind of this.kinds) {
      const flat = tf.tidy(() =>
        concatFlat(this.entries.map((entry) => tf.reshape(tensors[`${entry.name}/${kind}`] as tf.Tensor, [-1]))),
      );
      this.slot(kind).assign(flat);
      flat.dispose();
    }
  }

  /** Returns new tensors, one per entry, holding the entry's part of a slot in the entry's shape. */
  export(kind: SlotKind): tf.Tensor[] {
    return splitFlat(this.slot(kind), this.entries);
  }

  /** Sets every element of a slot to zero. */
  reset(kind: SlotKind): void {
    const zeros = tf.zeros([this.size]);
    this.slot(kind).assign(zeros);
    zeros.dispose();
  }

  dispose(): void {
    for (const variable of this.variables.values()) {
      variable.dispose();
    }
    this.variables.clear();
  }
}

/** Concatenates 1-D tensors; a single tensor is returned as is. */
export function concatFlat(parts: tf.Tensor[]): tf.Tensor {
  return parts.length === 1 ? (parts[0] as tf.Tensor) : tf.concat(parts);
}

/**
 * Splits a flat tensor into one new tensor per entry, each in the entry's shape.
 *
 * On the wasm backend the values are read once and uploaded per entry. The wasm `Slice` kernel of
 * tfjs-backend-wasm 4.22 copies its whole input out of the heap on every call, so `tf.split` into
 * n parts would copy the flat tensor n times (seconds for a tier of 336 LoRA matrices). Other
 * backends slice without that copy and use `tf.split`.
 */
export function splitFlat(flat: tf.Tensor, entries: readonly SlotEntry[]): tf.Tensor[] {
  if (entries.length === 1) {
    const only = entries[0] as SlotEntry;
    return [tf.reshape(flat, only.shape)];
  }

  if (tf.getBackend() === 'wasm') {
    const values = flat.dataSync() as Float32Array;
    return entries.map((entry) => tf.tensor(values.subarray(entry.offset, entry.offset + entry.size), entry.shape, 'float32'));
  }

  return tf.tidy(() => {
    const pieces = tf.split(flat, entries.map((entry) => entry.size));
    return pieces.map((piece, index) => tf.reshape(piece, (entries[index] as SlotEntry).shape));
  });
}

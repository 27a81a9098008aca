/**
 * NestedAdam: AdamW with parameter tiers that update at different frequencies.
 *
 * Tier k of frequency f_k takes an AdamW step at the optimizer steps that are multiples of f_k
 * (steps count from 1). Between its updates a tier's weights and moments stay unchanged, and the
 * gradients it receives are summed (`accumulate`), averaged (`mean`) or discarded (`drop`). Bias
 * correction uses each tier's own update count, so a tier's first update has the size of a first
 * Adam step however late it comes. With every frequency 1 the optimizer is AdamW.
 */
import * as tf from '@tensorflow/tfjs';

import { ArgumentError, ShapeError } from '../errors.js';
import { isTierActive } from '../scheduler/clock.js';
import { adamwCoefficients, adamwStep } from './adamw.js';
import {
  checkLearningRateValue,
  resolveNestedAdamOptions,
  validateLearningRate,
  type LearningRate,
  type NestedAdamOptions,
  type ResolvedNestedAdamOptions,
  type ResolvedTier,
} from './options.js';
import type { NestedAdamHyperparameters, NestedAdamState } from './state.js';
import { concatFlat, splitFlat, TierSlots, type SlotEntry, type SlotKind } from './tier-slots.js';

/** Per-tier figures returned by {@link NestedAdam.tierStats}. */
export interface TierStats {
  tier: number;
  frequency: number;
  /** Updates the tier has taken. */
  updateCount: number;
  /** Parameters (variables) that have optimizer slots in this tier. */
  parameterCount: number;
  /** Scalar elements over those parameters. */
  elementCount: number;
  learningRateScale: number;
  weightDecay: number;
}

/** A tensor with a name, as tfjs optimizers take and return them (`NamedTensor` of tfjs-core). */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

const SLOT_KINDS: readonly SlotKind[] = ['m', 'v', 'accum'];

/**
 * A tfjs optimizer that runs AdamW over tiers of parameters with different update frequencies.
 *
 * It works wherever a `tf.Optimizer` does, including `model.compile({optimizer})` of a
 * tfjs-layers model, and is registered for tfjs serialisation under the class name `NestedAdam`.
 * Slots are created for a variable when it first receives a gradient (or is restored by
 * {@link NestedAdam.setState}); variables must be float32.
 *
 * @example
 * ```ts
 * const optimizer = new NestedAdam({
 *   learningRate: 1e-3,
 *   tierUpdateFrequencies: [1, 2, 4],
 *   tierMap: { 'hidden/kernel': 0, 'hidden/bias': 1, 'output/kernel': 1, 'output/bias': 2 },
 * });
 * model.compile({ optimizer, loss: 'meanSquaredError' });
 * ```
 */
export class NestedAdam extends tf.Optimizer {
  static className = 'NestedAdam';

  private readonly options: Omit<ResolvedNestedAdamOptions, 'learningRate'>;
  private learningRateOption: LearningRate;
  private stepCount = 0;
  private lastLearningRate: number | null = null;
  private readonly updateCounts: number[];
  private readonly slots: TierSlots[];
  private readonly unmapped: string[] = [];
  private readonly unmappedSet = new Set<string>();
  private exportedWeights: tf.Tensor[] = [];

  constructor(options: NestedAdamOptions = {}) {
    super();
    const { learningRate, ...rest } = resolveNestedAdamOptions(options);
    this.learningRateOption = learningRate;
    this.options = rest;
    this.updateCounts = rest.tiers.map(() => 0);
    this.slots = rest.tiers.map((_, tier) => new TierSlots(this.slotKindsOf(tier)));
    this.iterations_ = 0;
  }

  /** The learning rate: a number, or a function of the optimizer step. Settable between steps. */
  get learningRate(): LearningRate {
    return this.learningRateOption;
  }

  set learningRate(value: LearningRate) {
    validateLearningRate(value);
    this.learningRateOption = value;
  }

  /** Sets the learning rate used from the next step on; the same as assigning {@link learningRate}. */
  setLearningRate(value: LearningRate): void {
    this.learningRate = value;
  }

  /** Optimizer steps taken so far; the first call to `applyGradients` takes step 1. */
  get step(): number {
    return this.stepCount;
  }

  /** Names of the variables that were not in the tier map, in the order they were first seen. */
  get unmappedParameterNames(): readonly string[] {
    return this.unmapped;
  }

  /** Returns the tier of a variable: its tier-map entry, or `unmappedTier` when it has none. */
  tierOf(name: string): number {
    return this.options.tierMap?.get(name) ?? this.options.unmappedTier;
  }

  /**
   * Takes one optimizer step. Active tiers take an AdamW step, and inactive tiers sum or discard
   * their gradients as `inactiveGradients` sets.
   *
   * A variable whose gradient is missing or `null` takes no part in the step: its weight, moments
   * and accumulated gradient stay unchanged. Gradients are not disposed.
   */
  override applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const step = this.stepCount + 1;
    const learningRate = this.learningRateAt(step);
    const gradients = collectGradients(variableGradients);
    const variables = this.prepareVariables(gradients);
    const activeTiers = this.options.tiers.map((tier) => isTierActive(step, tier.frequency));

    tf.tidy(() => {
      this.slots.forEach((slots, tier) => {
        if (slots.entries.length === 0) {
          return;
        }
        if (activeTiers[tier] === true) {
          this.updateTier(tier, gradients, variables, learningRate, (this.updateCounts[tier] as number) + 1);
        } else if (slots.kinds.includes('accum')) {
          this.accumulateTier(tier, gradients);
        }
      });
    });

    this.stepCount = step;
    this.lastLearningRate = learningRate;
    activeTiers.forEach((active, tier) => {
      if (active) {
        this.updateCounts[tier] = (this.updateCounts[tier] as number) + 1;
      }
    });
    this.incrementIterations();
  }

  /** Returns the update count, size and hyperparameters of each tier, indexed by tier. */
  tierStats(): TierStats[] {
    return this.options.tiers.map((tier, index) => {
      const slots = this.slots[index] as TierSlots;
      return {
        tier: index,
        frequency: tier.frequency,
        updateCount: this.updateCounts[index] as number,
        parameterCount: slots.entries.length,
        elementCount: slots.size,
        learningRateScale: tier.learningRateScale,
        weightDecay: tier.weightDecay,
      };
    });
  }

  /**
   * Returns the optimizer's state with copies of its slot tensors, keyed `{name}/m`, `{name}/v`
   * and `{name}/accum`. The caller owns the tensors and disposes them
   * (`tf.dispose(Object.values(state.tensors))`).
   *
   * Variables of the tier map that exist but have not received a gradient yet are included with
   * zero slots, so that the state restores into an optimizer that has not stepped.
   */
  getState(): NestedAdamState {
    const tensors: Record<string, tf.Tensor> = {};

    this.slots.forEach((slots) => {
      if (slots.entries.length === 0) {
        return;
      }
      for (const kind of slots.kinds) {
        const pieces = slots.export(kind);
        slots.entries.forEach((entry, index) => {
          tensors[`${entry.name}/${kind}`] = pieces[index] as tf.Tensor;
        });
      }
    });

    for (const name of this.mappedVariablesWithoutSlots()) {
      const variable = tf.engine().registeredVariables[name] as tf.Variable;
      for (const kind of this.slotKindsOf(this.tierOf(name))) {
        tensors[`${name}/${kind}`] = tf.zeros(variable.shape);
      }
    }

    return {
      step: this.stepCount,
      tierUpdateCounts: [...this.updateCounts],
      hyperparameters: this.hyperparameters(),
      tensors,
    };
  }

  /**
   * Restores a state from {@link getState} (or `stateFromTensors`), after which the optimizer
   * continues exactly as the one that saved it. The state's tensors are copied, not kept.
   *
   * The tier frequencies and `inactiveGradients` must match this optimizer's (an
   * {@link ArgumentError} otherwise). The other recorded hyperparameters are informational: this
   * optimizer keeps its own learning rate, betas, epsilon and weight decay. Raises a
   * {@link ShapeError} when a slot of a variable this optimizer tracks or maps is missing, when a
   * tensor's shape differs from its variable's, or when a key names no existing variable.
   */
  setState(state: NestedAdamState): void {
    this.checkStateCounters(state);
    const names = this.checkStateTensors(state.tensors);

    const newByTier = this.options.tiers.map(() => [] as Array<{ name: string; shape: number[] }>);
    for (const [name, shape] of names) {
      const tier = this.tierOf(name);
      const slots = this.slots[tier] as TierSlots;
      if (!slots.has(name)) {
        newByTier[tier]?.push({ name, shape });
      }
    }
    this.reportUnmapped([...names.keys()]);

    newByTier.forEach((parameters, tier) => this.slots[tier]?.append(parameters));
    for (const slots of this.slots) {
      if (slots.entries.length > 0) {
        slots.load(state.tensors);
      }
    }

    this.stepCount = state.step;
    this.iterations_ = state.step;
    this.updateCounts.splice(0, this.updateCounts.length, ...state.tierUpdateCounts);
    this.lastLearningRate = state.hyperparameters.learningRate;
  }

  /**
   * Returns the iteration count (an int32 scalar named `iter`) followed by every `{name}/m`, then
   * every `{name}/v`, then every `{name}/accum`, as tfjs optimizers do.
   *
   * The optimizer owns the returned tensors: they stay valid until the next `getWeights`,
   * `setWeights` or `dispose` call. Clone them to keep them longer.
   */
  override async getWeights(): Promise<NamedTensor[]> {
    this.disposeExportedWeights();
    const iteration = await this.saveIterations();
    const { tensors } = this.getState();

    const keys = Object.keys(tensors);
    const ordered = SLOT_KINDS.flatMap((kind) => keys.filter((key) => key.endsWith(`/${kind}`)));
    const weights = [iteration, ...ordered.map((name) => ({ name, tensor: tensors[name] as tf.Tensor }))];
    this.exportedWeights = weights.map((weight) => weight.tensor);
    return weights;
  }

  /**
   * Restores weights in the form {@link getWeights} returns: the iteration scalar first, then the
   * slots by name in any order. Tier update counts follow from the iteration count.
   */
  override async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const [iteration, ...slotWeights] = weightValues;
    if (iteration === undefined || iteration.name !== 'iter') {
      throw new ShapeError(
        'OPTIMIZER_STATE_MISSING_TENSOR',
        `NestedAdam.setWeights expects the iteration scalar "iter" first, but got ${
          iteration === undefined ? 'no weights' : `"${iteration.name}"`
        }. Pass the list that getWeights returned.`,
        { details: { firstName: iteration?.name } },
      );
    }

    const step = (await iteration.tensor.data())[0] as number;
    const tensors: Record<string, tf.Tensor> = {};
    for (const { name, tensor } of slotWeights) {
      if (name in tensors) {
        throw new ShapeError(
          'OPTIMIZER_STATE_DUPLICATE_TENSOR',
          `NestedAdam.setWeights got the weight "${name}" twice. Pass each slot once.`,
          { details: { name } },
        );
      }
      tensors[name] = tensor;
    }

    this.setState({
      step,
      tierUpdateCounts: this.options.tiers.map((tier) => Math.floor(step / tier.frequency)),
      hyperparameters: this.hyperparameters(),
      tensors,
    });
    // Disposed only now, because `weightValues` may be this optimizer's own getWeights() result.
    this.disposeExportedWeights();
  }

  /**
   * Returns the options as a tfjs config, which {@link NestedAdam.fromConfig} turns back into an
   * equal optimizer. The logger is not part of it.
   *
   * In the config's `tierMap`, `%` and `_` in variable names are percent-encoded (`%25`, `%5F`),
   * because tfjs-layers converts snake_case keys to camelCase when it loads a saved training config.
   *
   * NOTE: a function learning rate cannot be serialised; the config records the number it returns
   * for the next step.
   */
  override getConfig(): tf.serialization.ConfigDict {
    const { beta1, beta2, epsilon, weightDecay, tiers, tierMap, inactiveGradients, unmappedTier } = this.options;
    return {
      learningRate: this.learningRateAt(this.stepCount + 1),
      beta1,
      beta2,
      epsilon,
      weightDecay,
      tiers: tiers.map((tier) => ({ ...tier })),
      tierMap: tierMap === null ? null : Object.fromEntries([...tierMap].map(([name, tier]) => [encodeConfigName(name), tier])),
      inactiveGradients,
      unmappedTier,
    };
  }

  /** Builds an optimizer from the config of {@link NestedAdam.getConfig}. */
  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    const { tierMap, ...rest } = config;
    if (tierMap === null || tierMap === undefined || typeof tierMap !== 'object' || Array.isArray(tierMap)) {
      return new cls({ ...rest, ...(tierMap === null || tierMap === undefined ? {} : { tierMap }) });
    }
    const decoded = Object.fromEntries(Object.entries(tierMap).map(([name, tier]) => [decodeConfigName(name), tier]));
    return new cls({ ...rest, tierMap: decoded });
  }

  /** Disposes every slot variable and every tensor returned by {@link getWeights}. */
  override dispose(): void {
    this.disposeExportedWeights();
    for (const slots of this.slots) {
      slots.dispose();
    }
    super.dispose();
  }

  private slotKindsOf(tier: number): SlotKind[] {
    const accumulates = this.options.inactiveGradients !== 'drop' && (this.options.tiers[tier] as ResolvedTier).frequency > 1;
    return accumulates ? ['m', 'v', 'accum'] : ['m', 'v'];
  }

  private learningRateAt(step: number): number {
    const learningRate = this.learningRateOption;
    return typeof learningRate === 'number' ? learningRate : checkLearningRateValue(learningRate(step), step);
  }

  private hyperparameters(): NestedAdamHyperparameters {
    const { beta1, beta2, epsilon, weightDecay, tiers, inactiveGradients, unmappedTier } = this.options;
    return {
      learningRate: this.lastLearningRate ?? this.learningRateAt(1),
      beta1,
      beta2,
      epsilon,
      weightDecay,
      tiers: tiers.map((tier) => ({ ...tier })),
      inactiveGradients,
      unmappedTier,
    };
  }

  /**
   * Looks up the variable of each gradient, checks shapes and dtypes, and creates slots for
   * variables seen for the first time.
   */
  private prepareVariables(gradients: Map<string, tf.Tensor>): Map<string, tf.Variable> {
    const registered = tf.engine().registeredVariables;
    const variables = new Map<string, tf.Variable>();
    const newByTier = this.options.tiers.map(() => [] as Array<{ name: string; shape: number[] }>);

    for (const [name, gradient] of gradients) {
      const variable = registered[name];
      if (variable === undefined) {
        throw new ArgumentError(
          'OPTIMIZER_UNKNOWN_VARIABLE',
          `NestedAdam got a gradient for "${name}", but no tfjs variable has that name. ` +
            'Key gradients by the names of the variables to update (variable.name).',
          { details: { name } },
        );
      }
      if (!sameShape(gradient.shape, variable.shape)) {
        throw new ShapeError(
          'OPTIMIZER_GRADIENT_SHAPE_MISMATCH',
          `NestedAdam got a gradient of shape [${gradient.shape}] for variable "${name}" of shape [${variable.shape}]. ` +
            'Pass gradients with the shapes of their variables.',
          { details: { name, gradientShape: gradient.shape, variableShape: variable.shape } },
        );
      }

      const tier = this.tierOf(name);
      const slots = this.slots[tier] as TierSlots;
      if (!slots.has(name)) {
        if (variable.dtype !== 'float32') {
          throw new ArgumentError(
            'OPTIMIZER_UNSUPPORTED_DTYPE',
            `NestedAdam cannot update variable "${name}" of dtype ${variable.dtype}; it supports float32 variables only.`,
            { details: { name, dtype: variable.dtype } },
          );
        }
        newByTier[tier]?.push({ name, shape: variable.shape });
      } else if (!sameShape(slots.entryOf(name)?.shape ?? [], variable.shape)) {
        throw new ShapeError(
          'OPTIMIZER_VARIABLE_SHAPE_CHANGED',
          `Variable "${name}" now has shape [${variable.shape}], which differs from the shape its optimizer slots ` +
            'were created with. Create a new optimizer for the new variables.',
          { details: { name, variableShape: variable.shape } },
        );
      }
      variables.set(name, variable);
    }

    this.reportUnmapped(newByTier.flat().map((parameter) => parameter.name));
    newByTier.forEach((parameters, tier) => this.slots[tier]?.append(parameters));
    return variables;
  }

  /** Records and reports, once per name, the variables that have no tier-map entry. */
  private reportUnmapped(names: readonly string[]): void {
    const tierMap = this.options.tierMap;
    if (tierMap === null) {
      return;
    }
    const fresh = names.filter((name) => !tierMap.has(name) && !this.unmappedSet.has(name));
    if (fresh.length === 0) {
      return;
    }
    for (const name of fresh) {
      this.unmappedSet.add(name);
      this.unmapped.push(name);
    }
    const tier = this.options.unmappedTier;
    const frequency = (this.options.tiers[tier] as ResolvedTier).frequency;
    this.options.logger?.warn(
      `NestedAdam: ${fresh.length} variable(s) have no tier-map entry and train in tier ${tier} ` +
        `(update frequency ${frequency}): ${fresh.join(', ')}`,
      { names: fresh, tier },
    );
  }

  /** Takes the AdamW step of an active tier over its flat slots. */
  private updateTier(
    tier: number,
    gradients: Map<string, tf.Tensor>,
    variables: Map<string, tf.Variable>,
    learningRate: number,
    updateCount: number,
  ): void {
    const slots = this.slots[tier] as TierSlots;
    const settings = this.options.tiers[tier] as ResolvedTier;
    const present = slots.entries.map((entry) => gradients.has(entry.name));
    if (!present.includes(true)) {
      return;
    }

    // The gradient to apply: this step's, plus the sum of the inactive steps since the last update.
    let gradient = gatherFlat(slots.entries, gradients);
    if (slots.kinds.includes('accum')) {
      gradient = tf.add(gradient, slots.slot('accum'));
      if (this.options.inactiveGradients === 'mean') {
        gradient = tf.div(gradient, settings.frequency);
      }
    }

    const weight = concatFlat(
      slots.entries.map((entry) => {
        const variable = variables.get(entry.name) ?? tf.engine().registeredVariables[entry.name];
        return variable === undefined ? tf.zeros([entry.size]) : tf.reshape(variable, [-1]);
      }),
    );
    const coefficients = adamwCoefficients({
      learningRate: learningRate * settings.learningRateScale,
      beta1: this.options.beta1,
      beta2: this.options.beta2,
      epsilon: this.options.epsilon,
      weightDecay: settings.weightDecay,
      updateCount,
    });
    const result = adamwStep(weight, gradient, slots.slot('m'), slots.slot('v'), coefficients);

    // Store the moments and clear the accumulator; variables without a gradient keep theirs.
    const allPresent = !present.includes(false);
    const mask = allPresent ? null : presenceMask(slots.entries, present, slots.size);
    assignMasked(slots.slot('m'), result.firstMoment, mask);
    assignMasked(slots.slot('v'), result.secondMoment, mask);
    if (slots.kinds.includes('accum')) {
      assignMasked(slots.slot('accum'), tf.zerosLike(gradient), mask);
    }

    // Write the new weights back into their variables.
    const pieces = splitFlat(result.weight, slots.entries);
    slots.entries.forEach((entry, index) => {
      if (present[index] === true) {
        (variables.get(entry.name) as tf.Variable).assign(pieces[index] as tf.Tensor);
      }
    });
  }

  /** Adds this step's gradients of an inactive tier to its accumulator. */
  private accumulateTier(tier: number, gradients: Map<string, tf.Tensor>): void {
    const slots = this.slots[tier] as TierSlots;
    if (!slots.entries.some((entry) => gradients.has(entry.name))) {
      return;
    }
    const accumulator = slots.slot('accum');
    accumulator.assign(tf.add(accumulator, gatherFlat(slots.entries, gradients)));
  }

  /** Names of tier-map variables that exist in the tfjs engine but have no slots yet. */
  private mappedVariablesWithoutSlots(): string[] {
    const tierMap = this.options.tierMap;
    if (tierMap === null) {
      return [];
    }
    const registered = tf.engine().registeredVariables;
    return [...tierMap.keys()].filter(
      (name) => registered[name] !== undefined && !(this.slots[this.tierOf(name)] as TierSlots).has(name),
    );
  }

  /** Checks the step, the tier counters and the hyperparameters that must match. */
  private checkStateCounters(state: NestedAdamState): void {
    if (typeof state !== 'object' || state === null) {
      throw stateMismatch(`it is ${String(state)}, not an object from getState()`, {});
    }
    const { step, tierUpdateCounts, hyperparameters } = state;
    const frequencies = this.options.tiers.map((tier) => tier.frequency);

    if (!Number.isInteger(step) || step < 0) {
      throw stateMismatch(`its step ${step} is not an integer >= 0`, { step });
    }
    if (typeof hyperparameters !== 'object' || hyperparameters === null || !Array.isArray(hyperparameters.tiers)) {
      throw stateMismatch('it has no hyperparameters with a tiers list', {});
    }
    const savedFrequencies = hyperparameters.tiers.map((tier) => tier.frequency);
    if (!sameShape(savedFrequencies, frequencies)) {
      throw stateMismatch(
        `it was saved with tier frequencies [${savedFrequencies}], but this optimizer has [${frequencies}]`,
        { savedFrequencies, frequencies },
      );
    }
    if (hyperparameters.inactiveGradients !== this.options.inactiveGradients) {
      throw stateMismatch(
        `it was saved with inactiveGradients "${hyperparameters.inactiveGradients}", but this optimizer uses ` +
          `"${this.options.inactiveGradients}"`,
        { saved: hyperparameters.inactiveGradients, current: this.options.inactiveGradients },
      );
    }
    const expectedCounts = frequencies.map((frequency) => Math.floor(step / frequency));
    if (!Array.isArray(tierUpdateCounts) || !sameShape(tierUpdateCounts, expectedCounts)) {
      throw stateMismatch(
        `its tier update counts [${tierUpdateCounts}] do not match step ${step}, which implies [${expectedCounts}]`,
        { tierUpdateCounts, expectedCounts },
      );
    }
  }

  /**
   * Checks the state's tensors against the variables and returns the variable names with their
   * shapes, in the order of the keys.
   */
  private checkStateTensors(tensors: Readonly<Record<string, tf.Tensor>>): Map<string, number[]> {
    const registered = tf.engine().registeredVariables;
    const kindsByName = new Map<string, Set<string>>();

    for (const key of Object.keys(tensors)) {
      const separator = key.lastIndexOf('/');
      const kind = key.slice(separator + 1);
      if (separator <= 0 || !(SLOT_KINDS as readonly string[]).includes(kind)) {
        throw new ShapeError(
          'OPTIMIZER_STATE_UNKNOWN_KEY',
          `NestedAdam state key "${key}" does not end in /m, /v or /accum. Pass the tensors that getState returned.`,
          { details: { key } },
        );
      }
      const name = key.slice(0, separator);
      const kinds = kindsByName.get(name) ?? new Set<string>();
      kinds.add(kind);
      kindsByName.set(name, kinds);
    }

    const shapes = new Map<string, number[]>();
    for (const [name, kinds] of kindsByName) {
      const tier = this.tierOf(name);
      const slots = this.slots[tier] as TierSlots;
      const expected = slots.entryOf(name)?.shape ?? registered[name]?.shape;
      if (expected === undefined) {
        throw new ShapeError(
          'OPTIMIZER_STATE_UNKNOWN_VARIABLE',
          `NestedAdam state has slots for "${name}", but no tfjs variable has that name. ` +
            'Create the model variables before restoring the optimizer state.',
          { details: { name } },
        );
      }

      const required = this.slotKindsOf(tier);
      const missing = required.filter((kind) => !kinds.has(kind));
      const unexpected = [...kinds].filter((kind) => !(required as string[]).includes(kind));
      if (missing.length > 0 || unexpected.length > 0) {
        throw new ShapeError(
          'OPTIMIZER_STATE_MISSING_TENSOR',
          `NestedAdam state for "${name}" (tier ${tier}) has slots [${[...kinds]}], but that tier stores ` +
            `[${required}]. Restore a state saved with the same tiers, tier map and inactiveGradients.`,
          { details: { name, tier, kinds: [...kinds], required } },
        );
      }

      for (const kind of required) {
        const tensor = tensors[`${name}/${kind}`] as tf.Tensor;
        if (!sameShape(tensor.shape, expected) || tensor.dtype !== 'float32') {
          throw new ShapeError(
            'OPTIMIZER_STATE_SHAPE_MISMATCH',
            `NestedAdam state tensor "${name}/${kind}" has shape [${tensor.shape}] and dtype ${tensor.dtype}, ` +
              `but variable "${name}" has shape [${expected}] and dtype float32. Restore a state saved for these variables.`,
            { details: { name, kind, shape: tensor.shape, expectedShape: expected, dtype: tensor.dtype } },
          );
        }
      }
      shapes.set(name, expected);
    }

    const tracked = this.slots.flatMap((slots) => slots.entries.map((entry) => entry.name));
    const missingNames = [...tracked, ...this.mappedVariablesWithoutSlots()].filter((name) => !kindsByName.has(name));
    if (missingNames.length > 0) {
      throw new ShapeError(
        'OPTIMIZER_STATE_MISSING_TENSOR',
        `NestedAdam state has no slots for ${missingNames.length} variable(s) this optimizer tracks or maps: ` +
          `${missingNames.slice(0, 5).join(', ')}${missingNames.length > 5 ? ', ...' : ''}. ` +
          'Restore a state saved for the same variables.',
        { details: { missing: missingNames } },
      );
    }
    return shapes;
  }

  private disposeExportedWeights(): void {
    tf.dispose(this.exportedWeights);
    this.exportedWeights = [];
  }
}

tf.serialization.registerClass(NestedAdam);

function collectGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): Map<string, tf.Tensor> {
  const gradients = new Map<string, tf.Tensor>();
  if (Array.isArray(variableGradients)) {
    for (const { name, tensor } of variableGradients) {
      if (tensor != null) {
        gradients.set(name, tensor);
      }
    }
  } else {
    for (const [name, tensor] of Object.entries(variableGradients)) {
      if (tensor != null) {
        gradients.set(name, tensor);
      }
    }
  }
  return gradients;
}

/** Concatenates the gradients of a tier's entries into one flat tensor, with zeros where one is missing. */
function gatherFlat(entries: readonly SlotEntry[], gradients: Map<string, tf.Tensor>): tf.Tensor {
  return concatFlat(
    entries.map((entry) => {
      const gradient = gradients.get(entry.name);
      return gradient === undefined ? tf.zeros([entry.size]) : tf.reshape(gradient, [-1]);
    }),
  );
}

/** Builds a flat bool tensor that is true over the elements of the entries that have a gradient. */
function presenceMask(entries: readonly SlotEntry[], present: readonly boolean[], size: number): tf.Tensor {
  const mask = new Uint8Array(size);
  entries.forEach((entry, index) => {
    if (present[index] === true) {
      mask.fill(1, entry.offset, entry.offset + entry.size);
    }
  });
  return tf.tensor1d(mask, 'bool');
}

function assignMasked(target: tf.Variable, value: tf.Tensor, mask: tf.Tensor | null): void {
  target.assign(mask === null ? value : tf.where(mask, value, target));
}

/** Percent-encodes `%` and `_`, so that a name has no underscore for tfjs-layers to camel-case. */
function encodeConfigName(name: string): string {
  return name.replace(/%/g, '%25').replace(/_/g, '%5F');
}

function decodeConfigName(name: string): string {
  return name.replace(/%(25|5F)/g, (escape) => (escape === '%25' ? '%' : '_'));
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((value, index) => value === b[index]);
}

function stateMismatch(reason: string, details: Record<string, unknown>): ArgumentError {
  return new ArgumentError(
    'OPTIMIZER_STATE_MISMATCH',
    `Cannot restore the NestedAdam state: ${reason}. Build the optimizer with the options the state was saved with.`,
    { details },
  );
}

/**
 * Error classes of the library. Every error it throws on purpose is a {@link NestedLearningError}
 * with a stable `code`, so callers can branch on `error.code` instead of parsing messages.
 */

const MARKER = Symbol.for('nested-learning.error');

/** Options shared by every library error. */
export interface NestedLearningErrorOptions {
  /** The underlying error, when this one wraps another. */
  cause?: unknown;
  /** Values that locate the failure (a path, a field, a tensor name), for programs that inspect it. */
  details?: Record<string, unknown>;
}

/**
 * Base class of every error the library throws on purpose.
 *
 * Use {@link NestedLearningError.isInstance} rather than `instanceof` when two copies of the
 * package may be installed: it checks a marker registered with `Symbol.for`, which both copies share.
 */
export class NestedLearningError extends Error {
  readonly [MARKER] = true;

  /** A stable machine-readable identifier, for example `CONFIG_INVALID`. */
  readonly code: string;

  /** Values that locate the failure. */
  readonly details: Record<string, unknown>;

  constructor(code: string, message: string, options: NestedLearningErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details ?? {};
  }

  /** Tells whether `value` is an error of this library, across duplicate installs. */
  static isInstance(value: unknown): value is NestedLearningError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[MARKER] === true;
  }
}

/** A configuration object or file is invalid. */
export class ConfigError extends NestedLearningError {}

/** A file on disk (safetensors, JSONL, JSON, adapter, model folder) is missing or malformed. */
export class FileFormatError extends NestedLearningError {}

/** A tensor shape, name or dtype does not match what the model or optimizer expects. */
export class ShapeError extends NestedLearningError {}

/** An argument passed to a library function or constructor is invalid. */
export class ArgumentError extends NestedLearningError {}

/** Training could not continue (for example after too many non-finite steps). */
export class TrainingError extends NestedLearningError {}

/** The requested tfjs backend is not installed or failed to initialise. */
export class BackendError extends NestedLearningError {}

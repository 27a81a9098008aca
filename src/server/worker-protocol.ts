/**
 * Messages between the server and the child process that runs one training. The channel uses
 * Node's `advanced` serialization (structured clone), so NaN and the infinities in metrics
 * records arrive unchanged.
 */
import type { NestedLearningConfig, TrainerEventMap } from '../index.js';

/** Server to training process. */
export type ParentMessage =
  /** Sets up the trainer for `config` and trains. Sent once, first. */
  | { type: 'start'; config: NestedLearningConfig }
  /** Stops the run after the current step through the trainer's AbortSignal. */
  | { type: 'stop' };

/** An error as it crosses the process boundary. */
export interface SerializedError {
  name: string;
  code: string | undefined;
  message: string;
  /** The error's `details`, reduced to what JSON can hold. */
  details: Record<string, unknown> | undefined;
}

/** Trainer events as they cross the process boundary; `error` carries a serialized error. */
export type ForwardedEvent =
  | { name: 'step'; data: TrainerEventMap['step'] }
  | { name: 'eval'; data: TrainerEventMap['eval'] }
  | { name: 'checkpoint'; data: TrainerEventMap['checkpoint'] }
  | { name: 'done'; data: TrainerEventMap['done'] };

/** Training process to server. */
export type WorkerMessage =
  /** `setup()` finished: the model, adapter, tier map, optimizer and data are ready. */
  | { type: 'ready'; experimentPath: string; totalSteps: number; startStep: number; tierCount: number }
  | { type: 'event'; event: ForwardedEvent }
  /** The run failed, in `setup()` or in `train()`; the process exits next. */
  | { type: 'failed'; step: number; error: SerializedError }
  /** Live tfjs tensors before `setup()` and after `dispose()`; sent last, before the process exits. */
  | { type: 'tensors'; beforeSetup: number; afterDispose: number }
  /** A line of the trainer's logger. */
  | { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; message: string; fields: Record<string, unknown> | undefined };

/** Turns any thrown value into a {@link SerializedError}. */
export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    const withCode = error as Error & { code?: unknown; details?: unknown };
    return {
      name: error.name,
      code: typeof withCode.code === 'string' ? withCode.code : undefined,
      message: error.message,
      details: toJsonObject(withCode.details),
    };
  }
  return { name: 'Error', code: undefined, message: String(error), details: undefined };
}

/** Reduces a value to plain JSON data; what JSON cannot hold (functions, cycles) is left out. */
export function toJsonObject(value: unknown): Record<string, unknown> | undefined {
  if (typeof value !== 'object' || value === null) {
    return undefined;
  }
  try {
    return JSON.parse(JSON.stringify(value)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

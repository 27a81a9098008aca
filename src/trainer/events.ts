/**
 * Events of a training run, for embedders: `step`, `eval`, `checkpoint`, `done` and `error`.
 *
 * The same records reach listeners registered with `on()` and consumers of the async iterator from
 * `events()`. Listeners run synchronously, in registration order, when the trainer emits.
 */
import type { Logger } from '../logger.js';
import { silentLogger } from '../logger.js';
import type { EvalMetricsRecord, TrainMetricsRecord } from './metrics.js';

/** Kind of checkpoint folder in a `checkpoint` event. */
export type CheckpointKind = 'periodic' | 'best' | 'final' | 'manual';

/** Record of a `checkpoint` event: a checkpoint folder was written completely. */
export interface CheckpointEventRecord {
  /** Training step at which the checkpoint was written. */
  step: number;
  /** Folder name under `checkpoints/`, for example `checkpoint_0000100`, `best` or `final`. */
  name: string;
  /** Absolute path of the folder. */
  path: string;
  kind: CheckpointKind;
  /** True when the run was stopped (by a signal or `stop()`) before its last step. */
  stopped: boolean;
}

/** Reason a run ended. */
export type DoneReason = 'completed' | 'stopped' | 'early_stopped';

/** Record of a `done` event: the run ended without an error. */
export interface DoneEventRecord {
  /** Last optimizer step taken. */
  step: number;
  reason: DoneReason;
  /** Best validation loss seen, or `undefined` when nothing was evaluated. */
  bestValLoss: number | undefined;
  /** Path of the `final/` checkpoint. */
  finalCheckpointPath: string;
  /** Number of steps skipped because of a non-finite loss or gradient norm. */
  skippedSteps: number;
  /** Training wall time in seconds, summed over resumed sessions. */
  elapsedTime: number;
}

/** Record of an `error` event: the run ended with an error, which `train()` also rejects with. */
export interface ErrorEventRecord {
  /** Last optimizer step completed before the error. */
  step: number;
  error: Error;
  /** `error.code` when the error is a library error. */
  code: string | undefined;
  message: string;
}

/** Event names and the record each one carries. */
export interface TrainerEventMap {
  step: TrainMetricsRecord;
  eval: EvalMetricsRecord;
  checkpoint: CheckpointEventRecord;
  done: DoneEventRecord;
  error: ErrorEventRecord;
}

/** Name of a trainer event. */
export type TrainerEventName = keyof TrainerEventMap;

/** One event as the async iterator yields it. */
export type TrainerEvent = { [Name in TrainerEventName]: { type: Name; data: TrainerEventMap[Name] } }[TrainerEventName];

/** A listener of one event. */
export type TrainerEventListener<Name extends TrainerEventName> = (data: TrainerEventMap[Name]) => void;

/**
 * A typed event emitter with an async iterator view.
 *
 * A listener that throws does not stop the run: the error goes to the logger, because an
 * embedder's display code failing should not lose the training it displays.
 */
export class TrainerEventEmitter {
  private readonly listeners = new Map<TrainerEventName, Set<(data: never) => void>>();
  private readonly queues = new Set<EventQueue>();

  constructor(private readonly logger: Logger = silentLogger) {}

  /** Registers a listener and returns a function that removes it. */
  on<Name extends TrainerEventName>(event: Name, listener: TrainerEventListener<Name>): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as (data: never) => void);
    return () => this.off(event, listener);
  }

  /** Removes a listener registered with {@link TrainerEventEmitter.on}. */
  off<Name extends TrainerEventName>(event: Name, listener: TrainerEventListener<Name>): void {
    this.listeners.get(event)?.delete(listener as (data: never) => void);
  }

  /**
   * Returns an async iterator over the events emitted from now on. It ends after yielding the next
   * `done` or `error` event, or when the consumer breaks out of its loop.
   *
   * NOTE: events are buffered until consumed, so an iterator that is never read keeps every record
   * of the run in memory until the run ends.
   */
  events(): AsyncIterableIterator<TrainerEvent> {
    const queue = new EventQueue(() => this.queues.delete(queue));
    this.queues.add(queue);
    return queue;
  }

  /** Delivers `data` to the listeners of `event` and to every open iterator. */
  emit<Name extends TrainerEventName>(event: Name, data: TrainerEventMap[Name]): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        (listener as TrainerEventListener<Name>)(data);
      } catch (error) {
        this.logger.error(`A "${event}" event listener threw; the run continues.`, { event, error });
      }
    }

    for (const queue of [...this.queues]) {
      queue.push({ type: event, data } as TrainerEvent);
    }
  }
}

/** The buffer behind one `events()` iterator. */
class EventQueue implements AsyncIterableIterator<TrainerEvent> {
  private readonly buffered: TrainerEvent[] = [];
  private readonly waiting: ((result: IteratorResult<TrainerEvent>) => void)[] = [];
  private ended = false;

  constructor(private readonly detach: () => void) {}

  push(event: TrainerEvent): void {
    if (this.ended) {
      return;
    }
    const isLast = event.type === 'done' || event.type === 'error';
    if (isLast) {
      this.ended = true;
      this.detach();
    }

    const waiter = this.waiting.shift();
    if (waiter !== undefined) {
      waiter({ value: event, done: false });
    } else {
      this.buffered.push(event);
    }

    if (isLast) {
      this.resolveWaitersAsDone();
    }
  }

  next(): Promise<IteratorResult<TrainerEvent>> {
    const event = this.buffered.shift();
    if (event !== undefined) {
      return Promise.resolve({ value: event, done: false });
    }
    if (this.ended) {
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  return(): Promise<IteratorResult<TrainerEvent>> {
    this.ended = true;
    this.buffered.length = 0;
    this.detach();
    this.resolveWaitersAsDone();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<TrainerEvent> {
    return this;
  }

  private resolveWaitersAsDone(): void {
    for (const waiter of this.waiting.splice(0)) {
      waiter({ value: undefined, done: true });
    }
  }
}

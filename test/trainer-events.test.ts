import { describe, expect, it } from 'vitest';

import type { Logger } from '../src/logger.js';
import type { TrainerEvent } from '../src/trainer/events.js';
import { TrainerEventEmitter } from '../src/trainer/events.js';
import type { TrainMetricsRecord } from '../src/trainer/metrics.js';

function stepRecord(step: number): TrainMetricsRecord {
  return {
    step,
    loss: 1,
    learningRate: 1e-3,
    gradNorm: 0.5,
    activeTiers: [0],
    tokens: 10,
    trainedTokens: 10 * step,
    tokensPerSecond: 100,
    stepTime: 0.1,
    elapsedTime: 0.1 * step,
    tierStats: [],
    skipped: false,
    skippedSteps: 0,
    timestamp: '2026-01-01T00:00:00.000Z',
  };
}

const done = { step: 2, reason: 'completed' as const, bestValLoss: undefined, finalCheckpointPath: '/x', skippedSteps: 0, elapsedTime: 1 };

describe('TrainerEventEmitter', () => {
  it('delivers records to listeners', () => {
    const emitter = new TrainerEventEmitter();
    const seen: number[] = [];
    const unsubscribe = emitter.on('step', (record) => seen.push(record.step));

    emitter.emit('step', stepRecord(1));
    unsubscribe();
    emitter.emit('step', stepRecord(2));

    expect(seen).toEqual([1]);
  });

  it('off removes a listener', () => {
    const emitter = new TrainerEventEmitter();
    const seen: number[] = [];
    const listener = (record: TrainMetricsRecord): void => {
      seen.push(record.step);
    };
    emitter.on('step', listener);
    emitter.off('step', listener);
    emitter.emit('step', stepRecord(1));
    expect(seen).toEqual([]);
  });

  it('iterator ends after done', async () => {
    const emitter = new TrainerEventEmitter();
    const iterator = emitter.events();
    const consumed = (async () => {
      const events: TrainerEvent[] = [];
      for await (const event of iterator) {
        events.push(event);
      }
      return events;
    })();

    const first = stepRecord(1);
    emitter.emit('step', first);
    emitter.emit('step', stepRecord(2));
    emitter.emit('done', done);
    emitter.emit('step', stepRecord(3));

    const events = await consumed;
    expect(events.map((event) => event.type)).toEqual(['step', 'step', 'done']);
    expect(events[0]?.data).toBe(first);
  });

  it('iterator ends after error', async () => {
    const emitter = new TrainerEventEmitter();
    const iterator = emitter.events();
    const error = new Error('boom');
    emitter.emit('error', { step: 3, error, code: undefined, message: 'boom' });

    const first = await iterator.next();
    const second = await iterator.next();
    expect(first.done).toBe(false);
    expect(first.value).toEqual({ type: 'error', data: { step: 3, error, code: undefined, message: 'boom' } });
    expect(second.done).toBe(true);
  });

  it('break detaches the iterator', async () => {
    const emitter = new TrainerEventEmitter();
    const iterator = emitter.events();
    emitter.emit('step', stepRecord(1));
    for await (const event of iterator) {
      expect(event.type).toBe('step');
      break;
    }
    emitter.emit('step', stepRecord(2));
    expect((await iterator.next()).done).toBe(true);
  });

  it('throwing listener is logged', () => {
    const errors: string[] = [];
    const logger: Logger = { debug() {}, info() {}, warn() {}, error: (message) => errors.push(message) };
    const emitter = new TrainerEventEmitter(logger);
    const seen: number[] = [];
    emitter.on('step', () => {
      throw new Error('display failed');
    });
    emitter.on('step', (record) => seen.push(record.step));

    emitter.emit('step', stepRecord(1));

    expect(seen).toEqual([1]);
    expect(errors).toEqual(['A "step" event listener threw; the run continues.']);
  });
});

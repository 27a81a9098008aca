/**
 * Entry point of the child process that runs one training for the server. It waits for a
 * `start` message, sets up a `NestedLoRATrainer`, forwards the trainer's events to the server,
 * and turns a `stop` message into an abort of the trainer's AbortSignal. The process exits once
 * the run has ended and its last message has been handed to the channel.
 */
import * as tf from '@tensorflow/tfjs';

import { NestedLearningConfig, NestedLoRATrainer, type Logger } from '../index.js';
import { serializeError, toJsonObject, type ForwardedEvent, type ParentMessage, type WorkerMessage } from './worker-protocol.js';

const controller = new AbortController();
let started = false;
let lastStep = 0;

process.on('message', (message: ParentMessage) => {
  if (message.type === 'stop') {
    controller.abort();
  } else if (message.type === 'start' && !started) {
    started = true;
    void run(message.config);
  }
});

// The server going away (its process ended) stops the run the same way a stop request does.
process.on('disconnect', () => controller.abort());

// Ctrl-C in a terminal signals the whole process group. The server decides what happens to the
// run (it sends `stop` when it closes), so the signal must not kill this process mid-checkpoint.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => controller.abort());

async function run(configInput: NestedLearningConfig): Promise<void> {
  const tensorsBeforeSetup = tf.memory().numTensors;
  let trainer: NestedLoRATrainer | undefined;
  try {
    const config = NestedLearningConfig.parse(configInput);
    trainer = new NestedLoRATrainer(config, { logger: ipcLogger });
    forwardEvents(trainer);

    await trainer.setup();
    send({
      type: 'ready',
      experimentPath: trainer.experimentFolder.root,
      totalSteps: config.numSteps,
      startStep: trainer.step,
      tierCount: config.numTiers,
    });

    await trainer.train({ signal: controller.signal });
  } catch (error) {
    send({ type: 'failed', step: lastStep, error: serializeError(error) });
    process.exitCode = 1;
  }

  // Tensors left after dispose() are a leak of the library. The server logs and reports the count.
  try {
    trainer?.dispose();
  } catch (error) {
    ipcLogger.warn('Disposing the trainer failed.', { error });
  }
  send({ type: 'tensors', beforeSetup: tensorsBeforeSetup, afterDispose: tf.memory().numTensors });

  // Every message must reach the server before the process ends.
  await pendingSend;
  process.exit();
}

function forwardEvents(trainer: NestedLoRATrainer): void {
  const forward = (event: ForwardedEvent): void => send({ type: 'event', event });
  trainer.on('step', (data) => {
    lastStep = data.step;
    forward({ name: 'step', data });
  });
  trainer.on('eval', (data) => forward({ name: 'eval', data }));
  trainer.on('checkpoint', (data) => forward({ name: 'checkpoint', data }));
  trainer.on('done', (data) => forward({ name: 'done', data }));
}

let pendingSend: Promise<void> = Promise.resolve();

function send(message: WorkerMessage): void {
  if (!process.connected || process.send === undefined) {
    return;
  }
  pendingSend = new Promise((resolve) => {
    process.send?.(message, undefined, undefined, () => resolve());
  });
}

function logAt(level: 'debug' | 'info' | 'warn' | 'error'): (message: string, fields?: Record<string, unknown>) => void {
  return (message, fields) => send({ type: 'log', level, message, fields: serializeFields(fields) });
}

const ipcLogger: Logger = { debug: logAt('debug'), info: logAt('info'), warn: logAt('warn'), error: logAt('error') };

function serializeFields(fields: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (fields === undefined) {
    return undefined;
  }
  const plain: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    plain[key] = value instanceof Error ? serializeError(value) : value;
  }
  return toJsonObject(plain);
}

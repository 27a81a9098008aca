/**
 * The one training run of a server: a child process that runs `NestedLoRATrainer`, the state the
 * API reports about it, the records it produced, and the listeners of its events.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { FastifyBaseLogger } from 'fastify';

import type { CheckpointEventRecord, DoneEventRecord, DoneReason, NestedLearningConfig, TrainerEventMap } from '../index.js';
import { trainingProcessScript } from './locations.js';
import type { ForwardedEvent, ParentMessage, SerializedError, WorkerMessage } from './worker-protocol.js';

type TrainMetricsRecord = TrainerEventMap['step'];
type EvalMetricsRecord = TrainerEventMap['eval'];

/** State of the server's run. */
export type RunStatus = 'idle' | 'running' | 'stopping' | 'completed' | 'stopped' | 'error';

/** Statuses of a run whose training process is alive. */
const ACTIVE_STATUSES: ReadonlySet<RunStatus> = new Set(['running', 'stopping']);

/** Stage of a run: setting up, training, or ended. */
export type RunPhase = 'setup' | 'training' | 'finished';

/** State of the current or last run, as `GET /nested-learning/status` returns it. */
export interface RunSnapshot {
  status: RunStatus;
  phase: RunPhase | null;
  experimentName: string | null;
  experimentPath: string | null;
  /** Last optimizer step taken: 0 before the first step, or the checkpoint's step when resuming. */
  currentStep: number;
  /** Steps the run trains for (`numSteps`). */
  totalSteps: number | null;
  startedAt: string | null;
  finishedAt: string | null;
  /** Per-tier statistics from the last step record. */
  tierStats: TrainMetricsRecord['tierStats'] | null;
  lastMetrics: { train: TrainMetricsRecord | null; eval: EvalMetricsRecord | null };
  bestValLoss: number | null;
  /** Reason the run ended, once it ended without an error. */
  doneReason: DoneReason | null;
  /** Path of the `final/` checkpoint, once written. */
  finalCheckpointPath: string | null;
  error: { code: string | null; message: string } | null;
  /** Process id of the training process while it runs. */
  pid: number | null;
  /**
   * Live tfjs tensors in the training process before setup and after the trainer was disposed,
   * once the run ended; a difference means tensors leaked.
   */
  tensorCounts: { beforeSetup: number; afterDispose: number } | null;
}

/** An event delivered to subscribers: a trainer event, or `status` when the run's status changed. */
export type RunEvent =
  | { type: 'status'; data: RunSnapshot }
  | { type: 'step'; data: TrainMetricsRecord }
  | { type: 'eval'; data: EvalMetricsRecord }
  | { type: 'checkpoint'; data: CheckpointEventRecord }
  | { type: 'done'; data: DoneEventRecord }
  | { type: 'error'; data: { step: number; code: string | null; message: string } };

/** A subscriber of run events. */
export type RunEventListener = (event: RunEvent) => void;

/** The records of the current or last run. */
export interface RunRecords {
  experimentName: string | null;
  train: readonly TrainMetricsRecord[];
  eval: readonly EvalMetricsRecord[];
}

/** Lines of the training process's stderr kept for the message of an unexpected exit. */
const STDERR_LINES_KEPT = 20;

/** Supervises the server's single training run. */
export class TrainingRunSupervisor {
  private status: RunStatus = 'idle';
  private phase: RunPhase | null = null;
  private experimentName: string | null = null;
  private experimentPath: string | null = null;
  private totalSteps: number | null = null;
  /** Step the run continues from: 0 for a new run, the checkpoint's step when resuming. */
  private startStep = 0;
  private startedAt: Date | null = null;
  private finishedAt: Date | null = null;
  private train: TrainMetricsRecord[] = [];
  private eval: EvalMetricsRecord[] = [];
  private done: DoneEventRecord | null = null;
  private failure: SerializedError | null = null;
  private finalCheckpointPath: string | null = null;
  private tensorCounts: RunSnapshot['tensorCounts'] = null;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private stopRequested = false;
  private stderrTail: string[] = [];
  private readonly listeners = new Set<RunEventListener>();

  constructor(private readonly logger: FastifyBaseLogger) {}

  /** Tells whether a training process is alive. */
  isActive(): boolean {
    return ACTIVE_STATUSES.has(this.status);
  }

  /**
   * Starts a run in a new child process. The caller checks {@link isActive} first, in the same
   * synchronous block, so two requests can never start two runs.
   */
  start(config: NestedLearningConfig, experimentPath: string): RunSnapshot {
    if (this.isActive()) {
      throw new Error('A training run is already active.');
    }

    this.reset(config, experimentPath);
    const script = trainingProcessScript();
    const child = fork(script.path, [], {
      execArgv: script.execArgv,
      serialization: 'advanced',
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    this.child = child;
    this.exited = new Promise((resolve) => {
      // 'close' comes after the last line of stdout and stderr, unlike 'exit'.
      child.once('close', (code, signal) => {
        this.handleExit(code, signal);
        resolve();
      });
    });

    child.on('message', (message: WorkerMessage) => this.handleMessage(message));
    child.on('error', (error) => this.logger.error({ err: error, experiment: this.experimentName }, 'Training process error'));
    this.pipeOutput(child);

    const message: ParentMessage = { type: 'start', config };
    child.send(message);
    this.logger.info({ experiment: this.experimentName, pid: child.pid, numSteps: config.numSteps }, 'Training run started');
    this.emitStatus();
    return this.snapshot();
  }

  /**
   * Stops the active run after its current step and waits until its process has ended, so the
   * final checkpoint is on disk when the promise resolves. A second call waits for the same stop.
   */
  async stop(): Promise<RunSnapshot> {
    if (this.status === 'running') {
      this.stopRequested = true;
      this.status = 'stopping';
      this.child?.send({ type: 'stop' } satisfies ParentMessage);
      this.logger.info({ experiment: this.experimentName, step: this.currentStep() }, 'Stopping the training run');
      this.emitStatus();
    }
    await this.exited;
    return this.snapshot();
  }

  /**
   * Stops the active run and waits up to `timeoutSeconds`; then kills the training process.
   * Used when the server closes.
   */
  async shutdown(timeoutSeconds: number): Promise<void> {
    if (!this.isActive()) {
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutSeconds * 1000);
    });
    const outcome = await Promise.race([this.stop().then(() => 'stopped' as const), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.logger.error({ experiment: this.experimentName, timeoutSeconds }, 'Training run did not stop in time; killing its process');
      this.child?.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Returns the state of the current or last run. */
  snapshot(): RunSnapshot {
    const lastTrain = this.train.at(-1) ?? null;
    return {
      status: this.status,
      phase: this.phase,
      experimentName: this.experimentName,
      experimentPath: this.experimentPath,
      currentStep: this.currentStep(),
      totalSteps: this.totalSteps,
      startedAt: this.startedAt?.toISOString() ?? null,
      finishedAt: this.finishedAt?.toISOString() ?? null,
      tierStats: lastTrain?.tierStats ?? null,
      lastMetrics: { train: lastTrain, eval: this.eval.at(-1) ?? null },
      bestValLoss: this.bestValLoss(),
      doneReason: this.done?.reason ?? null,
      finalCheckpointPath: this.finalCheckpointPath,
      error: this.failure === null ? null : { code: this.failure.code ?? null, message: this.failure.message },
      pid: this.child?.pid ?? null,
      tensorCounts: this.tensorCounts,
    };
  }

  /** Returns the records of the current or last run. */
  records(): RunRecords {
    return { experimentName: this.experimentName, train: this.train, eval: this.eval };
  }

  /** Returns the experiment folder of the current or last run, or null before the first run. */
  currentExperimentPath(): string | null {
    return this.experimentPath;
  }

  /** Registers a listener of run events; returns a function that removes it. */
  subscribe(listener: RunEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private reset(config: NestedLearningConfig, experimentPath: string): void {
    this.status = 'running';
    this.phase = 'setup';
    this.experimentName = config.experimentName;
    this.experimentPath = experimentPath;
    this.totalSteps = config.numSteps;
    this.startStep = 0;
    this.startedAt = new Date();
    this.finishedAt = null;
    this.train = [];
    this.eval = [];
    this.done = null;
    this.failure = null;
    this.finalCheckpointPath = null;
    this.tensorCounts = null;
    this.stopRequested = false;
    this.stderrTail = [];
  }

  private handleMessage(message: WorkerMessage): void {
    switch (message.type) {
      case 'ready':
        this.phase = 'training';
        this.experimentPath = message.experimentPath;
        this.totalSteps = message.totalSteps;
        this.startStep = message.startStep;
        this.logger.info({ experiment: this.experimentName, startStep: message.startStep }, 'Training set up');
        this.emitStatus();
        return;
      case 'event':
        this.handleTrainerEvent(message.event);
        return;
      case 'failed':
        this.failure = message.error;
        this.logger.error(
          { experiment: this.experimentName, step: message.step, code: message.error.code, details: message.error.details },
          `Training run failed: ${message.error.message}`,
        );
        this.emit({ type: 'error', data: { step: message.step, code: message.error.code ?? null, message: message.error.message } });
        return;
      case 'tensors': {
        this.tensorCounts = { beforeSetup: message.beforeSetup, afterDispose: message.afterDispose };
        const leaked = message.afterDispose - message.beforeSetup;
        if (leaked !== 0) {
          this.logger.warn({ experiment: this.experimentName, ...this.tensorCounts }, `The training process ended with ${leaked} more tfjs tensors than before setup`);
        }
        return;
      }
      case 'log':
        this.logger[message.level]({ experiment: this.experimentName, ...message.fields }, message.message);
        return;
    }
  }

  private handleTrainerEvent(event: ForwardedEvent): void {
    switch (event.name) {
      case 'step':
        this.train.push(event.data);
        this.emit({ type: 'step', data: event.data });
        return;
      case 'eval':
        this.eval.push(event.data);
        this.emit({ type: 'eval', data: event.data });
        return;
      case 'checkpoint':
        if (event.data.kind === 'final') {
          this.finalCheckpointPath = event.data.path;
        }
        this.logger.info({ experiment: this.experimentName, step: event.data.step, name: event.data.name }, 'Checkpoint written');
        this.emit({ type: 'checkpoint', data: event.data });
        return;
      case 'done':
        this.done = event.data;
        this.phase = 'finished';
        this.finalCheckpointPath = event.data.finalCheckpointPath;
        this.emit({ type: 'done', data: event.data });
        return;
    }
  }

  private handleExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.child = null;
    this.finishedAt = new Date();
    this.phase = 'finished';

    if (this.failure !== null) {
      this.status = 'error';
    } else if (this.done !== null) {
      this.status = this.done.reason === 'stopped' ? 'stopped' : 'completed';
    } else if (this.stopRequested && code === 0) {
      // A stop during setup ends the process before any step, so there is no checkpoint.
      this.status = 'stopped';
    } else {
      const exitDescription = signal === null ? `with code ${code}` : `by signal ${signal}`;
      const tail = this.stderrTail.length === 0 ? '' : ` Last output: ${this.stderrTail.join(' | ')}`;
      this.failure = {
        name: 'TrainingError',
        code: 'TRAINING_PROCESS_EXITED',
        message: `The training process exited ${exitDescription} before the run ended.${tail}`,
        details: { code, signal },
      };
      this.status = 'error';
      this.logger.error({ experiment: this.experimentName, code, signal }, this.failure.message);
      this.emit({ type: 'error', data: { step: this.currentStep(), code: this.failure.code ?? null, message: this.failure.message } });
    }

    this.logger.info({ experiment: this.experimentName, status: this.status, step: this.currentStep() }, 'Training run ended');
    this.emitStatus();
  }

  private pipeOutput(child: ChildProcess): void {
    if (child.stdout !== null) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        this.logger.debug({ experiment: this.experimentName, stream: 'stdout' }, line);
      });
    }
    if (child.stderr !== null) {
      createInterface({ input: child.stderr }).on('line', (line) => {
        this.stderrTail.push(line);
        if (this.stderrTail.length > STDERR_LINES_KEPT) {
          this.stderrTail.shift();
        }
        this.logger.warn({ experiment: this.experimentName, stream: 'stderr' }, line);
      });
    }
  }

  private currentStep(): number {
    return this.train.at(-1)?.step ?? this.startStep;
  }

  private bestValLoss(): number | null {
    let best: number | null = null;
    for (const record of this.eval) {
      const loss = record.valLoss;
      if (loss !== undefined && Number.isFinite(loss) && (best === null || loss < best)) {
        best = loss;
      }
    }
    return best;
  }

  private emitStatus(): void {
    this.emit({ type: 'status', data: this.snapshot() });
  }

  private emit(event: RunEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.logger.error({ err: error, event: event.type }, 'A run event listener threw');
      }
    }
  }
}

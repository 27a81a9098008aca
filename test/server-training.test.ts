/**
 * Real training runs through the HTTP API on the embedded tiny model (`examples/models/tiny-qwen2`)
 * with a few passages of the embedded data. The cases: a stop, a completed run with its event
 * stream, an error after the start, a stop during setup, and closing the server during a run.
 *
 * Training runs in a child process, so the tensor-leak check is the count the training process
 * reports: live tfjs tensors before setup and after the trainer was disposed.
 */
import { readFile, mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { CHECKPOINT_FILES } from '../src/index.js';
import { createServer, startServer, type RunSnapshot, type StartedServer } from '../src/server/index.js';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));
const modelRoot = join(repositoryRoot, 'examples', 'models');
const embeddedModel = join(modelRoot, 'tiny-qwen2');
const embeddedData = join(repositoryRoot, 'examples', 'data');

let root: string;
let dataRoot: string;
const apps: FastifyInstance[] = [];
const started: StartedServer[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-server-training-'));
  dataRoot = join(root, 'data');
  await mkdir(dataRoot, { recursive: true });

  // A few passages keep setup (tokenizing) and evaluation short.
  await copyLines(join(embeddedData, 'fiction', 'train.jsonl'), join(dataRoot, 'train.jsonl'), 16);
  await copyLines(join(embeddedData, 'fiction', 'valid.jsonl'), join(dataRoot, 'valid.jsonl'), 4);
  await copyLines(join(embeddedData, 'press', 'valid.jsonl'), join(dataRoot, 'retain.jsonl'), 4);
  await writeFile(join(dataRoot, 'broken.jsonl'), '{"text": "fine"}\nthis line is not JSON\n');
});

afterEach(async () => {
  for (const server of started.splice(0)) {
    await server.close();
  }
  for (const app of apps.splice(0)) {
    await app.close();
  }
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function copyLines(from: string, to: string, count: number): Promise<void> {
  const lines = (await readFile(from, 'utf8')).split('\n').filter((line) => line.trim() !== '');
  await writeFile(to, `${lines.slice(0, count).join('\n')}\n`);
}

function makeServer(outputName: string): FastifyInstance {
  const app = createServer({ logger: false, roots: { model: modelRoot, data: dataRoot }, outputDir: join(root, outputName) });
  apps.push(app);
  return app;
}

/** Returns the configuration of a short run: sequences of 64 tokens, batches of 2, the wasm backend. */
function runConfig(overrides: Record<string, unknown>): Record<string, unknown> {
  return {
    baseModelPath: embeddedModel,
    trainDataPath: join(dataRoot, 'train.jsonl'),
    valDataPath: join(dataRoot, 'valid.jsonl'),
    retainDataPath: join(dataRoot, 'retain.jsonl'),
    maxSeqLength: 64,
    batchSize: 2,
    evalBatches: 1,
    learningRate: 1e-3,
    checkpointEvery: 0,
    backend: 'wasm',
    ...overrides,
  };
}

async function status(app: FastifyInstance): Promise<RunSnapshot> {
  return (await app.inject({ method: 'GET', url: '/nested-learning/status' })).json() as RunSnapshot;
}

async function waitFor(app: FastifyInstance, done: (snapshot: RunSnapshot) => boolean, timeoutMs = 150_000): Promise<RunSnapshot> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const snapshot = await status(app);
    if (done(snapshot)) {
      return snapshot;
    }
    if (Date.now() > deadline) {
      throw new Error(`Timed out waiting for the run; last status: ${JSON.stringify(snapshot)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function countLines(path: string): Promise<number> {
  return (await readFile(path, 'utf8')).split('\n').filter((line) => line.trim() !== '').length;
}

/** Time limit of each test: a run under the load of a full parallel test suite can take a minute. */
const RUN_TIMEOUT_MS = 180_000;

describe('training through the API', { timeout: RUN_TIMEOUT_MS }, () => {
  it('stops and resumes a run', async () => {
    const app = makeServer('stop');
    const start = await app.inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: runConfig({ experimentName: 'stop-me', numSteps: 500, evalEvery: 2 }),
    });
    expect(start.statusCode).toBe(202);
    const started = start.json() as { experimentName: string; experimentPath: string; config: { numSteps: number } };
    expect(started.experimentName).toBe('stop-me');
    expect(started.config.numSteps).toBe(500);

    const running = await waitFor(app, (snapshot) => snapshot.currentStep >= 3);
    expect(running.status).toBe('running');
    const pid = running.pid as number;
    expect(isProcessAlive(pid)).toBe(true);

    // One run at a time.
    const second = await app.inject({ method: 'POST', url: '/nested-learning/start', payload: runConfig({ numSteps: 5 }) });
    expect(second.statusCode).toBe(409);
    expect((second.json() as { error: { code: string } }).error.code).toBe('RUN_ACTIVE');

    const stop = await app.inject({ method: 'POST', url: '/nested-learning/stop' });
    expect(stop.statusCode).toBe(200);
    const stopped = stop.json() as RunSnapshot;
    expect(stopped.status).toBe('stopped');
    expect(stopped.doneReason).toBe('stopped');
    expect(stopped.currentStep).toBeGreaterThanOrEqual(3);
    expect(stopped.currentStep).toBeLessThan(500);
    expect(stopped.pid).toBeNull();
    expect(isProcessAlive(pid)).toBe(false);
    expect(stopped.tensorCounts).not.toBeNull();
    expect(stopped.tensorCounts?.afterDispose).toBe(stopped.tensorCounts?.beforeSetup);

    // The response came after the final checkpoint was complete on disk.
    const finalDir = join(started.experimentPath, 'checkpoints', 'final');
    expect(stopped.finalCheckpointPath).toBe(finalDir);
    for (const file of CHECKPOINT_FILES) {
      expect((await stat(join(finalDir, file))).isFile(), file).toBe(true);
    }
    const metadata = JSON.parse(await readFile(join(finalDir, 'metadata.json'), 'utf8')) as { step: number; stopped: boolean };
    expect(metadata.stopped).toBe(true);
    expect(metadata.step).toBe(stopped.currentStep);

    // The trainer really stopped: no step is added afterwards.
    const trainMetrics = join(started.experimentPath, 'metrics', 'train_metrics.jsonl');
    expect(await countLines(trainMetrics)).toBe(stopped.currentStep);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await countLines(trainMetrics)).toBe(stopped.currentStep);

    const again = await app.inject({ method: 'POST', url: '/nested-learning/stop' });
    expect(again.statusCode).toBe(409);

    const metrics = (await app.inject({ method: 'GET', url: '/nested-learning/metrics' })).json() as {
      train: { records: { step: number }[] };
      eval: { records: { step: number }[] };
    };
    expect(metrics.train.records.map((record) => record.step)).toEqual(Array.from({ length: stopped.currentStep }, (_, i) => i + 1));
    expect(metrics.eval.records[0]?.step).toBe(0);

    const experiments = (await app.inject({ method: 'GET', url: '/nested-learning/experiments' })).json() as {
      experiments: { name: string; status: string; step: number }[];
    };
    expect(experiments.experiments).toEqual([expect.objectContaining({ name: 'stop-me', status: 'stopped', step: stopped.currentStep })]);

    // The stopped run continues from its final checkpoint and ends 2 steps later.
    const resume = await app.inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: runConfig({ experimentName: 'stop-me', resume: true, numSteps: stopped.currentStep + 2, evalEvery: 2 }),
    });
    expect(resume.statusCode).toBe(202);
    const resumed = await waitFor(app, (snapshot) => snapshot.status !== 'running');
    expect(resumed.status).toBe('completed');
    expect(resumed.currentStep).toBe(stopped.currentStep + 2);
    const resumedMetrics = (await app.inject({ method: 'GET', url: '/nested-learning/metrics' })).json() as {
      train: { records: { step: number }[] };
    };
    expect(resumedMetrics.train.records.map((record) => record.step)).toEqual([stopped.currentStep + 1, stopped.currentStep + 2]);
    expect(await countLines(trainMetrics)).toBe(stopped.currentStep + 2);
  });

  it('streams events of a run to completion', async () => {
    const server = await startServer({
      logger: false,
      port: 0,
      roots: { model: modelRoot, data: dataRoot },
      outputDir: join(root, 'events'),
    });
    started.push(server);
    const events = collectEvents(`${server.url}/nested-learning/events`, (event) => event.type === 'status' && event.data.status === 'completed');
    await events.connected;

    const start = await fetch(`${server.url}/nested-learning/start`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(runConfig({ experimentName: 'streamed', numSteps: 4, evalEvery: 2 })),
    });
    expect(start.status).toBe(202);

    const received = await events.done;
    const steps = received.filter((event) => event.type === 'step').map((event) => event.data);
    expect(steps.map((step) => step.step)).toEqual([1, 2, 3, 4]);
    // Frequencies [1, 2, 4]: tier k is active when step % f_k == 0, so steps 1 to 4 give
    // [0], [0, 1], [0], [0, 1, 2].
    expect(steps.map((step) => step.activeTiers)).toEqual([[0], [0, 1], [0], [0, 1, 2]]);

    // Evaluation before training (step 0), then every 2 steps.
    const evaluations = received.filter((event) => event.type === 'eval').map((event) => event.data);
    expect(evaluations.map((record) => record.step)).toEqual([0, 2, 4]);
    expect(evaluations[0]?.forgetting).toBe(0);
    expect(typeof evaluations[2]?.valLoss).toBe('number');

    const checkpoints = received.filter((event) => event.type === 'checkpoint').map((event) => event.data.name);
    expect(checkpoints).toContain('final');
    const done = received.find((event) => event.type === 'done');
    expect(done?.data).toMatchObject({ step: 4, reason: 'completed' });

    const statuses = received.filter((event) => event.type === 'status').map((event) => event.data.status);
    expect(statuses[0]).toBe('idle');
    expect(statuses.at(-1)).toBe('completed');
    const last = received.filter((event) => event.type === 'status').at(-1)?.data as RunSnapshot;
    expect(last.tensorCounts?.afterDispose).toBe(last.tensorCounts?.beforeSetup);
  });

  it('reports an error that happens after the start', async () => {
    const app = makeServer('error');
    const start = await app.inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: runConfig({ trainDataPath: join(dataRoot, 'broken.jsonl'), numSteps: 3 }),
    });
    expect(start.statusCode).toBe(202);

    const failed = await waitFor(app, (snapshot) => snapshot.status !== 'running');
    expect(failed.status).toBe('error');
    expect(failed.error?.message).toContain('broken.jsonl');
    expect(failed.error?.message).toMatch(/line 2/);
    expect(failed.error?.code).not.toBeNull();
    expect(failed.pid).toBeNull();
  });

  it('stops a run during setup', async () => {
    const app = makeServer('setup-stop');
    const start = await app.inject({ method: 'POST', url: '/nested-learning/start', payload: runConfig({ numSteps: 50 }) });
    expect(start.statusCode).toBe(202);

    const stop = await app.inject({ method: 'POST', url: '/nested-learning/stop' });
    const stopped = stop.json() as RunSnapshot;
    expect(stopped.status).toBe('stopped');
    // The stop message reaches the training process during setup, or at the latest during the
    // first step, so at most one step runs.
    expect(stopped.currentStep).toBeLessThanOrEqual(1);
    const metadata = JSON.parse(await readFile(join(stopped.finalCheckpointPath as string, 'metadata.json'), 'utf8')) as {
      stopped: boolean;
    };
    expect(metadata.stopped).toBe(true);
  });

  it('stops the run when the server closes', async () => {
    const app = createServer({ logger: false, roots: { model: modelRoot, data: dataRoot }, outputDir: join(root, 'close') });
    const start = await app.inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: runConfig({ experimentName: 'closed', numSteps: 500 }),
    });
    expect(start.statusCode).toBe(202);
    const running = await waitFor(app, (snapshot) => snapshot.currentStep >= 1);

    await app.close();
    expect(isProcessAlive(running.pid as number)).toBe(false);
    const metadata = JSON.parse(await readFile(join(root, 'close', 'closed', 'checkpoints', 'final', 'metadata.json'), 'utf8')) as {
      stopped: boolean;
      step: number;
    };
    expect(metadata.stopped).toBe(true);
    expect(metadata.step).toBeGreaterThanOrEqual(1);
  });
});

describe('Ctrl-C in a terminal', { timeout: RUN_TIMEOUT_MS }, () => {
  it('keeps the final checkpoint of the run', async () => {
    // A server process that closes on SIGINT, as `nested-learning serve` does. The terminal sends
    // SIGINT to the whole process group, the training process included.
    const outputDir = join(root, 'sigint');
    const script = join(root, 'serve-until-sigint.mts');
    const serverModule = join(repositoryRoot, 'src', 'server', 'index.ts');
    await writeFile(
      script,
      [
        `import { createServer } from ${JSON.stringify(serverModule)};`,
        `const app = createServer({ logger: false, roots: ${JSON.stringify({ model: modelRoot, data: dataRoot })}, outputDir: ${JSON.stringify(outputDir)} });`,
        `process.on('SIGINT', () => { void app.close().then(() => process.exit(0)); });`,
        `const start = await app.inject({ method: 'POST', url: '/nested-learning/start', payload: ${JSON.stringify(runConfig({ experimentName: 'interrupted', numSteps: 500 }))} });`,
        `if (start.statusCode !== 202) { console.error(start.body); process.exit(1); }`,
        `for (;;) {`,
        `  const status = (await app.inject({ method: 'GET', url: '/nested-learning/status' })).json();`,
        `  if (status.currentStep >= 2) { console.log('training'); break; }`,
        `  await new Promise((resolve) => setTimeout(resolve, 50));`,
        `}`,
      ].join('\n'),
    );

    const server = spawn(process.execPath, ['--import', 'tsx', script], { cwd: repositoryRoot, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    server.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    await new Promise<void>((resolve, reject) => {
      server.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('training')) {
          resolve();
        }
      });
      server.once('exit', (code) => reject(new Error(`The server process exited with ${code} before training: ${stderr}`)));
    });

    // A negative pid signals the process group, as a terminal does.
    process.kill(-(server.pid as number), 'SIGINT');
    const exitCode = await new Promise<number | null>((resolve) => server.once('exit', resolve));
    expect(exitCode).toBe(0);

    const metadata = JSON.parse(await readFile(join(outputDir, 'interrupted', 'checkpoints', 'final', 'metadata.json'), 'utf8')) as {
      stopped: boolean;
      step: number;
    };
    expect(metadata.stopped).toBe(true);
    expect(metadata.step).toBeGreaterThanOrEqual(2);
  });
});

interface StreamEvent {
  type: string;
  // Records arrive as parsed JSON.
  data: Record<string, any>;
}

/**
 * Reads server-sent events from `url` until `isLast` accepts one. `connected` resolves once the
 * response headers arrived, `done` with every event received.
 */
function collectEvents(url: string, isLast: (event: StreamEvent) => boolean): { connected: Promise<void>; done: Promise<StreamEvent[]> } {
  let onConnected: () => void = () => undefined;
  const connected = new Promise<void>((resolve) => {
    onConnected = resolve;
  });

  const done = new Promise<StreamEvent[]>((resolve, reject) => {
    const events: StreamEvent[] = [];
    const req = request(url, (response) => {
      expect(response.statusCode).toBe(200);
      expect(response.headers['content-type']).toContain('text/event-stream');
      onConnected();
      response.setEncoding('utf8');
      let buffer = '';
      response.on('data', (chunk: string) => {
        buffer += chunk;
        let end = buffer.indexOf('\n\n');
        while (end !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          end = buffer.indexOf('\n\n');
          const type = /^event: (.+)$/m.exec(block)?.[1];
          const data = /^data: (.+)$/m.exec(block)?.[1];
          if (type === undefined || data === undefined) {
            continue;
          }
          const event = { type, data: JSON.parse(data) as Record<string, any> };
          events.push(event);
          if (isLast(event)) {
            req.destroy();
            resolve(events);
            return;
          }
        }
      });
      response.on('error', reject);
    });
    req.on('error', (error) => {
      if (!(error as NodeJS.ErrnoException).code?.includes('ECONNRESET')) {
        reject(error);
      }
    });
    req.end();
  });
  return { connected, done };
}

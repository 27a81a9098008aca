/**
 * The HTTP API through fastify's request injection: every endpoint, every error status, path
 * escapes and authentication. Runs that train are in server-training.test.ts.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { NestedLearningConfig } from '../src/index.js';
import { createServer, startServer, type ServerOptions } from '../src/server/index.js';

let root: string;
let modelRoot: string;
let dataRoot: string;
let outputDir: string;
let outside: string;
let modelDir: string;
let trainPath: string;
const servers: FastifyInstance[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-server-api-'));
  modelRoot = join(root, 'models');
  dataRoot = join(root, 'data');
  outputDir = join(root, 'output');
  outside = join(root, 'outside');
  modelDir = join(modelRoot, 'tiny');
  trainPath = join(dataRoot, 'train.jsonl');

  await mkdir(modelDir, { recursive: true });
  await mkdir(dataRoot, { recursive: true });
  await mkdir(outside, { recursive: true });
  await writeFile(trainPath, '{"text": "a"}\n');
  await writeFile(join(outside, 'secret.jsonl'), '{"text": "outside"}\n');
  await mkdir(join(outside, 'model'), { recursive: true });

  // Links inside the roots that lead outside them.
  await symlink(join(outside, 'secret.jsonl'), join(dataRoot, 'link-out.jsonl'));
  await symlink(outside, join(dataRoot, 'dir-out'));
  await symlink(join(outside, 'model'), join(modelRoot, 'model-out'));
  await symlink(join(outside, 'does-not-exist-yet'), join(dataRoot, 'dangling.jsonl'));
  // A link inside the roots that stays inside them is fine.
  await symlink(trainPath, join(dataRoot, 'link-in.jsonl'));

  await writeExperimentFolders();
});

afterEach(async () => {
  for (const app of servers.splice(0)) {
    await app.close();
  }
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function makeServer(options: ServerOptions = {}): FastifyInstance {
  const app = createServer({ logger: false, roots: { model: modelRoot, data: dataRoot }, outputDir, ...options });
  servers.push(app);
  return app;
}

function validConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { baseModelPath: modelDir, trainDataPath: trainPath, numSteps: 5, ...overrides };
}

interface ErrorBody {
  error: { statusCode: number; code: string; message: string; issues?: { path: string; message: string; field?: string }[] };
}

/**
 * Writes three folders under the output folder: `finished` (stopped, with metrics), `crashed`
 * (no final checkpoint, a last line cut short) and `not-an-experiment` (no run files).
 */
async function writeExperimentFolders(): Promise<void> {
  const finished = join(outputDir, 'finished');
  await mkdir(join(finished, 'metrics'), { recursive: true });
  await mkdir(join(finished, 'checkpoints', 'final'), { recursive: true });
  await mkdir(join(finished, 'checkpoints', 'checkpoint_0000002'), { recursive: true });
  await writeFile(join(finished, 'config.json'), JSON.stringify({ num_steps: 10, experiment_name: 'finished' }));
  const train = [1, 2, 3, 4].map((step) => ({ step, loss: step === 3 ? 'NaN' : 4 - step * 0.5, activeTiers: [0] }));
  await writeFile(join(finished, 'metrics', 'train_metrics.jsonl'), train.map((line) => `${JSON.stringify(line)}\n`).join(''));
  // Validation losses 3.0, 2.5, NaN, 2.7: the best finite one is 2.5 at step 2.
  // Forgetting 0, 0.1, 0.4, 0.3: the last is 0.3 and the highest 0.4.
  const evaluations = [
    { step: 0, valLoss: 3.0, forgetting: 0 },
    { step: 2, valLoss: 2.5, forgetting: 0.1 },
    { step: 3, valLoss: 'NaN', forgetting: 0.4 },
    { step: 4, valLoss: 2.7, forgetting: 0.3 },
  ];
  await writeFile(join(finished, 'metrics', 'eval_metrics.jsonl'), evaluations.map((line) => `${JSON.stringify(line)}\n`).join(''));
  await writeFile(join(finished, 'checkpoints', 'final', 'metadata.json'), JSON.stringify({ step: 4, stopped: true, stopReason: 'stopped' }));
  await writeFile(join(finished, 'checkpoints', 'checkpoint_0000002', 'metadata.json'), JSON.stringify({ step: 2, stopped: false }));

  const crashed = join(outputDir, 'crashed');
  await mkdir(join(crashed, 'metrics'), { recursive: true });
  await writeFile(join(crashed, 'metrics', 'train_metrics.jsonl'), '{"step": 1, "loss": 5}\n{"step": 2, "loss": 4.5}\n{"step": 3, "lo');

  await mkdir(join(outputDir, 'not-an-experiment'), { recursive: true });
  await writeFile(join(outputDir, 'not-an-experiment', 'notes.txt'), 'no run files');
}

describe('server options', () => {
  it('rejects allowRemote without a token', () => {
    expect(() => createServer({ logger: false, allowRemote: true })).toThrow(/requires a bearer token/);
  });

  it('rejects a short token', () => {
    expect(() => createServer({ logger: false, token: 'short' })).toThrow(/at least 16/);
  });

  it('rejects a non-loopback host without allowRemote', async () => {
    await expect(startServer({ logger: false, host: '0.0.0.0', port: 0, outputDir })).rejects.toMatchObject({
      code: 'SERVER_REMOTE_NOT_ALLOWED',
    });
  });

  it('rejects a missing root when it becomes ready', async () => {
    const app = createServer({ logger: false, roots: { data: join(root, 'missing') }, outputDir });
    servers.push(app);
    await expect(app.ready()).rejects.toMatchObject({ code: 'SERVER_ROOT_NOT_FOUND' });
  });

  it('listens on 127.0.0.1 by default', async () => {
    const started = await startServer({ logger: false, port: 0, outputDir, roots: { model: modelRoot, data: dataRoot } });
    servers.push(started.app);
    expect(started.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const response = await fetch(`${started.url}/nested-learning/status`);
    expect(response.status).toBe(200);
  });
});

describe('GET /nested-learning/status', () => {
  it('reports idle before any run', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/status' });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({
      status: 'idle',
      phase: null,
      experimentName: null,
      currentStep: 0,
      totalSteps: null,
      error: null,
      pid: null,
    });
  });
});

describe('POST /nested-learning/stop', () => {
  it('returns 409 without an active run', async () => {
    const response = await makeServer().inject({ method: 'POST', url: '/nested-learning/stop' });
    expect(response.statusCode).toBe(409);
    expect((response.json() as ErrorBody).error.code).toBe('NO_ACTIVE_RUN');
  });
});

describe('GET /nested-learning/events', () => {
  it('sends the status first', async () => {
    const app = makeServer();
    const response = await app.inject({ method: 'GET', url: '/nested-learning/events', payloadAsStream: true });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toContain('text/event-stream');
    expect(response.headers['cache-control']).toContain('no-cache');

    const first = await new Promise<string>((resolve) => {
      response.stream().once('data', (chunk: Buffer) => resolve(chunk.toString()));
    });
    expect(first).toMatch(/^id: 1\nevent: status\ndata: /);
    expect(first.endsWith('\n\n')).toBe(true);
    expect(JSON.parse(first.split('data: ')[1] as string)).toMatchObject({ status: 'idle', experimentName: null });
    // Closing the server ends the open stream (afterEach closes it).
  });

  it('requires the token like the other endpoints', async () => {
    const app = makeServer({ token: 'test-token-0123456789abcdef' });
    const response = await app.inject({ method: 'GET', url: '/nested-learning/events' });
    expect(response.statusCode).toBe(401);
  });
});

describe('GET /nested-learning/tier-info', () => {
  it('derives presets and schedules from the library', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/tier-info' });
    expect(response.statusCode).toBe(200);
    const info = response.json() as {
      clock: { rule: string; defaultFrequencies: number[]; defaultSchedule: { step: number; activeTiers: number[] }[] };
      presets: { name: string; options: Record<string, unknown>; schedule: { step: number; activeTiers: number[] }[] }[];
      strategies: { description: string; choices: { name: string }[] };
      inactiveGradients: { choices: { name: string }[] };
      fields: { name: string }[];
    };

    expect(info.presets.map((preset) => preset.name)).toEqual(Object.keys(NestedLearningConfig.presets));
    const conservative = info.presets.find((preset) => preset.name === 'conservative');
    expect(conservative?.options).toEqual(NestedLearningConfig.presets.conservative);
    // Frequencies [1, 4, 8]: step 4 -> 4 % 1 = 0 and 4 % 4 = 0 but 4 % 8 = 4, so tiers 0 and 1;
    // step 8 -> all three; step 6 -> only tier 0.
    expect(conservative?.schedule[3]).toEqual({ step: 4, activeTiers: [0, 1] });
    expect(conservative?.schedule[7]).toEqual({ step: 8, activeTiers: [0, 1, 2] });
    expect(conservative?.schedule[5]).toEqual({ step: 6, activeTiers: [0] });

    // Default frequencies [1, 2, 4]: steps 1 to 4 activate [0], [0, 1], [0], [0, 1, 2].
    expect(info.clock.defaultFrequencies).toEqual([1, 2, 4]);
    expect(info.clock.defaultSchedule.slice(0, 4).map((row) => row.activeTiers)).toEqual([[0], [0, 1], [0], [0, 1, 2]]);
    expect(info.clock.rule).toContain('s % f_k == 0');

    expect(info.strategies.choices.map((choice) => choice.name)).toEqual(['layer_depth', 'parameter_importance', 'manual']);
    expect(info.inactiveGradients.choices.map((choice) => choice.name)).toEqual(['accumulate', 'mean', 'drop']);
    const strategyField = NestedLearningConfig.fields().find((field) => field.name === 'tierAssignmentStrategy');
    expect(info.strategies.description).toBe(strategyField?.description);
    expect(info.fields.map((field) => field.name)).toContain('tierUpdateFrequencies');
  });
});

describe('GET /nested-learning/config', () => {
  it('returns the schema, fields and dashboard defaults', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/config' });
    expect(response.statusCode).toBe(200);
    const body = response.json() as {
      defaults: Record<string, unknown>;
      jsonSchema: { properties: Record<string, unknown> };
      outputDir: string;
    };
    expect(Object.keys(body.jsonSchema.properties)).toContain('tierUpdateFrequencies');
    expect(body.defaults.numSteps).toBe(100);
    // The embedded model lies outside this server's model root, so the default stays empty.
    expect(body.defaults.baseModelPath).toBe('');
    expect(body.outputDir).toBe(outputDir);
  });
});

describe('GET /nested-learning/experiments', () => {
  it('summarises the experiment folders', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/experiments' });
    expect(response.statusCode).toBe(200);
    const body = response.json() as { outputDir: string; experiments: Record<string, unknown>[] };
    expect(body.outputDir).toBe(outputDir);
    expect(body.experiments.map((experiment) => experiment.name).sort()).toEqual(['crashed', 'finished']);

    const finished = body.experiments.find((experiment) => experiment.name === 'finished');
    expect(finished).toMatchObject({
      status: 'stopped',
      stopReason: 'stopped',
      step: 4,
      totalSteps: 10,
      bestValLoss: 2.5,
      bestStep: 2,
      forgetting: 0.3,
      maxForgetting: 0.4,
      checkpoints: ['checkpoint_0000002', 'final'],
    });

    // The cut-off third line is left out, so the last complete step is 2.
    const crashed = body.experiments.find((experiment) => experiment.name === 'crashed');
    expect(crashed).toMatchObject({ status: 'incomplete', step: 2, bestValLoss: null, forgetting: null, checkpoints: [] });
  });

  it('lists nothing for an empty output folder', async () => {
    const app = makeServer({ outputDir: join(root, 'empty-output') });
    const response = await app.inject({ method: 'GET', url: '/nested-learning/experiments' });
    expect(response.json()).toMatchObject({ experiments: [] });
  });
});

describe('GET /nested-learning/metrics', () => {
  it('returns empty lists before any run', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/metrics' });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({
      experimentName: null,
      train: { records: [], total: 0, nextOffset: null },
      eval: { records: [], total: 0, nextOffset: null },
    });
  });

  it('reads an experiment folder since a step', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/metrics?experiment=finished&since=2' });
    expect(response.statusCode).toBe(200);
    const body = response.json() as { train: { records: { step: number; loss: unknown }[]; total: number }; eval: { records: { step: number }[] } };
    expect(body.train.records.map((record) => record.step)).toEqual([3, 4]);
    // A non-finite loss stays the string "NaN" rather than becoming null.
    expect(body.train.records[0]?.loss).toBe('NaN');
    expect(body.eval.records.map((record) => record.step)).toEqual([3, 4]);
  });

  it('pages with offset and limit', async () => {
    const app = makeServer();
    const first = await app.inject({ method: 'GET', url: '/nested-learning/metrics?experiment=finished&limit=3' });
    const firstBody = first.json() as { train: { records: { step: number }[]; total: number; nextOffset: number | null } };
    expect(firstBody.train.records.map((record) => record.step)).toEqual([1, 2, 3]);
    expect(firstBody.train.total).toBe(4);
    expect(firstBody.train.nextOffset).toBe(3);

    const second = await app.inject({ method: 'GET', url: '/nested-learning/metrics?experiment=finished&limit=3&offset=3' });
    const secondBody = second.json() as { train: { records: { step: number }[]; nextOffset: number | null } };
    expect(secondBody.train.records.map((record) => record.step)).toEqual([4]);
    expect(secondBody.train.nextOffset).toBeNull();
  });

  it.each([
    ['limit=0', 'limit'],
    ['limit=abc', 'limit'],
    [`limit=${10_001}`, 'limit'],
    ['since=-1', 'since'],
    ['experiment=..%2Fsecret', 'experiment'],
    ['colour=red', 'colour'],
  ])('rejects %s with 400', async (query, path) => {
    const response = await makeServer().inject({ method: 'GET', url: `/nested-learning/metrics?${query}` });
    expect(response.statusCode).toBe(400);
    const body = response.json() as ErrorBody;
    expect(body.error.code).toBe('QUERY_INVALID');
    expect(body.error.issues?.map((issue) => issue.path)).toEqual([path]);
  });

  it('returns 404 for an unknown experiment', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/metrics?experiment=nothing-here' });
    expect(response.statusCode).toBe(404);
    expect((response.json() as ErrorBody).error.code).toBe('EXPERIMENT_NOT_FOUND');
  });

  it('returns 404 for a folder without run files', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/metrics?experiment=not-an-experiment' });
    expect(response.statusCode).toBe(404);
  });
});

describe('POST /nested-learning/start validation', () => {
  it('returns 400 with every issue and its path', async () => {
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: { num_steps: -1, tier_update_frequencies: [1, 'x', 4], learningRate: 'fast', loraRnak: 8 },
    });
    expect(response.statusCode).toBe(400);
    const body = response.json() as ErrorBody;
    expect(body.error.code).toBe('CONFIG_INVALID');
    const paths = body.error.issues?.map((issue) => issue.path).sort();
    expect(paths).toEqual(['baseModelPath', 'learningRate', 'loraRnak', 'num_steps', 'tier_update_frequencies[1]', 'trainDataPath']);
    const typo = body.error.issues?.find((issue) => issue.path === 'loraRnak');
    expect(typo?.message).toContain('loraRank');
  });

  it('checks rules across options', async () => {
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: validConfig({ numTiers: 2, tierUpdateFrequencies: [1, 2, 4] }),
    });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error.issues?.map((issue) => issue.path)).toEqual(['tierUpdateFrequencies']);
  });

  it('rejects a body that is not an object', async () => {
    const response = await makeServer().inject({ method: 'POST', url: '/nested-learning/start', payload: [1, 2] });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error.issues?.[0]?.path).toBe('(root)');
  });

  it('rejects a missing body', async () => {
    const response = await makeServer().inject({ method: 'POST', url: '/nested-learning/start' });
    expect(response.statusCode).toBe(400);
  });

  it('rejects invalid JSON', async () => {
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      headers: { 'content-type': 'application/json' },
      payload: '{"numSteps": ',
    });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error.statusCode).toBe(400);
  });

  it('rejects a body over the limit with 413', async () => {
    const app = makeServer({ bodyLimit: 2048 });
    const response = await app.inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: validConfig({ experimentName: 'x'.repeat(4096) }),
    });
    expect(response.statusCode).toBe(413);
    expect((response.json() as ErrorBody).error.code).toBe('FST_ERR_CTP_BODY_TOO_LARGE');
  });

  it('rejects form bodies with 415', async () => {
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: 'numSteps=5',
    });
    expect(response.statusCode).toBe(415);
  });

  it('rejects a plain-text body with 400', async () => {
    // A cross-site form can send text/plain without a CORS preflight; it never starts a run.
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      headers: { 'content-type': 'text/plain' },
      payload: JSON.stringify(validConfig()),
    });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error.issues?.[0]?.path).toBe('(root)');
  });

  it.each(['.hidden', 'has space', 'semi;colon', 'x'.repeat(101)])('rejects experiment name %j', async (experimentName) => {
    const response = await makeServer().inject({ method: 'POST', url: '/nested-learning/start', payload: validConfig({ experimentName }) });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error.issues?.map((issue) => issue.path)).toEqual(['experimentName']);
  });

  it('returns 400 for a data file that does not exist', async () => {
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: validConfig({ valDataPath: join(dataRoot, 'missing.jsonl') }),
    });
    expect(response.statusCode).toBe(400);
    const issue = (response.json() as ErrorBody).error.issues?.[0];
    expect(issue?.path).toBe('valDataPath');
    expect(issue?.message).toContain('not found');
  });

  it('returns 400 for a model path that is a file', async () => {
    const response = await makeServer({ roots: { model: [modelRoot, dataRoot], data: dataRoot } }).inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: validConfig({ baseModelPath: trainPath }),
    });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error.issues?.[0]?.message).toContain('not a folder');
  });

  it('returns 409 for an experiment folder that holds a run', async () => {
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: validConfig({ experimentName: 'finished' }),
    });
    expect(response.statusCode).toBe(409);
    expect((response.json() as ErrorBody).error.code).toBe('EXPERIMENT_EXISTS');
  });
});

describe('POST /nested-learning/start path safety', () => {
  const cases: [string, () => Record<string, unknown>, string][] = [
    ['a ".." segment that resolves inside', () => validConfig({ trainDataPath: `${dataRoot}/../data/train.jsonl` }), 'trainDataPath'],
    ['a relative ".." path', () => validConfig({ trainDataPath: '../../etc/passwd' }), 'trainDataPath'],
    ['an absolute path outside', () => validConfig({ trainDataPath: join(outside, 'secret.jsonl') }), 'trainDataPath'],
    ['/etc/passwd', () => validConfig({ retainDataPath: '/etc/passwd' }), 'retainDataPath'],
    ['a file link leading outside', () => validConfig({ trainDataPath: join(dataRoot, 'link-out.jsonl') }), 'trainDataPath'],
    ['a folder link leading outside', () => validConfig({ valDataPath: join(dataRoot, 'dir-out', 'secret.jsonl') }), 'valDataPath'],
    ['a dangling link leading outside', () => validConfig({ valDataPath: join(dataRoot, 'dangling.jsonl') }), 'valDataPath'],
    ['a model link leading outside', () => validConfig({ baseModelPath: join(modelRoot, 'model-out') }), 'baseModelPath'],
    ['an adapter outside the model roots', () => validConfig({ adapterPath: join(outside, 'model') }), 'adapterPath'],
    ['a data file given as the model', () => validConfig({ baseModelPath: dataRoot }), 'baseModelPath'],
    ['an output folder outside', () => validConfig({ outputDir: outside }), 'outputDir'],
    ['an output folder given with snake_case', () => validConfig({ output_dir: join(outside, 'runs') }), 'output_dir'],
  ];

  it.each(cases)('rejects %s with 403', async (_name, body, path) => {
    const response = await makeServer().inject({ method: 'POST', url: '/nested-learning/start', payload: body() });
    expect(response.statusCode).toBe(403);
    const error = (response.json() as ErrorBody).error;
    expect(error.code).toBe('PATH_FORBIDDEN');
    expect(error.issues?.map((issue) => issue.path)).toEqual([path]);
  });

  it('reports every forbidden path at once', async () => {
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: validConfig({ trainDataPath: '/etc/passwd', outputDir: outside }),
    });
    expect(response.statusCode).toBe(403);
    expect((response.json() as ErrorBody).error.issues?.map((issue) => issue.path)).toEqual(['trainDataPath', 'outputDir']);
  });

  it('rejects an experiment folder that links outside', async () => {
    await symlink(outside, join(outputDir, 'escape'));
    const response = await makeServer().inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: validConfig({ experimentName: 'escape' }),
    });
    expect(response.statusCode).toBe(403);
    expect((response.json() as ErrorBody).error.issues?.[0]?.path).toBe('experimentName');
  });

  it('accepts a link that stays inside the roots', async () => {
    // The run fails later for want of a real model, but the paths pass; stop it at once.
    const app = makeServer({ outputDir: join(root, 'output-link-in') });
    const response = await app.inject({
      method: 'POST',
      url: '/nested-learning/start',
      payload: validConfig({ trainDataPath: join(dataRoot, 'link-in.jsonl') }),
    });
    expect(response.statusCode).toBe(202);
    const body = response.json() as { config: { trainDataPath: string } };
    // The configuration carries the real path that the link points to.
    expect(body.config.trainDataPath).toBe(trainPath);
    await waitForEnd(app);
  });
});

describe('authentication and hosts', () => {
  const token = 'test-token-0123456789abcdef';

  it('requires the bearer token on the API', async () => {
    const app = makeServer({ token });
    const missing = await app.inject({ method: 'GET', url: '/nested-learning/status' });
    expect(missing.statusCode).toBe(401);
    expect(missing.headers['www-authenticate']).toBe('Bearer');

    const wrong = await app.inject({ method: 'GET', url: '/nested-learning/status', headers: { authorization: `Bearer ${token}x` } });
    expect(wrong.statusCode).toBe(401);

    const right = await app.inject({ method: 'GET', url: '/nested-learning/status', headers: { authorization: `Bearer ${token}` } });
    expect(right.statusCode).toBe(200);
  });

  it('serves the dashboard page without the token', async () => {
    const response = await makeServer({ token }).inject({ method: 'GET', url: '/' });
    expect(response.statusCode).toBe(200);
  });

  it('rejects a non-loopback Host header', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/status', headers: { host: 'attacker.example:7860' } });
    expect(response.statusCode).toBe(403);
    expect((response.json() as ErrorBody).error.code).toBe('HOST_NOT_ALLOWED');
  });

  it.each(['127.0.0.1:7860', 'localhost', '[::1]:7860'])('accepts Host %s', async (host) => {
    const response = await makeServer().inject({ method: 'GET', url: '/nested-learning/status', headers: { host } });
    expect(response.statusCode).toBe(200);
  });

  it('accepts other hosts with allowRemote and the token', async () => {
    const app = makeServer({ token, allowRemote: true });
    const response = await app.inject({
      method: 'GET',
      url: '/nested-learning/status',
      headers: { host: 'trainer.lan:7860', authorization: `Bearer ${token}` },
    });
    expect(response.statusCode).toBe(200);
  });
});

describe('dashboard files', () => {
  it.each([
    ['/', 'text/html', '<title>nested-learning dashboard</title>'],
    ['/dashboard/dashboard.js', 'text/javascript', 'followEvents'],
    ['/dashboard/dashboard.css', 'text/css', '.chart'],
    ['/vendor/uPlot.iife.min.js', 'text/javascript', 'uPlot'],
    ['/vendor/uPlot.min.css', 'text/css', '.uplot'],
  ])('serves %s', async (url, type, content) => {
    const response = await makeServer().inject({ method: 'GET', url });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toContain(type);
    expect(response.headers['content-security-policy']).toContain("script-src 'self'");
    expect(response.body).toContain(content);
  });

  it('returns 404 for other paths', async () => {
    const response = await makeServer().inject({ method: 'GET', url: '/dashboard/../../package.json' });
    expect(response.statusCode).toBe(404);
    expect((response.json() as ErrorBody).error.code).toBe('NOT_FOUND');
  });
});

/** Polls the status until the run is no longer active. */
async function waitForEnd(app: FastifyInstance): Promise<Record<string, unknown>> {
  for (;;) {
    const status = (await app.inject({ method: 'GET', url: '/nested-learning/status' })).json() as Record<string, unknown>;
    if (status.status !== 'running' && status.status !== 'stopping') {
      return status;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

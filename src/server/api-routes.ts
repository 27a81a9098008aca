/**
 * The JSON endpoints under `/nested-learning/`: start, status, stop, metrics, experiments,
 * tier-info and the dashboard's configuration defaults.
 */
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';

import { NestedLearningConfig } from '../index.js';
import { ApiError } from './api-error.js';
import { listExperiments, readJsonLines, summarizeExperiment } from './experiments.js';
import { embeddedDefaultPaths } from './locations.js';
import { pageRecords, parseMetricsQuery } from './metrics-query.js';
import type { ResolvedServerOptions } from './options.js';
import { isInside, type PathGuard } from './paths.js';
import { checkStartRequest } from './start-request.js';
import { buildTierInfo } from './tier-info.js';
import type { TrainingRunSupervisor } from './training-run.js';

/** Dependencies of the API routes. */
export interface ApiContext {
  options: ResolvedServerOptions;
  guard: PathGuard;
  supervisor: TrainingRunSupervisor;
}

/** Registers the JSON endpoints. */
export function registerApiRoutes(app: FastifyInstance, context: ApiContext): void {
  const { options, guard, supervisor } = context;
  const tierInfo = buildTierInfo();

  app.post('/nested-learning/start', async (request, reply) => {
    if (supervisor.isActive()) {
      throw activeRunConflict(supervisor);
    }
    const checked = await checkStartRequest(request.body, options, guard);

    // The checks above awaited, so another start may have begun meanwhile; check again in the
    // same synchronous block that starts the run.
    if (supervisor.isActive()) {
      throw activeRunConflict(supervisor);
    }
    const snapshot = supervisor.start(checked.config, checked.experimentPath);
    reply.code(202);
    return {
      experimentName: checked.config.experimentName,
      experimentPath: checked.experimentPath,
      config: checked.config,
      status: snapshot,
    };
  });

  app.get('/nested-learning/status', async () => supervisor.snapshot());

  app.post('/nested-learning/stop', async () => {
    if (!supervisor.isActive()) {
      const { status } = supervisor.snapshot();
      throw new ApiError(409, 'NO_ACTIVE_RUN', `No training run is active (status: ${status}), so there is nothing to stop.`);
    }
    return supervisor.stop();
  });

  app.get('/nested-learning/metrics', async (request) => {
    const query = parseMetricsQuery(request.query);
    const current = supervisor.records();

    if (query.experiment === undefined || query.experiment === current.experimentName) {
      return {
        experimentName: current.experimentName,
        since: query.since,
        offset: query.offset,
        limit: query.limit,
        train: pageRecords(current.train, query, (record) => record.step),
        eval: pageRecords(current.eval, query, (record) => record.step),
      };
    }

    const folder = await experimentFolder(query.experiment);
    return {
      experimentName: query.experiment,
      since: query.since,
      offset: query.offset,
      limit: query.limit,
      train: pageRecords(await readJsonLines(join(folder, 'metrics', 'train_metrics.jsonl')), query, (record) => record.step),
      eval: pageRecords(await readJsonLines(join(folder, 'metrics', 'eval_metrics.jsonl')), query, (record) => record.step),
    };
  });

  app.get('/nested-learning/experiments', async () => {
    const snapshot = supervisor.snapshot();
    const runPath = supervisor.currentExperimentPath();
    const knownRun = runPath === null ? null : { path: runPath, status: snapshot.status };
    return { outputDir: options.outputDir, experiments: await listExperiments(options.outputDir, knownRun) };
  });

  app.get('/nested-learning/tier-info', async () => tierInfo);

  app.get('/nested-learning/config', async () => ({
    defaults: dashboardDefaults(options),
    roots: options.roots,
    outputDir: options.outputDir,
    fields: NestedLearningConfig.fields(),
    jsonSchema: NestedLearningConfig.jsonSchema(),
    presets: NestedLearningConfig.presets,
  }));

  /** Returns the real path of an experiment folder under the output folder, or throws 403/404. */
  async function experimentFolder(name: string): Promise<string> {
    const result = await guard.check('output', join(options.outputDir, name));
    if (!result.ok) {
      throw new ApiError(result.kind === 'forbidden' ? 403 : 400, 'PATH_FORBIDDEN', `Experiment ${name} ${result.reason}.`);
    }
    const summary = await summarizeExperiment(result.path, name, null);
    if (summary === undefined) {
      throw new ApiError(404, 'EXPERIMENT_NOT_FOUND', `No experiment ${name} in ${options.outputDir}. List them with GET /nested-learning/experiments.`);
    }
    return result.path;
  }
}

function activeRunConflict(supervisor: TrainingRunSupervisor): ApiError {
  const { experimentName, status } = supervisor.snapshot();
  return new ApiError(
    409,
    'RUN_ACTIVE',
    `Training run ${experimentName} is ${status}; one run at a time. Stop it with POST /nested-learning/stop or wait for it to end.`,
  );
}

/**
 * Settings of the dashboard's form that differ from the schema defaults, sized for a run of a few
 * minutes on the embedded tiny model: the schema's 1000 steps and 2048-token samples suit real
 * models instead.
 */
const SHORT_RUN_SETTINGS = {
  numSteps: 100,
  learningRate: 1e-3,
  batchSize: 4,
  maxSeqLength: 128,
  evalEvery: 10,
  evalBatches: 4,
  checkpointEvery: 50,
} as const;

/**
 * Returns the dashboard's starting values: the embedded default (the tiny model trained on
 * fiction, with forgetting measured on press) where the roots allow it, and short-run settings.
 */
function dashboardDefaults(options: ResolvedServerOptions): Record<string, unknown> {
  const embedded = embeddedDefaultPaths();
  const underRoot = (path: string, roots: readonly string[]): string => {
    const real = realpathOrUndefined(path);
    return real !== undefined && roots.some((root) => isInside(real, root)) ? real : '';
  };
  return {
    baseModelPath: underRoot(embedded.baseModelPath, options.roots.model),
    adapterPath: '',
    trainDataPath: underRoot(embedded.trainDataPath, options.roots.data),
    valDataPath: underRoot(embedded.valDataPath, options.roots.data),
    retainDataPath: underRoot(embedded.retainDataPath, options.roots.data),
    outputDir: options.outputDir,
    ...SHORT_RUN_SETTINGS,
  };
}

function realpathOrUndefined(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The optional HTTP API and dashboard, imported from `nested-learning/server`: start, watch and
 * stop one training run at a time over HTTP, on 127.0.0.1 by default.
 *
 * @module nested-learning/server
 */
export { createServer, startServer, type StartedServer } from './server.js';
export {
  DEFAULT_HOST,
  DEFAULT_PORT,
  type ServerOptions,
  type ServerRoots,
  type StartServerOptions,
} from './options.js';
export type { RunEvent, RunPhase, RunSnapshot, RunStatus } from './training-run.js';
export type { ExperimentStatus, ExperimentSummary } from './experiments.js';
export type { TierInfo, PresetInfo, ScheduleRow } from './tier-info.js';
export type { ApiErrorBody, RequestIssue } from './api-error.js';

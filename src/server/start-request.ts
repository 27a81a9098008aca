/**
 * Checks of a start request: the configuration (with the library's schema), the experiment
 * name, the paths (under the server's roots, existing where they are read) and the experiment
 * folder (not already holding a run unless resuming or overwriting).
 */
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { NestedLearningConfig, snakeCaseName, type ConfigFieldName } from '../index.js';
import { ApiError, type RequestIssue } from './api-error.js';
import type { ResolvedServerOptions, RootKind } from './options.js';
import type { PathGuard } from './paths.js';

/** A start request that passed every check. */
export interface CheckedStartRequest {
  /** The configuration with every path replaced by its absolute real path. */
  config: NestedLearningConfig;
  /** Absolute path of the experiment folder. */
  experimentPath: string;
}

/** Experiment names: a letter or digit first, then letters, digits, `.`, `_` and `-`, 100 characters at most. */
export const EXPERIMENT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** The path options of a configuration, with the root kind each must lie under and what must exist there. */
const PATH_FIELDS: readonly { field: ConfigFieldName; root: RootKind; expect: 'folder' | 'file' | 'any' }[] = [
  { field: 'baseModelPath', root: 'model', expect: 'folder' },
  { field: 'adapterPath', root: 'model', expect: 'folder' },
  { field: 'trainDataPath', root: 'data', expect: 'file' },
  { field: 'valDataPath', root: 'data', expect: 'file' },
  { field: 'retainDataPath', root: 'data', expect: 'file' },
  { field: 'outputDir', root: 'output', expect: 'any' },
];

/**
 * Checks a start request body and returns the configuration to train. Throws an {@link ApiError}:
 * 400 with every configuration issue, 403 for paths outside the roots, 409 when the experiment
 * folder already contains a run and neither `resume` nor `overwrite` is set.
 */
export async function checkStartRequest(
  body: unknown,
  options: ResolvedServerOptions,
  guard: PathGuard,
): Promise<CheckedStartRequest> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError(400, 'CONFIG_INVALID', 'The request body must be a JSON object of configuration options.', [
      { path: '(root)', message: 'must be an object that maps option names to values.', value: body },
    ]);
  }

  const input = withServerDefaults(body as Record<string, unknown>, options);
  const parsed = NestedLearningConfig.safeParse(input);
  if (!parsed.success) {
    const issues = (parsed.error.details.issues as RequestIssue[] | undefined) ?? [];
    throw new ApiError(400, 'CONFIG_INVALID', parsed.error.message, issues.map(toRequestIssue));
  }
  const config = parsed.data;
  const keyOf = (field: ConfigFieldName): string => writtenKey(input, field);

  if (!EXPERIMENT_NAME_PATTERN.test(config.experimentName)) {
    throw new ApiError(400, 'CONFIG_INVALID', 'Invalid experiment name.', [
      {
        path: keyOf('experimentName'),
        field: 'experimentName',
        value: config.experimentName,
        message:
          'must start with a letter or digit and contain only letters, digits, ".", "_" and "-", at most 100 characters.',
      },
    ]);
  }

  const resolved = await checkPaths(config, guard, keyOf);
  const experimentPath = await checkExperimentFolder(resolved, guard, keyOf);
  return { config: resolved, experimentPath };
}

/** Fills the experiment name (a new unique one) and the output folder when the body leaves them out. */
function withServerDefaults(body: Record<string, unknown>, options: ResolvedServerOptions): Record<string, unknown> {
  const input = { ...body };
  if (!hasOption(input, 'experimentName')) {
    input.experimentName = newExperimentName();
  }
  if (!hasOption(input, 'outputDir') && !Object.hasOwn(input, 'output_path')) {
    input.outputDir = options.outputDir;
  }
  return input;
}

/** Returns a name like `run-20260101-120000-3fa9`: the UTC start time and 16 random bits. */
export function newExperimentName(now: Date = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `run-${stamp}-${randomBytes(2).toString('hex')}`;
}

async function checkPaths(
  config: NestedLearningConfig,
  guard: PathGuard,
  keyOf: (field: ConfigFieldName) => string,
): Promise<NestedLearningConfig> {
  const forbidden: RequestIssue[] = [];
  const invalid: RequestIssue[] = [];
  const resolved: Record<string, unknown> = { ...config };

  for (const { field, root, expect } of PATH_FIELDS) {
    const value = config[field];
    if (typeof value !== 'string') {
      continue;
    }
    const result = await guard.check(root, value);
    if (!result.ok) {
      const issue = { path: keyOf(field), field, value, message: `${result.reason}.` };
      (result.kind === 'forbidden' ? forbidden : invalid).push(issue);
      continue;
    }
    const problem = await checkExists(result.path, expect);
    if (problem !== undefined) {
      invalid.push({ path: keyOf(field), field, value, message: problem });
      continue;
    }
    resolved[field] = result.path;
  }

  if (forbidden.length > 0) {
    throw new ApiError(
      403,
      'PATH_FORBIDDEN',
      `${forbidden.length === 1 ? 'A path lies' : 'Paths lie'} outside the folders this server may read and write: ` +
        `${forbidden.map((issue) => issue.path).join(', ')}. Use paths under the server's roots.`,
      forbidden,
    );
  }
  if (invalid.length > 0) {
    throw new ApiError(400, 'CONFIG_INVALID', `Invalid paths: ${invalid.map((issue) => issue.path).join(', ')}.`, invalid);
  }
  return resolved as NestedLearningConfig;
}

async function checkExperimentFolder(
  config: NestedLearningConfig,
  guard: PathGuard,
  keyOf: (field: ConfigFieldName) => string,
): Promise<string> {
  // The experiment folder itself may be a symbolic link that leads out of the output roots.
  const result = await guard.check('output', join(config.outputDir, config.experimentName));
  if (!result.ok) {
    throw new ApiError(result.kind === 'forbidden' ? 403 : 400, result.kind === 'forbidden' ? 'PATH_FORBIDDEN' : 'CONFIG_INVALID',
      `The experiment folder ${result.reason}.`, [
        { path: keyOf('experimentName'), field: 'experimentName', value: config.experimentName, message: `${result.reason}.` },
      ]);
  }

  const existing = await existingRunEntries(result.path);
  if (existing.length > 0 && !config.resume && !config.overwrite) {
    throw new ApiError(
      409,
      'EXPERIMENT_EXISTS',
      `Experiment ${config.experimentName} already has ${existing.join(', ')} in ${result.path}. ` +
        'Set resume to continue it, overwrite to replace it, or choose another experimentName.',
    );
  }
  return result.path;
}

async function existingRunEntries(path: string): Promise<string[]> {
  try {
    const names = await readdir(path);
    return ['config.json', 'checkpoints', 'metrics'].filter((name) => names.includes(name));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return [];
    }
    throw error;
  }
}

async function checkExists(path: string, expect: 'folder' | 'file' | 'any'): Promise<string | undefined> {
  if (expect === 'any') {
    return undefined;
  }
  try {
    const info = await stat(path);
    if (expect === 'folder' && !info.isDirectory()) {
      return `is not a folder: ${path}.`;
    }
    if (expect === 'file' && !info.isFile()) {
      return `is not a file: ${path}.`;
    }
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      return `was not found: ${path}.`;
    }
    return `cannot be read (${code ?? String(error)}): ${path}.`;
  }
}

function hasOption(input: Record<string, unknown>, field: ConfigFieldName): boolean {
  return input[field] !== undefined || input[snakeCaseName(field)] !== undefined;
}

/** Returns the key under which the client wrote an option: snake_case when it used it, else camelCase. */
function writtenKey(input: Record<string, unknown>, field: ConfigFieldName): string {
  const snake = snakeCaseName(field);
  return Object.hasOwn(input, snake) && !Object.hasOwn(input, field) ? snake : field;
}

function toRequestIssue(issue: RequestIssue): RequestIssue {
  return {
    path: issue.path,
    message: issue.message,
    ...(issue.value === undefined ? {} : { value: issue.value }),
    ...(issue.field === undefined ? {} : { field: issue.field }),
  };
}

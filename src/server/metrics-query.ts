/**
 * `GET /nested-learning/metrics`: the train and eval records of the current run, or of any
 * experiment folder under the output folder, filtered by step and paged.
 */
import { z } from 'zod';

import { ApiError, type RequestIssue } from './api-error.js';
import { EXPERIMENT_NAME_PATTERN } from './start-request.js';

/** Largest page the metrics endpoint returns. */
export const MAX_METRICS_LIMIT = 10_000;

/** Query parameters of the metrics endpoint. */
export const MetricsQuerySchema = z
  .object({
    experiment: z
      .string()
      .regex(EXPERIMENT_NAME_PATTERN, { message: 'must be an experiment name: letters, digits, ".", "_" and "-"' })
      .optional()
      .describe('Experiment folder to read; the current or last run of the server when absent.'),
    since: z.coerce.number().int().min(0).default(0).describe('Only records with a step above this one.'),
    offset: z.coerce.number().int().min(0).default(0).describe('Records to skip after the step filter, in each list.'),
    limit: z.coerce
      .number()
      .int()
      .min(1)
      .max(MAX_METRICS_LIMIT)
      .default(1000)
      .describe('Most records returned in each list.'),
  })
  .strict();

export type MetricsQuery = z.output<typeof MetricsQuerySchema>;

/** One page of one list of records. */
export interface RecordPage<T> {
  records: T[];
  /** Records after the step filter, before paging. */
  total: number;
  /** The offset of the next page, or null when this page is the last. */
  nextOffset: number | null;
}

/** Parses the query string, or throws a 400 {@link ApiError} with every issue. */
export function parseMetricsQuery(query: unknown): MetricsQuery {
  const result = MetricsQuerySchema.safeParse(query ?? {});
  if (result.success) {
    return result.data;
  }
  const issues: RequestIssue[] = result.error.issues.map((issue) => ({
    path: issue.path.map(String).join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : '(root)'),
    message: issue.code === 'unrecognized_keys' ? `is not a known query parameter; use experiment, since, offset and limit.` : `${issue.message}.`,
  }));
  throw new ApiError(400, 'QUERY_INVALID', 'Invalid query parameters of the metrics request.', issues);
}

/** Returns the records with a step above `since`, from `offset`, at most `limit` of them. */
export function pageRecords<T>(records: readonly T[], query: MetricsQuery, stepOf: (record: T) => unknown): RecordPage<T> {
  const filtered = query.since === 0 ? records : records.filter((record) => Number(stepOf(record)) > query.since);
  const page = filtered.slice(query.offset, query.offset + query.limit);
  const end = query.offset + page.length;
  return { records: page, total: filtered.length, nextOffset: end < filtered.length ? end : null };
}

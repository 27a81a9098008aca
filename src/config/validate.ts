/**
 * Validation of normalised options: field checks from the zod schema, then the rules across
 * fields, with every problem collected into one {@link ConfigError}.
 */
import { z } from 'zod';

import { ConfigError } from '../errors.js';
import { CONFIG_FIELD_NAMES, callerName, type ConfigSource, type NormalizedOptions } from './keys.js';
import { configRules } from './rules.js';
import { configFields, type ConfigFieldName, type NestedLearningConfigOutput } from './schema.js';
import {
  describeTypeForMessage,
  formatValue,
  numericShape,
  parseDecimalString,
  isPlainObject,
  type JsonSchemaNode,
} from './values.js';

/** One problem of a configuration. */
export interface ConfigIssue {
  /** Path of the value, with the top-level key as the caller wrote it, e.g. `tier_update_frequencies[1]`. */
  path: string;
  /** Description of the problem (what is wrong, what is allowed, what to do), written to follow the path. */
  message: string;
  /** The value found at the path (`undefined` when it is missing). */
  value: unknown;
  /** camelCase name of the option the problem belongs to, when it belongs to one. */
  field?: string;
  /** File the value was read from. */
  file?: string;
  /** 1-based line of the value in that file, when known. */
  line?: number;
}

/** The outcome of validating options. */
export type ValidationResult =
  | { success: true; config: NestedLearningConfigOutput }
  | { success: false; issues: ConfigIssue[] };

/** JSON Schema of each option (input side), used for messages and number parsing. */
export const FIELD_JSON_SCHEMAS: Readonly<Record<ConfigFieldName, JsonSchemaNode>> = Object.fromEntries(
  CONFIG_FIELD_NAMES.map((field) => [field, z.toJSONSchema(configFields[field], { io: 'input' }) as JsonSchemaNode]),
) as Record<ConfigFieldName, JsonSchemaNode>;

/**
 * Validates options: each option against its field schema, then every rule across options whose
 * inputs all passed. Returns the configuration with defaults, or every problem found.
 */
export function validateOptions(normalized: NormalizedOptions): ValidationResult {
  const issues: ConfigIssue[] = normalized.issues.map((issue) => ({
    path: issue.key,
    message: endSentence(issue.message),
    value: issue.value,
    ...locate(issue.source, [issue.key]),
  }));

  const values = new Map<ConfigFieldName, unknown>();
  for (const [field, option] of normalized.options) {
    values.set(field, parseNumberStrings(field, option.value));
  }
  fillTierCountDefaults(values);

  // 1) Field checks, one option at a time, so a wrong option does not hide the others.
  const config: Record<string, unknown> = {};
  const invalidFields = new Set<ConfigFieldName>();
  for (const field of CONFIG_FIELD_NAMES) {
    const value = values.get(field);
    const result = configFields[field].safeParse(value);
    if (result.success) {
      if (result.data !== undefined) {
        config[field] = result.data;
      }
      continue;
    }
    invalidFields.add(field);
    const option = normalized.options.get(field);
    const key = callerName(normalized, field);
    // One issue per path: an empty experimentName fails both its length and its pattern check.
    const seenPaths = new Set<string>();
    for (const issue of result.error.issues) {
      const found = fieldIssue(field, key, value, issue, option?.source);
      if (!seenPaths.has(found.path)) {
        seenPaths.add(found.path);
        issues.push(found);
      }
    }
  }

  // 2) Rules across options, each only when all of its options passed their own checks.
  const valid = config as NestedLearningConfigOutput;
  const nameOf = (field: ConfigFieldName): string => callerName(normalized, field);
  for (const rule of configRules) {
    if (rule.fields.some((field) => invalidFields.has(field))) {
      continue;
    }
    for (const issue of rule.check(valid, nameOf)) {
      const [field, ...rest] = issue.path as [ConfigFieldName, ...(string | number)[]];
      const option = normalized.options.get(field);
      const key = callerName(normalized, field);
      issues.push({
        path: formatPath([key, ...rest]),
        message: endSentence(issue.message),
        value: valueAt(config[field], rest),
        field,
        ...locate(option?.source, [key, ...rest]),
      });
    }
  }

  return issues.length === 0 ? { success: true, config: valid } : { success: false, issues };
}

/** Builds the error that lists every issue, one per line. */
export function configErrorFromIssues(issues: readonly ConfigIssue[], file?: string): ConfigError {
  const origin = file === undefined ? '' : ` in ${file}`;
  const count = issues.length === 1 ? '1 problem' : `${issues.length} problems`;
  const lines = issues.map((issue) => {
    const where = issue.line !== undefined && issue.file === file ? ` (line ${issue.line})` : '';
    return `- ${issue.path}${where}: ${issue.message}`;
  });
  return new ConfigError('CONFIG_INVALID', `Invalid configuration${origin} (${count}):\n${lines.join('\n')}`, {
    details: { issues, ...(file === undefined ? {} : { file }) },
  });
}

/** Returns the issue for a value that is not an object of options. */
export function notAnObjectIssue(value: unknown, source: ConfigSource): ConfigIssue {
  return {
    path: '(root)',
    message: `must be an object that maps option names to values, got ${formatValue(value)}.`,
    value,
    ...(source.file === undefined ? {} : { file: source.file }),
  };
}

/**
 * Writes a path as `key`, `key[1]` or `key["model.layers.*"]`. Keys below the top level are
 * parameter names or patterns, so they are always quoted.
 */
export function formatPath(segments: readonly (string | number)[]): string {
  return segments
    .map((segment, index) => {
      if (typeof segment === 'number') {
        return `[${segment}]`;
      }
      return index === 0 ? segment : `[${JSON.stringify(segment)}]`;
    })
    .join('');
}

function endSentence(text: string): string {
  return /[.?!]$/.test(text) ? text : `${text}.`;
}

/**
 * Derives the tier count from whichever of numTiers and tierUpdateFrequencies is given alone:
 * the length of the frequencies, or the powers of two 1, 2, 4, ... for the count.
 */
function fillTierCountDefaults(values: Map<ConfigFieldName, unknown>): void {
  const numTiers = values.get('numTiers');
  const frequencies = values.get('tierUpdateFrequencies');

  if (numTiers === undefined && Array.isArray(frequencies) && frequencies.length > 0) {
    values.set('numTiers', frequencies.length);
  }
  // Powers of two stay exact integers up to 2 ** 52, so larger counts keep the default list
  // and fail the count rule with a clear message.
  if (frequencies === undefined && Number.isInteger(numTiers) && (numTiers as number) >= 1 && (numTiers as number) <= 53) {
    values.set(
      'tierUpdateFrequencies',
      Array.from({ length: numTiers as number }, (_, tier) => 2 ** tier),
    );
  }
}

/** Turns decimal number strings into numbers wherever the option expects numbers. */
function parseNumberStrings(field: ConfigFieldName, value: unknown): unknown {
  switch (numericShape(FIELD_JSON_SCHEMAS[field])) {
    case 'scalar':
      return parseDecimalString(value);
    case 'list':
      return Array.isArray(value) ? value.map(parseDecimalString) : value;
    case 'mapping':
      return isPlainObject(value)
        ? Object.fromEntries(Object.entries(value).map(([key, entry]) => [key, parseDecimalString(entry)]))
        : value;
    default:
      return value;
  }
}

function fieldIssue(
  field: ConfigFieldName,
  key: string,
  fieldValue: unknown,
  issue: z.core.$ZodIssue,
  source: ConfigSource | undefined,
): ConfigIssue {
  const rest = issue.path.filter((segment): segment is string | number => typeof segment !== 'symbol');
  const value = valueAt(fieldValue, rest);
  return {
    path: formatPath([key, ...rest]),
    message: endSentence(describeFieldIssue(field, rest, value, issue)),
    value,
    field,
    ...locate(source, [key, ...rest]),
  };
}

/** States the rule a value broke, in words derived from the field's schema. */
function describeFieldIssue(
  field: ConfigFieldName,
  rest: readonly (string | number)[],
  value: unknown,
  issue: z.core.$ZodIssue,
): string {
  // Refinements and patterns carry their own rule, written where the schema defines them.
  if (issue.code === 'custom' || (issue.code === 'invalid_format' && issue.format === 'regex')) {
    return `${issue.message}, got ${formatValue(value)}`;
  }

  const schema = schemaAt(FIELD_JSON_SCHEMAS[field], rest);
  const expected = describeTypeForMessage(schema);
  if (value === undefined) {
    return `is required but missing. Set it to ${expected}`;
  }

  const rule = `must be ${expected}, got ${formatValue(value)}`;
  const fallback = FIELD_JSON_SCHEMAS[field].default;
  if (value === null && rest.length === 0 && fallback !== undefined) {
    return `${rule}. Remove the key to use the default, ${formatValue(fallback)}`;
  }
  return rule;
}

/** Follows a path into a JSON Schema: list indices to `items`, mapping keys to `additionalProperties`. */
function schemaAt(schema: JsonSchemaNode, path: readonly (string | number)[]): JsonSchemaNode {
  let current = schema;
  for (const segment of path) {
    if (typeof segment === 'number' && current.items !== undefined) {
      current = current.items;
    } else if (typeof current.additionalProperties === 'object') {
      current = current.additionalProperties;
    } else {
      break;
    }
  }
  return current;
}

function valueAt(value: unknown, path: readonly (string | number)[]): unknown {
  let current = value;
  for (const segment of path) {
    if (typeof current !== 'object' || current === null) {
      return undefined;
    }
    current = (current as Record<string | number, unknown>)[segment];
  }
  return current;
}

function locate(source: ConfigSource | undefined, path: readonly (string | number)[]): { file?: string; line?: number } {
  if (source?.file === undefined) {
    return {};
  }
  const line = source.locate?.(path);
  return line === undefined ? { file: source.file } : { file: source.file, line };
}

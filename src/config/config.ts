/**
 * `NestedLearningConfig`: validated options of a training run, from objects, presets or files.
 *
 * Keys may be camelCase or the snake_case names of the Python original (`tier_update_frequencies`,
 * `lora_rank`, ...). Number options also accept strings that are complete decimal literals, such
 * as `"1e-5"` or `"8"`, because YAML 1.1 writers and environment variables produce them. Other
 * strings, such as `""`, `" 8"`, `"0x10"` and `"NaN"`, are errors and never become 0 or NaN.
 */
import { ConfigError } from '../errors.js';
import {
  isOptionObject,
  mergeNormalizedOptions,
  normalizeOptionKeys,
  snakeCaseName,
  CONFIG_FIELD_NAMES,
  type ConfigSource,
  type NormalizedOptions,
} from './keys.js';
import { readConfigFile } from './load.js';
import { configPresets, type PresetName } from './presets.js';
import { configRules } from './rules.js';
import {
  configObjectSchema,
  type NestedLearningConfigInput,
  type NestedLearningConfigOutput,
} from './schema.js';
import { configJsonSchema, describeConfigFields, type ConfigJsonSchemaOptions } from './describe.js';
import { configErrorFromIssues, notAnObjectIssue, validateOptions, type ConfigIssue } from './validate.js';

/** The validated options of a training run, with every default filled in. */
export type NestedLearningConfig = NestedLearningConfigOutput;

/**
 * Options as a caller writes them: camelCase keys are type-checked, and snake_case keys of the
 * Python original are accepted too.
 */
export type ConfigOverrides = Partial<NestedLearningConfigInput> & Record<string, unknown>;

/** The result of {@link NestedLearningConfig.safeParse}. */
export type ConfigParseResult = { success: true; data: NestedLearningConfig } | { success: false; error: ConfigError };

/** Options of {@link NestedLearningConfig.fromFile}. */
export interface FromFileOptions {
  /** Options that replace the file's values, for example from command-line flags. */
  overrides?: ConfigOverrides;
}

/**
 * The zod schema with the rules across options. `NestedLearningConfig.parse` adds snake_case keys,
 * number strings and the collected error message on top of it.
 */
const nestedLearningConfigSchema = configObjectSchema.superRefine((config, context) => {
  for (const rule of configRules) {
    for (const issue of rule.check(config, (field) => field)) {
      context.addIssue({ code: 'custom', path: issue.path, message: issue.message });
    }
  }
});

const CALLER_SOURCE: ConfigSource = {};

/** Validates an object of options; throws a ConfigError with code `CONFIG_INVALID` that lists every problem. */
function parse(input: unknown): NestedLearningConfig {
  const result = safeParse(input);
  if (!result.success) {
    throw result.error;
  }
  return result.data;
}

/** Validates an object of options and returns the configuration or the error, without throwing. */
function safeParse(input: unknown): ConfigParseResult {
  if (!isOptionObject(input)) {
    return { success: false, error: configErrorFromIssues([notAnObjectIssue(input, CALLER_SOURCE)]) };
  }
  return finish(normalizeOptionKeys(input, CALLER_SOURCE));
}

/**
 * Reads a JSON (`.json`) or YAML (`.yaml`, `.yml`) file of options and validates it, after
 * applying `overrides`. Paths inside the file are used as written, so relative paths are relative
 * to the working directory, not to the file.
 *
 * Throws a ConfigError with code `CONFIG_FILE_INVALID` when the file is missing, unreadable, has
 * another extension, has a syntax error (the message gives the line and column) or is not an
 * object. Throws one with code `CONFIG_INVALID` when options are invalid, listing each problem
 * with its line.
 */
async function fromFile(path: string, options: FromFileOptions = {}): Promise<NestedLearningConfig> {
  const content = await readConfigFile(path);
  let normalized = normalizeOptionKeys(content.values, content.source);

  if (options.overrides !== undefined) {
    if (!isOptionObject(options.overrides)) {
      throw configErrorFromIssues([notAnObjectIssue(options.overrides, CALLER_SOURCE)]);
    }
    normalized = mergeNormalizedOptions(normalized, normalizeOptionKeys(options.overrides, CALLER_SOURCE));
  }

  const result = finish(normalized, path);
  if (!result.success) {
    throw result.error;
  }
  return result.data;
}

/**
 * Returns the configuration of a preset with `overrides` applied. The presets set only tier
 * options, so the overrides must include at least `baseModelPath` and `trainDataPath`.
 */
function preset(name: PresetName, overrides: ConfigOverrides = {}): NestedLearningConfig {
  if (!Object.hasOwn(configPresets, name)) {
    throw new ConfigError(
      'CONFIG_UNKNOWN_PRESET',
      `Unknown preset ${JSON.stringify(name)}. Choose one of ${Object.keys(configPresets).join(', ')}.`,
      { details: { preset: name, presets: Object.keys(configPresets) } },
    );
  }
  if (!isOptionObject(overrides)) {
    throw configErrorFromIssues([notAnObjectIssue(overrides, CALLER_SOURCE)]);
  }
  const base = normalizeOptionKeys({ ...configPresets[name] }, CALLER_SOURCE);
  const result = finish(mergeNormalizedOptions(base, normalizeOptionKeys(overrides, CALLER_SOURCE)));
  if (!result.success) {
    throw result.error;
  }
  return result.data;
}

/**
 * Returns the configuration with snake_case keys, the style of the Python original's
 * `config.json`. Options without a value are left out. `parse` reads the result back unchanged.
 */
function toSnakeCase(config: NestedLearningConfig): Record<string, unknown> {
  const snake: Record<string, unknown> = {};
  for (const field of CONFIG_FIELD_NAMES) {
    const value = config[field];
    if (value !== undefined) {
      snake[snakeCaseName(field)] = structuredClone(value);
    }
  }
  return snake;
}

function finish(normalized: NormalizedOptions, file?: string): ConfigParseResult {
  const result = validateOptions(normalized);
  if (result.success) {
    return { success: true, data: result.config };
  }
  return { success: false, error: configErrorFromIssues(result.issues, file) };
}

/**
 * Validated configuration of a training run. Use it as a type for the parsed options, and as a
 * value for `parse`, `safeParse`, `fromFile`, `preset`, `presets`, `jsonSchema`, `toSnakeCase`
 * and the zod `schema`.
 */
export const NestedLearningConfig = {
  /** Validates an object of options; throws a ConfigError with code `CONFIG_INVALID` that lists every problem. */
  parse,
  /** Validates an object of options and returns the configuration or the error, without throwing. */
  safeParse,
  /** Reads a JSON or YAML file of options and validates it; relative paths in it are relative to the working directory. */
  fromFile,
  /** Returns the configuration of a preset with overrides applied; the overrides must give baseModelPath and trainDataPath. */
  preset,
  /** Returns the configuration with the snake_case keys of the Python original's `config.json`. */
  toSnakeCase,
  /** The presets by name, each with only the options it sets. */
  presets: configPresets,
  /** Returns a JSON Schema of configuration files for editors. */
  jsonSchema: (options?: ConfigJsonSchemaOptions): Record<string, unknown> => configJsonSchema(options),
  /** Returns name, snake_case name, type, default and description of every option. */
  fields: describeConfigFields,
  /** The rules across options, one sentence each. */
  rules: configRules.map((rule) => rule.summary),
  /**
   * The zod schema: camelCase keys only, numbers only, and zod's own issues. Prefer `parse` unless
   * the schema is composed into a larger zod schema.
   */
  schema: nestedLearningConfigSchema,
} as const;

export type { ConfigIssue, NestedLearningConfigInput, PresetName };
/** Type of `NestedLearningConfig.schema`. */
export type NestedLearningConfigSchema = typeof nestedLearningConfigSchema;

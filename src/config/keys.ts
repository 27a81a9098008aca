/**
 * Option names: camelCase in TypeScript, snake_case as in the Python original, a few old aliases,
 * and the mapping of a caller's object onto camelCase options before validation.
 */
import { configFields, type ConfigFieldName } from './schema.js';
import { deepEqual, isPlainObject } from './values.js';

/** Every option name, in schema order. */
export const CONFIG_FIELD_NAMES = Object.keys(configFields) as ConfigFieldName[];

/** Other names of options in files of the Python original. */
export const CONFIG_KEY_ALIASES: Readonly<Record<string, ConfigFieldName>> = {
  output_path: 'outputDir',
};

/** Keys of the Python original that are accepted and have no effect here, with the reason. */
export const IGNORED_CONFIG_KEYS: Readonly<Record<string, string>> = {
  mixed_precision: 'tfjs has no half-precision tensors, so training always computes in float32',
};

/**
 * Optional paths where an empty string means "not given": the Python original writes
 * `adapter_path: ""` for a run without an adapter.
 */
const EMPTY_MEANS_ABSENT: ReadonlySet<ConfigFieldName> = new Set(['adapterPath', 'valDataPath', 'retainDataPath']);

/** Returns the snake_case name of a camelCase option, for example `lora_rank` for `loraRank`. */
export function snakeCaseName(field: ConfigFieldName): string {
  return field.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

const FIELD_BY_KEY: ReadonlyMap<string, ConfigFieldName> = new Map<string, ConfigFieldName>([
  ...CONFIG_FIELD_NAMES.map((field) => [field, field] as const),
  ...CONFIG_FIELD_NAMES.map((field) => [snakeCaseName(field), field] as const),
  ...Object.entries(CONFIG_KEY_ALIASES),
]);

/** Origin of a set of options, so issues can name the file and line. */
export interface ConfigSource {
  /** Path of the file, when the options were read from one. */
  file?: string;
  /** Returns the 1-based line of the value at a path (keys as written), when it is known. */
  locate?(path: readonly (string | number)[]): number | undefined;
}

/** One option as the caller gave it. */
export interface GivenOption {
  value: unknown;
  /** The key as written: camelCase, snake_case or an alias. */
  key: string;
  source: ConfigSource;
}

/** A problem found before validation, with the key as written. */
export interface KeyIssue {
  key: string;
  value: unknown;
  message: string;
  source: ConfigSource;
}

/** A caller's options mapped onto camelCase names. */
export interface NormalizedOptions {
  options: Map<ConfigFieldName, GivenOption>;
  issues: KeyIssue[];
  /** Keys that were accepted and have no effect (see {@link IGNORED_CONFIG_KEYS}). */
  ignoredKeys: string[];
  /** How many keys were written in snake_case and in camelCase, counting only names where the two differ. */
  keyStyles: { snake: number; camel: number };
}

/**
 * Maps an object's keys onto camelCase options.
 *
 * An unknown key is an issue that suggests the nearest option name. An option given under two
 * names with different values is an issue. `null` is dropped for optional options without a
 * default, because JSON has no other way to leave a key unset, and so is `""` for the optional paths. For options with a
 * default, `null` stays and fails validation, so a YAML key left blank does not silently fall back
 * to the default.
 */
export function normalizeOptionKeys(input: Record<string, unknown>, source: ConfigSource): NormalizedOptions {
  const options = new Map<ConfigFieldName, GivenOption>();
  const issues: KeyIssue[] = [];
  const ignoredKeys: string[] = [];
  const keyStyles = { snake: 0, camel: 0 };

  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) {
      continue;
    }
    if (Object.hasOwn(IGNORED_CONFIG_KEYS, key)) {
      ignoredKeys.push(key);
      continue;
    }

    const field = FIELD_BY_KEY.get(key);
    if (field === undefined) {
      issues.push({ key, value, source, message: unknownKeyMessage(key) });
      continue;
    }
    if (snakeCaseName(field) !== field) {
      keyStyles[key === field ? 'camel' : 'snake'] += 1;
    }
    if (isAbsentValue(field, value)) {
      continue;
    }

    const earlier = options.get(field);
    if (earlier !== undefined && !deepEqual(earlier.value, value)) {
      issues.push({
        key,
        value,
        source,
        message: `sets the same option as ${earlier.key} but to a different value. Keep only one of ${earlier.key} and ${key}`,
      });
      continue;
    }
    options.set(field, { value, key, source });
  }

  return { options, issues, ignoredKeys, keyStyles };
}

/** Combines normalised options; options of `override` replace those of `base`. */
export function mergeNormalizedOptions(base: NormalizedOptions, override: NormalizedOptions): NormalizedOptions {
  const options = new Map(base.options);
  for (const [field, option] of override.options) {
    options.set(field, option);
  }
  return {
    options,
    issues: [...base.issues, ...override.issues],
    ignoredKeys: [...base.ignoredKeys, ...override.ignoredKeys],
    keyStyles: {
      snake: base.keyStyles.snake + override.keyStyles.snake,
      camel: base.keyStyles.camel + override.keyStyles.camel,
    },
  };
}

/**
 * Returns the name to use for an option in messages: the key as the caller wrote it, or for an
 * option the caller did not write, its name in the style most of the caller's keys use.
 */
export function callerName(normalized: NormalizedOptions, field: ConfigFieldName): string {
  const option = normalized.options.get(field);
  if (option !== undefined) {
    return option.key;
  }
  return normalized.keyStyles.snake > normalized.keyStyles.camel ? snakeCaseName(field) : field;
}

/** Tells whether a top-level configuration value is a plain object, the only accepted form. */
export function isOptionObject(value: unknown): value is Record<string, unknown> {
  return isPlainObject(value);
}

/** Options that may be left out and have no default. */
const OPTIONAL_WITHOUT_DEFAULT: ReadonlySet<ConfigFieldName> = new Set(
  CONFIG_FIELD_NAMES.filter((field) => {
    const result = configFields[field].safeParse(undefined);
    return result.success && result.data === undefined;
  }),
);

function isAbsentValue(field: ConfigFieldName, value: unknown): boolean {
  if (value === null) {
    return OPTIONAL_WITHOUT_DEFAULT.has(field);
  }
  return value === '' && EMPTY_MEANS_ABSENT.has(field);
}

function unknownKeyMessage(key: string): string {
  const suggestion = nearestOptionName(key);
  const hint = suggestion === undefined ? '' : `. Did you mean ${suggestion}?`;
  return `is not a known option${hint}`;
}

/**
 * Returns the option name closest to an unknown key, in the key's own style (snake_case when it
 * contains an underscore), or undefined when no name is close. Case, `_` and `-` are ignored when
 * comparing, and at most a quarter of the letters (at least 2) may differ.
 */
export function nearestOptionName(key: string): string | undefined {
  const simplifiedKey = simplifyName(key);
  const maxDistance = Math.max(2, Math.floor(simplifiedKey.length / 4));

  let best: { field: ConfigFieldName; distance: number } | undefined;
  for (const field of CONFIG_FIELD_NAMES) {
    const distance = editDistance(simplifiedKey, simplifyName(field));
    if (distance <= maxDistance && (best === undefined || distance < best.distance)) {
      best = { field, distance };
    }
  }
  if (best === undefined) {
    return undefined;
  }
  return key.includes('_') ? snakeCaseName(best.field) : best.field;
}

function simplifyName(name: string): string {
  return name.toLowerCase().replace(/[_-]/g, '');
}

/** Levenshtein distance: the fewest single-character insertions, deletions and substitutions. */
function editDistance(left: string, right: string): number {
  let previous = Array.from({ length: right.length + 1 }, (_, index) => index);
  for (let i = 1; i <= left.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= right.length; j += 1) {
      const substitution = (previous[j - 1] as number) + (left[i - 1] === right[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, substitution));
    }
    previous = current;
  }
  return previous[right.length] as number;
}

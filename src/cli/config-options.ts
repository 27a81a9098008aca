/**
 * Command-line flags for every configuration field, generated from the configuration schema:
 * `numSteps` becomes `--num-steps <value>`, and the flags override the values of a config file,
 * a preset or the embedded default.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { Command, Option } from 'commander';

import {
  ArgumentError,
  embeddedDefaultConfig,
  embeddedDefaultPaths,
  NestedLearningConfig,
  type ConfigFieldInfo,
  type NestedLearningConfigInput,
  type PresetName,
} from '../index.js';

/** Conversion rule of a flag's text into a configuration value. */
type FlagKind = 'boolean' | 'list' | 'mapping' | 'text';

interface ConfigFlag {
  field: ConfigFieldInfo;
  /** commander's attribute name of the flag, the camelCase of the kebab-case flag. */
  attribute: string;
  kind: FlagKind;
}

/** Options that select where the configuration comes from. */
export interface ConfigSourceOptions {
  config?: string;
  preset?: string;
}

/** Returns the kebab-case flag of a camelCase field: `tierUpdateFrequencies` -> `tier-update-frequencies`. */
export function kebabCase(name: string): string {
  return name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
}

function flagKind(field: ConfigFieldInfo): FlagKind {
  if (field.type === 'boolean') {
    return 'boolean';
  }
  if (field.type.includes('list of')) {
    return 'list';
  }
  if (field.type.startsWith('mapping')) {
    return 'mapping';
  }
  return 'text';
}

function configFlags(): ConfigFlag[] {
  return NestedLearningConfig.fields().map((field) => ({
    field,
    attribute: field.name,
    kind: flagKind(field),
  }));
}

/**
 * Adds `--config`, `--preset` and one flag per configuration field to a command. The help text of
 * each field flag is the field's description, its type and its default.
 */
export function addConfigOptions(command: Command): Command {
  command
    .option('-c, --config <file>', 'configuration file (JSON or YAML); without it the embedded default run is used')
    .addOption(
      new Option('--preset <name>', 'tier preset applied before the flags').choices(Object.keys(NestedLearningConfig.presets)),
    );

  for (const { field, kind } of configFlags()) {
    const flag = `--${kebabCase(field.name)}`;
    const defaultText = field.default === undefined ? '' : ` (default ${JSON.stringify(field.default)})`;
    const description = `${field.description} [${field.type}]${defaultText}`;
    if (kind === 'boolean') {
      command.addOption(new Option(`${flag} [true|false]`, description).helpGroup('Configuration fields:'));
    } else {
      let placeholder = '<value>';
      if (kind === 'list') {
        placeholder = '<a,b,...>';
      } else if (kind === 'mapping') {
        placeholder = '<json>';
      }
      command.addOption(new Option(`${flag} ${placeholder}`, description).helpGroup('Configuration fields:'));
    }
  }
  command.addHelpText('after', embeddedDefaultHelp);
  return command;
}

/** Lists the values the embedded default run sets, which differ from the schema defaults in the flag list. */
function embeddedDefaultHelp(): string {
  const values = Object.entries(embeddedDefaultConfig())
    .filter(([name]) => !name.endsWith('Path') && name !== 'experimentName')
    .map(([name, value]) => `--${kebabCase(name)} ${Array.isArray(value) ? value.join(',') : String(value)}`);
  return (
    '\nWithout --config, the embedded default run (the tiny Qwen2 model and Brown Corpus data of the package) sets:\n' +
    `  ${values.join(' ')}\n` +
    '  --experiment-name tiny-qwen2-fiction-<UTC time>\n' +
    'The defaults in the list above apply to configuration files.'
  );
}

/** Returns the configuration fields given as flags, converted to configuration values. */
export function configOverrides(options: Record<string, unknown>): Record<string, unknown> {
  const overrides: Record<string, unknown> = {};
  for (const { field, attribute, kind } of configFlags()) {
    const raw = options[attribute];
    if (raw === undefined) {
      continue;
    }
    overrides[field.name] = flagValue(field.name, kind, raw);
  }
  return overrides;
}

function flagValue(name: string, kind: FlagKind, raw: unknown): unknown {
  const flag = `--${kebabCase(name)}`;
  if (kind === 'boolean') {
    if (raw === true || raw === 'true') {
      return true;
    }
    if (raw === 'false') {
      return false;
    }
    throw new ArgumentError('CLI_INVALID_FLAG', `Invalid value ${JSON.stringify(raw)} for ${flag}. Expected true or false, or the flag alone for true.`, {
      details: { flag, value: raw },
    });
  }

  const text = String(raw);
  if (kind === 'list') {
    return text
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
  }
  if (kind === 'mapping') {
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw new ArgumentError(
        'CLI_INVALID_FLAG',
        `Invalid JSON for ${flag}: ${(error as Error).message}. Pass an object, for example '{"model.layers.0.*": 0}'.`,
        { details: { flag, value: text } },
      );
    }
  }
  return text;
}

/**
 * Builds the configuration of a command from the file of `--config`, or else from the embedded
 * default run. The tier options of `--preset` apply on top, and every configuration flag after them.
 */
export async function resolveConfig(options: ConfigSourceOptions & Record<string, unknown>): Promise<NestedLearningConfig> {
  const overrides = configOverrides(options);
  const presetValues = options.preset === undefined ? {} : { ...NestedLearningConfig.presets[options.preset as PresetName] };
  if (options.config !== undefined) {
    return NestedLearningConfig.fromFile(options.config, { overrides: { ...presetValues, ...overrides } });
  }
  const input: NestedLearningConfigInput & Record<string, unknown> = { ...embeddedDefaultConfig(), ...presetValues, ...overrides };
  const config = NestedLearningConfig.parse(input);
  const embeddedModel = embeddedDefaultPaths().baseModelPath;
  if (config.baseModelPath === embeddedModel && !existsSync(join(embeddedModel, 'model.safetensors'))) {
    throw new ArgumentError(
      'CLI_EMBEDDED_DEFAULT_MISSING',
      `The embedded default model is missing from this installation (${embeddedModel}/model.safetensors). ` +
        'Run the command from a clone of the repository, rebuild the weights with `npm run pretrain:tiny`, or pass --config or --base-model-path.',
      { details: { path: embeddedModel } },
    );
  }
  return config;
}


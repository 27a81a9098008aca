/**
 * Descriptions of the options generated from the schema: one record per option for docs and
 * command-line help, and a JSON Schema for editors.
 */
import { z } from 'zod';

import { snakeCaseName } from './keys.js';
import { configObjectSchema, configSections, type ConfigFieldName } from './schema.js';
import { FIELD_JSON_SCHEMAS } from './validate.js';
import { describeTypeForDocs, type JsonSchemaNode } from './values.js';

/** Documentation of one option. */
export interface ConfigFieldInfo {
  /** camelCase name. */
  name: ConfigFieldName;
  /** snake_case name, accepted in files and objects. */
  snakeName: string;
  /** Title of the group the option belongs to. */
  section: string;
  /** Type and allowed range in words, for example `integer of at least 1`. */
  type: string;
  /** Whether the option must be given: it has no default and may not be left out. */
  required: boolean;
  /** The default, or undefined when there is none. */
  default: unknown;
  /** One-line description. */
  description: string;
}

/** Naming style of the keys of {@link configJsonSchema}. */
export type ConfigKeyStyle = 'camelCase' | 'snake_case';

/** Options of {@link configJsonSchema}. */
export interface ConfigJsonSchemaOptions {
  /**
   * Key style of the properties; an editor flags keys of the other style as unknown.
   * @default 'camelCase'
   */
  keys?: ConfigKeyStyle;
}

/** Returns one record per option, grouped by section in documentation order. */
export function describeConfigFields(): ConfigFieldInfo[] {
  const required = new Set(requiredFields());
  return configSections.flatMap((section) =>
    Object.keys(section.fields).map((key) => {
      const name = key as ConfigFieldName;
      const schema = FIELD_JSON_SCHEMAS[name];
      return {
        name,
        snakeName: snakeCaseName(name),
        section: section.title,
        type: describeTypeForDocs(schema),
        required: required.has(name),
        default: schema.default,
        description: schema.description ?? '',
      };
    }),
  );
}

/**
 * Returns a JSON Schema (draft 2020-12) of a configuration file for editors. It checks each
 * option's type and range and flags unknown keys; the rules across options are checked by
 * `NestedLearningConfig.parse` only.
 */
export function configJsonSchema(options: ConfigJsonSchemaOptions = {}): Record<string, unknown> {
  const schema = z.toJSONSchema(configObjectSchema, { io: 'input' }) as JsonSchemaNode & {
    properties: Record<string, JsonSchemaNode>;
    required?: string[];
  };
  const snake = options.keys === 'snake_case';
  const rename = (field: string): string => (snake ? snakeCaseName(field as ConfigFieldName) : field);

  return {
    $schema: schema.$schema,
    title: 'nested-learning configuration',
    description: 'Options of a nested-learning training run (NestedLearningConfig).',
    type: 'object',
    properties: Object.fromEntries(Object.entries(schema.properties).map(([field, property]) => [rename(field), property])),
    required: (schema.required ?? []).map(rename),
    additionalProperties: false,
  };
}

function requiredFields(): string[] {
  const schema = z.toJSONSchema(configObjectSchema, { io: 'input' }) as { required?: string[] };
  return schema.required ?? [];
}

/**
 * Small helpers on configuration values: how a value is shown in a message, which strings count as
 * numbers, deep equality, and plain-English descriptions of a field's JSON Schema.
 */

/**
 * A decimal number literal: optional sign, digits with an optional fraction, optional exponent.
 * Only strings that match it completely become numbers, so `""`, `" 5"`, `"0x10"`, `"1_000"`,
 * `"NaN"` and `"Infinity"` stay strings and fail the number check.
 */
const DECIMAL_NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

const MAX_SHOWN_LENGTH = 80;

/** Returns the number a decimal literal string stands for, or the value unchanged. */
export function parseDecimalString(value: unknown): unknown {
  if (typeof value === 'string' && DECIMAL_NUMBER.test(value)) {
    return Number(value);
  }
  return value;
}

/** Shows a value in a message: strings quoted, NaN and Infinity by name, long values cut short. */
export function formatValue(value: unknown): string {
  if (value === '') {
    return '"" (an empty string)';
  }
  const text = formatInner(value);
  return text.length > MAX_SHOWN_LENGTH ? `${text.slice(0, MAX_SHOWN_LENGTH - 3)}...` : text;
}

function formatInner(value: unknown): string {
  if (value === undefined) {
    return 'nothing';
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' || value === null) {
    return String(value);
  }
  if (typeof value === 'string') {
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map(formatInner).join(', ')}]`;
  }
  if (value instanceof RegExp) {
    return String(value);
  }
  if (typeof value === 'object') {
    const entries = Object.entries(value).map(([key, entry]) => `${JSON.stringify(key)}: ${formatInner(entry)}`);
    return `{${entries.join(', ')}}`;
  }
  return typeof value;
}

/** Structural equality of JSON-like values; NaN equals NaN so a repeated NaN is not a conflict. */
export function deepEqual(left: unknown, right: unknown): boolean {
  if (Object.is(left, right)) {
    return true;
  }
  if (Array.isArray(left) && Array.isArray(right)) {
    return left.length === right.length && left.every((entry, index) => deepEqual(entry, right[index]));
  }
  if (isPlainObject(left) && isPlainObject(right)) {
    const leftKeys = Object.keys(left);
    const rightKeys = Object.keys(right);
    return leftKeys.length === rightKeys.length && leftKeys.every((key) => key in right && deepEqual(left[key], right[key]));
  }
  return false;
}

/** Tells whether a value is an object literal (not null, an array, a Map or a class instance). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return false;
  }
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

/** The subset of JSON Schema that the config fields produce. */
export interface JsonSchemaNode {
  type?: string;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchemaNode[];
  items?: JsonSchemaNode;
  additionalProperties?: JsonSchemaNode | boolean;
  propertyNames?: JsonSchemaNode;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minItems?: number;
  minLength?: number;
  default?: unknown;
  description?: string;
  [keyword: string]: unknown;
}

/** Wording of a type: `noun` for one value, `plural` for list entries, `article` before `noun`. */
interface TypeWords {
  noun: string;
  plural: string;
  article: '' | 'a' | 'an';
}

/** Describes a schema for the docs table, for example `integer of at least 1`. */
export function describeTypeForDocs(schema: JsonSchemaNode): string {
  if (schema.type === 'boolean') {
    return 'boolean';
  }
  if (schema.anyOf !== undefined) {
    return schema.anyOf.map(describeTypeForDocs).join(' or ');
  }
  return typeWords(schema).noun;
}

/** Describes a schema for a message, with its article, for example `an integer of at least 1`. */
export function describeTypeForMessage(schema: JsonSchemaNode): string {
  if (schema.anyOf !== undefined) {
    return schema.anyOf.map(describeTypeForMessage).join(' or ');
  }
  const words = typeWords(schema);
  return words.article === '' ? words.noun : `${words.article} ${words.noun}`;
}

/** Tells whether a schema accepts numbers, directly or as list entries, mapping values or a union branch. */
export function numericShape(schema: JsonSchemaNode): 'scalar' | 'list' | 'mapping' | undefined {
  if (schema.type === 'number' || schema.type === 'integer') {
    return 'scalar';
  }
  if (schema.anyOf?.some((branch) => numericShape(branch) === 'scalar')) {
    return 'scalar';
  }
  if (schema.type === 'array' && schema.items !== undefined && numericShape(schema.items) === 'scalar') {
    return 'list';
  }
  const values = schema.additionalProperties;
  if (schema.type === 'object' && typeof values === 'object' && numericShape(values) === 'scalar') {
    return 'mapping';
  }
  return undefined;
}

function typeWords(schema: JsonSchemaNode): TypeWords {
  if (schema.const !== undefined) {
    const literal = JSON.stringify(schema.const);
    return { noun: literal, plural: literal, article: '' };
  }
  if (schema.enum !== undefined) {
    const choices = joinChoices(schema.enum.map((choice) => JSON.stringify(choice)));
    return { noun: choices, plural: choices, article: '' };
  }

  switch (schema.type) {
    case 'boolean':
      return { noun: 'true or false', plural: 'booleans', article: '' };
    case 'number':
    case 'integer': {
      const bounds = describeBounds(schema);
      return { noun: `${schema.type}${bounds}`, plural: `${schema.type}s${bounds}`, article: schema.type === 'integer' ? 'an' : 'a' };
    }
    case 'string':
      return (schema.minLength ?? 0) >= 1
        ? { noun: 'non-empty string', plural: 'non-empty strings', article: 'a' }
        : { noun: 'string', plural: 'strings', article: 'a' };
    case 'array': {
      const entries = schema.items === undefined ? 'values' : typeWords(schema.items).plural;
      const nonEmpty = (schema.minItems ?? 0) >= 1;
      return {
        noun: `${nonEmpty ? 'non-empty ' : ''}list of ${entries}`,
        plural: `${nonEmpty ? 'non-empty ' : ''}lists of ${entries}`,
        article: 'a',
      };
    }
    case 'object': {
      const keys = schema.propertyNames === undefined ? 'strings' : typeWords(schema.propertyNames).plural;
      const values = typeof schema.additionalProperties === 'object' ? typeWords(schema.additionalProperties).plural : 'values';
      return { noun: `mapping of ${keys} to ${values}`, plural: `mappings of ${keys} to ${values}`, article: 'a' };
    }
    default:
      return { noun: 'value', plural: 'values', article: 'a' };
  }
}

/** Writes numeric bounds, leaving out the safe-integer limits that every integer schema carries. */
function describeBounds(schema: JsonSchemaNode): string {
  const lower =
    schema.exclusiveMinimum !== undefined
      ? { word: 'greater than', value: schema.exclusiveMinimum, inclusive: false }
      : schema.minimum !== undefined && schema.minimum > Number.MIN_SAFE_INTEGER
        ? { word: 'at least', value: schema.minimum, inclusive: true }
        : undefined;
  const upper =
    schema.exclusiveMaximum !== undefined
      ? { word: 'less than', value: schema.exclusiveMaximum, inclusive: false }
      : schema.maximum !== undefined && schema.maximum < Number.MAX_SAFE_INTEGER
        ? { word: 'at most', value: schema.maximum, inclusive: true }
        : undefined;

  if (lower !== undefined && upper !== undefined) {
    if (lower.inclusive && upper.inclusive) {
      return ` from ${lower.value} to ${upper.value}`;
    }
    return ` ${lower.inclusive ? 'of ' : ''}${lower.word} ${lower.value} and ${upper.word} ${upper.value}`;
  }
  if (lower !== undefined) {
    return ` ${lower.inclusive ? 'of ' : ''}${lower.word} ${lower.value}`;
  }
  if (upper !== undefined) {
    return ` ${upper.inclusive ? 'of ' : ''}${upper.word} ${upper.value}`;
  }
  return '';
}

/** Joins choices as `"a", "b" or "c"`. */
function joinChoices(choices: string[]): string {
  if (choices.length <= 1) {
    return choices.join('');
  }
  return `${choices.slice(0, -1).join(', ')} or ${choices[choices.length - 1]}`;
}

/**
 * Validation of dataset records: the three JSONL formats that mlx_lm reads, detected per record.
 *
 * - `text`: `{"text": "..."}`
 * - `completions`: `{"prompt": "...", "completion": "..."}` (field names configurable)
 * - `chat`: `{"messages": [{"role": "...", "content": "..."}, ...], "tools": [...]}` (`tools` optional)
 *
 * A record with keys of several formats is read as the first of `chat`, `completions`, `text`
 * that it has, the order mlx_lm checks them in.
 */

import { FileFormatError } from '../errors.js';
import type { ChatMessage } from './chat-template.js';

/** Name of a dataset format. */
export type DatasetFormat = 'text' | 'completions' | 'chat';

/** Roles accepted in `chat` records. */
export const CHAT_ROLES = ['system', 'user', 'assistant', 'tool'] as const;

/** A validated record. */
export type DatasetRecord =
  | { format: 'text'; text: string }
  | { format: 'completions'; prompt: string; completion: string }
  | { format: 'chat'; messages: ChatMessage[]; tools: unknown[] | undefined };

/** Field names of the `completions` format. */
export interface RecordFields {
  promptField: string;
  completionField: string;
}

/** Source file and line of a record, for error messages. */
export interface RecordLocation {
  path: string;
  lineNumber: number;
}

/**
 * Checks one parsed JSONL value and returns it as a typed record.
 *
 * Throws `FileFormatError` with `details.lineNumber` and one of the codes
 * `DATASET_FORMAT_UNKNOWN`, `DATASET_FIELD_INVALID`, `DATASET_ROLE_UNKNOWN` or
 * `DATASET_CONVERSATION_EMPTY`.
 */
export function parseRecord(value: unknown, fields: RecordFields, location: RecordLocation): DatasetRecord {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw recordError('DATASET_FORMAT_UNKNOWN', location, 'is not a JSON object');
  }
  const record = value as Record<string, unknown>;

  if ('messages' in record) return parseChat(record, location);

  const hasPrompt = fields.promptField in record;
  const hasCompletion = fields.completionField in record;
  if (hasPrompt || hasCompletion) {
    if (!hasPrompt || !hasCompletion) {
      const missing = hasPrompt ? fields.completionField : fields.promptField;
      throw recordError('DATASET_FIELD_INVALID', location, `has no "${missing}" field, which the completions format needs`);
    }
    return {
      format: 'completions',
      prompt: requireString(record, fields.promptField, location),
      completion: requireString(record, fields.completionField, location),
    };
  }

  if ('text' in record) return { format: 'text', text: requireString(record, 'text', location) };

  const keys = Object.keys(record).slice(0, 5).map((key) => JSON.stringify(key)).join(', ');
  throw recordError(
    'DATASET_FORMAT_UNKNOWN',
    location,
    `matches no dataset format (keys: ${keys || 'none'}); expected "text", ` +
      `"${fields.promptField}" with "${fields.completionField}", or "messages"`,
  );
}

function parseChat(record: Record<string, unknown>, location: RecordLocation): DatasetRecord {
  const messages = record.messages;
  if (!Array.isArray(messages)) {
    throw recordError('DATASET_FIELD_INVALID', location, `has "messages" of type ${typeName(messages)}; expected a list of messages`);
  }
  if (messages.length === 0) {
    throw recordError('DATASET_CONVERSATION_EMPTY', location, 'has an empty "messages" list; a conversation needs at least one message');
  }

  const parsed = messages.map((message, index) => parseMessage(message, index, location));

  const tools = record.tools;
  if (tools !== undefined && tools !== null && !Array.isArray(tools)) {
    throw recordError('DATASET_FIELD_INVALID', location, `has "tools" of type ${typeName(tools)}; expected a list of tool descriptions`);
  }
  return { format: 'chat', messages: parsed, tools: Array.isArray(tools) && tools.length > 0 ? tools : undefined };
}

function parseMessage(message: unknown, index: number, location: RecordLocation): ChatMessage {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw recordError('DATASET_FIELD_INVALID', location, `has message ${index} of type ${typeName(message)}; expected an object`);
  }
  const { role, content } = message as Record<string, unknown>;
  if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role)) {
    throw recordError(
      'DATASET_ROLE_UNKNOWN',
      location,
      `has message ${index} with role ${JSON.stringify(role) ?? 'undefined'}; expected one of ${CHAT_ROLES.join(', ')}`,
    );
  }
  if (typeof content !== 'string') {
    throw recordError(
      'DATASET_FIELD_INVALID',
      location,
      `has message ${index} (${role}) with content of type ${typeName(content)}; content must be a string ` +
        '(use "" for an assistant message that only calls tools)',
    );
  }
  return { ...(message as Record<string, unknown>), role, content };
}

function requireString(record: Record<string, unknown>, field: string, location: RecordLocation): string {
  const value = record[field];
  if (typeof value !== 'string') {
    throw recordError('DATASET_FIELD_INVALID', location, `has "${field}" of type ${typeName(value)}; expected a string`);
  }
  return value;
}

/** Builds a `FileFormatError` whose message starts with the file and line. */
export function recordError(code: string, location: RecordLocation, problem: string, cause?: unknown): FileFormatError {
  return new FileFormatError(code, `Line ${location.lineNumber} of ${location.path} ${problem}.`, {
    cause,
    details: { path: location.path, lineNumber: location.lineNumber },
  });
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

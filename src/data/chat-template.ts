/**
 * Chat templates: choosing the template a tokenizer folder provides, compiling it with
 * `@huggingface/jinja`, and rendering a conversation with the variables that Hugging Face
 * `transformers` passes to the same templates.
 */

import { Template } from '@huggingface/jinja';

import { ArgumentError, FileFormatError } from '../errors.js';

/** One message of a conversation. Fields other than `role` and `content` (`tool_calls`, `name`) reach the template unchanged. */
export interface ChatMessage {
  role: string;
  content: string;
  [field: string]: unknown;
}

/** Options of a chat template rendering. */
export interface ChatTemplateOptions {
  /**
   * Appends the opening of an assistant turn (for ChatML, `<|im_start|>assistant\n`) so that the
   * model's continuation is the reply.
   * @default false
   */
  addGenerationPrompt?: boolean;
  /** Tool (function) descriptions, passed to the template as `tools`, usually as JSON schemas. */
  tools?: unknown[];
  /** Extra template variables, for example `{ enable_thinking: false }` for Qwen3 templates. */
  variables?: Record<string, unknown>;
}

/** A compiled chat template and the file it came from. */
export interface CompiledChatTemplate {
  template: Template;
  /** The template text. */
  source: string;
  /** The file the template was read from, for error messages. */
  file: string;
}

/** Special tokens exposed to templates as `bos_token`, `eos_token`, `pad_token` and `unk_token`. */
export interface TemplateSpecialTokens {
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  unkToken?: string;
}

/**
 * Picks the template text from a `chat_template` value of `tokenizer_config.json`.
 *
 * The value is either a string or a list of `{ name, template }` entries. From a list, the entry
 * named `tool_use` is used when tools are given and it exists, otherwise the entry named `default`.
 * Returns `undefined` when there is no usable template.
 */
export function selectChatTemplate(value: unknown, file: string, options: { tools?: boolean } = {}): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;

  if (!Array.isArray(value)) {
    throw new FileFormatError(
      'CHAT_TEMPLATE_INVALID',
      `Invalid chat_template in ${file}: expected a string or a list of {name, template} entries, got ${typeof value}.`,
      { details: { file } },
    );
  }
  const named = new Map<string, string>();
  for (const entry of value) {
    const name = (entry as { name?: unknown } | null)?.name;
    const template = (entry as { template?: unknown } | null)?.template;
    if (typeof name !== 'string' || typeof template !== 'string') {
      throw new FileFormatError(
        'CHAT_TEMPLATE_INVALID',
        `Invalid chat_template entry in ${file}: each entry needs string fields "name" and "template".`,
        { details: { file } },
      );
    }
    named.set(name, template);
  }
  if (options.tools === true && named.has('tool_use')) return named.get('tool_use');
  return named.get('default');
}

/** Compiles a template, turning a syntax error into a `FileFormatError` that names the file. */
export function compileChatTemplate(source: string, file: string): CompiledChatTemplate {
  try {
    return { template: new Template(source), source, file };
  } catch (error) {
    throw new FileFormatError(
      'CHAT_TEMPLATE_INVALID',
      `Failed to parse the chat template in ${file}: ${(error as Error).message}. Fix the template or use another tokenizer folder.`,
      { cause: error, details: { file } },
    );
  }
}

/**
 * Renders a conversation to text.
 *
 * The variables match what `transformers` passes: `messages`, `tools` (`null` when absent, so
 * `tools is none` is true as in Python), `documents` (`null`), `add_generation_prompt`, and each
 * special token that is defined. `variables` are added last and may override those.
 *
 * Throws `ArgumentError` with code `CHAT_TEMPLATE_RENDER_FAILED` when the template raises, for
 * example through `raise_exception('Conversation roles must alternate')`.
 */
export function renderChatTemplate(
  compiled: CompiledChatTemplate,
  messages: readonly ChatMessage[],
  specialTokens: TemplateSpecialTokens,
  options: ChatTemplateOptions = {},
): string {
  const context: Record<string, unknown> = {
    messages,
    tools: options.tools ?? null,
    documents: null,
    add_generation_prompt: options.addGenerationPrompt ?? false,
  };
  if (specialTokens.bosToken !== undefined) context.bos_token = specialTokens.bosToken;
  if (specialTokens.eosToken !== undefined) context.eos_token = specialTokens.eosToken;
  if (specialTokens.padToken !== undefined) context.pad_token = specialTokens.padToken;
  if (specialTokens.unkToken !== undefined) context.unk_token = specialTokens.unkToken;
  Object.assign(context, options.variables ?? {});

  try {
    return compiled.template.render(context);
  } catch (error) {
    throw new ArgumentError(
      'CHAT_TEMPLATE_RENDER_FAILED',
      `The chat template from ${compiled.file} failed to render ${messages.length} message(s): ${(error as Error).message}. ` +
        'Check the roles and their order against what the template accepts.',
      { cause: error, details: { file: compiled.file, roles: messages.map((message) => message.role) } },
    );
  }
}

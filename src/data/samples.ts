/**
 * Turning validated records into token ids and target masks.
 *
 * `targetMask[t]` is 1 when token t is a target, that is when the prediction made at position
 * t - 1 counts in the loss. Token 0 has no earlier position, so `targetMask[0]` is always 0.
 *
 * With `maskPrompt`, the prompt/completion boundary is found on token ids. The prompt alone and the
 * full sample are encoded separately, and the boundary is the number of leading ids they share.
 * For chat, the prompt is the conversation without its last message, rendered with
 * `add_generation_prompt`.
 * The first id that differs is the first target, even when that token also spans the last
 * characters of the prompt (a space merged into the completion's first word). The rendered prompt
 * text must be a prefix of the rendered full text, otherwise the boundary is undefined and the
 * record is rejected.
 */

import { NestedLearningError } from '../errors.js';
import type { ChatMessage } from './chat-template.js';
import { type DatasetFormat, type DatasetRecord, type RecordLocation, recordError } from './records.js';
import type { Tokenizer } from './tokenizer.js';

/** One tokenised training example. */
export interface DatasetSample {
  inputIds: number[];
  /** 1 where the token at the same index is a target, aligned with `inputIds`. */
  targetMask: number[];
  format: DatasetFormat;
  /** Physical line of the source file, when the sample came from one. */
  lineNumber?: number;
}

/** Options of {@link encodeRecord}. */
export interface EncodeRecordOptions {
  tokenizer: Tokenizer;
  /** Counts only completion or final-assistant tokens as targets. */
  maskPrompt: boolean;
  /** Extra chat template variables, for example `{ enable_thinking: false }`. */
  chatTemplateVariables?: Record<string, unknown>;
}

/**
 * Encodes one record without truncation.
 *
 * - `text`: encoded with special tokens, EOS appended when the ids do not end with it; every
 *   token after the first is a target.
 * - `completions`: rendered as a user turn and an assistant turn with the chat template when the
 *   tokenizer has one. Without a template, prompt and completion are joined with nothing between
 *   them, encoded with special tokens, and EOS is appended. The appended EOS is a target.
 * - `chat`: rendered with the chat template, with the record's tools. Nothing is appended, so the
 *   turn ends as the template writes it; its end-of-turn token falls after the boundary and is a
 *   target.
 */
export function encodeRecord(record: DatasetRecord, options: EncodeRecordOptions, location: RecordLocation): DatasetSample {
  const { tokenizer } = options;
  if (record.format === 'text') {
    const inputIds = withEos(tokenizer.encode(record.text, { addSpecialTokens: true }), tokenizer.eosTokenId);
    return { inputIds, targetMask: maskFrom(inputIds.length, 1), format: 'text', lineNumber: location.lineNumber };
  }

  if (record.format === 'completions' && !tokenizer.hasChatTemplate) {
    const inputIds = withEos(tokenizer.encode(record.prompt + record.completion, { addSpecialTokens: true }), tokenizer.eosTokenId);
    const boundary = options.maskPrompt
      ? sharedPrefixLength(tokenizer.encode(record.prompt, { addSpecialTokens: true }), inputIds)
      : 1;
    return { inputIds, targetMask: maskFrom(inputIds.length, boundary), format: 'completions', lineNumber: location.lineNumber };
  }

  const { messages, tools } =
    record.format === 'chat'
      ? record
      : {
          messages: [
            { role: 'user', content: record.prompt },
            { role: 'assistant', content: record.completion },
          ],
          tools: undefined,
        };
  return encodeConversation(messages, tools, record.format, options, location);
}

function encodeConversation(
  messages: ChatMessage[],
  tools: unknown[] | undefined,
  format: DatasetFormat,
  options: EncodeRecordOptions,
  location: RecordLocation,
): DatasetSample {
  const { tokenizer } = options;
  if (!tokenizer.hasChatTemplate) {
    throw recordError(
      'DATASET_CHAT_TEMPLATE_MISSING',
      location,
      'is a chat record, but the tokenizer has no chat template; use a tokenizer folder with a chat_template',
    );
  }

  const render = (conversation: ChatMessage[], addGenerationPrompt: boolean): string =>
    renderOrThrow(() =>
      tokenizer.applyChatTemplate(conversation, { addGenerationPrompt, tools, variables: options.chatTemplateVariables }),
      location,
    );

  const fullText = render(messages, false);
  const inputIds = tokenizer.encodeChat(fullText);
  if (!options.maskPrompt) {
    return { inputIds, targetMask: maskFrom(inputIds.length, 1), format, lineNumber: location.lineNumber };
  }

  const last = messages[messages.length - 1]!;
  if (last.role !== 'assistant') {
    throw recordError(
      'DATASET_FINAL_ASSISTANT_MISSING',
      location,
      `ends with a "${last.role}" message; with maskPrompt the last message must be the assistant reply to train on`,
    );
  }

  const promptText = render(messages.slice(0, -1), true);
  if (!fullText.startsWith(promptText)) {
    throw recordError(
      'DATASET_PROMPT_BOUNDARY_UNDEFINED',
      location,
      'renders, without its last message and with add_generation_prompt, to text that is not a prefix of the full ' +
        'conversation, so the start of the reply is undefined; set maskPrompt to false or use a template whose ' +
        'generation prompt matches the start of an assistant turn',
    );
  }
  const boundary = sharedPrefixLength(tokenizer.encodeChat(promptText), inputIds);
  return { inputIds, targetMask: maskFrom(inputIds.length, boundary), format, lineNumber: location.lineNumber };
}

function renderOrThrow(render: () => string, location: RecordLocation): string {
  try {
    return render();
  } catch (error) {
    if (NestedLearningError.isInstance(error) && error.code === 'CHAT_TEMPLATE_RENDER_FAILED') {
      throw recordError('DATASET_TEMPLATE_RENDER_FAILED', location, `failed to render: ${error.message}`, error);
    }
    throw error;
  }
}

/** Number of leading positions where the two id lists are equal. */
export function sharedPrefixLength(a: readonly number[], b: readonly number[]): number {
  const limit = Math.min(a.length, b.length);
  let length = 0;
  while (length < limit && a[length] === b[length]) length += 1;
  return length;
}

/** Builds a mask of `length` entries that is 1 from `firstTarget` on; token 0 is never a target. */
function maskFrom(length: number, firstTarget: number): number[] {
  const start = Math.max(1, firstTarget);
  return Array.from({ length }, (_, index) => (index >= start ? 1 : 0));
}

function withEos(ids: number[], eosTokenId: number): number[] {
  return ids[ids.length - 1] === eosTokenId ? ids : [...ids, eosTokenId];
}

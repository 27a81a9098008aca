/**
 * Tokenizers loaded from a Hugging Face model folder (`tokenizer.json` and
 * `tokenizer_config.json`), encoded with `@huggingface/tokenizers` and with chat templates
 * rendered by `@huggingface/jinja`.
 */

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { FileFormatError } from '../errors.js';
import {
  type ChatMessage,
  type ChatTemplateOptions,
  type CompiledChatTemplate,
  compileChatTemplate,
  renderChatTemplate,
  selectChatTemplate,
  type TemplateSpecialTokens,
} from './chat-template.js';

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Applies the `tokenizer.json` post-processor and the `add_bos_token` setting. A text that
   * already starts with the BOS token keeps that one BOS and gets no second one.
   * @default true
   */
  addSpecialTokens?: boolean;
}

/** Options of {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Leaves out special tokens (`<|im_end|>`, `</s>`). @default false */
  skipSpecialTokens?: boolean;
}

/** Options of {@link Tokenizer.applyChatTemplate}. */
export interface ApplyChatTemplateOptions extends ChatTemplateOptions {
  /** Returns token ids instead of text. @default false */
  tokenize?: boolean;
}

/** A text tokenizer with the special tokens and chat template of one model. */
export interface Tokenizer {
  /** Encodes text to token ids. */
  encode(text: string, options?: EncodeOptions): number[];
  /** Decodes token ids to text; an empty list gives an empty string. */
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** Renders a conversation with the chat template, as ids when `tokenize` is true. */
  applyChatTemplate(messages: readonly ChatMessage[], options: ApplyChatTemplateOptions & { tokenize: true }): number[];
  /** Renders a conversation with the chat template as text. */
  applyChatTemplate(messages: readonly ChatMessage[], options?: ApplyChatTemplateOptions & { tokenize?: false }): string;
  /** Renders a conversation with the chat template, as ids when `tokenize` is true, else as text. */
  applyChatTemplate(messages: readonly ChatMessage[], options?: ApplyChatTemplateOptions): string | number[];
  /**
   * Encodes text rendered by the chat template: no post-processor tokens are added, and a BOS is
   * prepended only when `addBosToken` is set and the text does not already start with BOS.
   */
  encodeChat(text: string): number[];
  /** Id of a token string, or `undefined` when it is not in the vocabulary. */
  tokenToId(token: string): number | undefined;
  /** Token string of an id, or `undefined` when the id is not in the vocabulary. */
  idToToken(id: number): string | undefined;

  /** BOS token text; undefined for tokenizers without one (Qwen). */
  readonly bosToken: string | undefined;
  readonly bosTokenId: number | undefined;
  readonly eosToken: string;
  readonly eosTokenId: number;
  /** Padding token text; the EOS token when `tokenizer_config.json` sets no `pad_token`. */
  readonly padToken: string;
  readonly padTokenId: number;
  /** Whether `encode` with special tokens starts the ids with BOS. */
  readonly addBosToken: boolean;
  /** Largest token id plus one, added tokens included. The model's embedding may have more rows. */
  readonly vocabSize: number;
  readonly hasChatTemplate: boolean;
}

/** Options of {@link createTokenizer}. */
export interface CreateTokenizerOptions {
  /** Chat template text that replaces the one in the config. */
  chatTemplate?: string;
  /** Names used in error messages for the inputs. */
  tokenizerFile?: string;
  configFile?: string;
  /** File that `chatTemplate` was read from. */
  chatTemplateFile?: string;
}

const TOKENIZER_FILE = 'tokenizer.json';
const CONFIG_FILE = 'tokenizer_config.json';
const TEMPLATE_FILE = 'chat_template.jinja';

/**
 * Loads the tokenizer of a Hugging Face model folder.
 *
 * Reads `tokenizer.json` and `tokenizer_config.json` (both required). The chat template is the
 * `chat_template` of `tokenizer_config.json`, or else the contents of `chat_template.jinja` in the
 * same folder, where newer `transformers` versions save it.
 *
 * Throws `FileFormatError` with codes `TOKENIZER_FILE_NOT_FOUND`, `TOKENIZER_JSON_INVALID`,
 * `TOKENIZER_CONFIG_INVALID`, `TOKENIZER_UNSUPPORTED`, `TOKENIZER_EOS_MISSING`,
 * `TOKENIZER_SPECIAL_TOKEN_UNKNOWN` or `CHAT_TEMPLATE_INVALID`; each message names the file.
 */
export async function loadTokenizer(folder: string): Promise<Tokenizer> {
  const tokenizerFile = join(folder, TOKENIZER_FILE);
  const configFile = join(folder, CONFIG_FILE);
  const tokenizerJson = await readJsonFile(tokenizerFile, 'TOKENIZER_JSON_INVALID');
  const config = await readJsonFile(configFile, 'TOKENIZER_CONFIG_INVALID');

  let chatTemplate: string | undefined;
  if (isRecord(config) && (config.chat_template === undefined || config.chat_template === null)) {
    chatTemplate = await readOptionalText(join(folder, TEMPLATE_FILE));
  }
  return createTokenizer(tokenizerJson, config, {
    chatTemplate,
    tokenizerFile,
    configFile,
    chatTemplateFile: join(folder, TEMPLATE_FILE),
  });
}

/**
 * Builds a tokenizer from the parsed contents of `tokenizer.json` and `tokenizer_config.json`.
 *
 * Special tokens come from `bos_token`, `eos_token`, `pad_token` and `unk_token` of the config,
 * each a string or a `{ content }` object. `eos_token` is required. `pad_token` falls back to the
 * EOS token, so padding and EOS share an id for many models. Loss masks therefore never infer
 * targets from the padding id. `add_bos_token`, when the config sets it, decides whether encoding
 * starts with BOS; otherwise the `tokenizer.json` post-processor decides.
 */
export function createTokenizer(tokenizerJson: unknown, config: unknown, options: CreateTokenizerOptions = {}): Tokenizer {
  const tokenizerFile = options.tokenizerFile ?? TOKENIZER_FILE;
  const configFile = options.configFile ?? CONFIG_FILE;

  if (!isRecord(tokenizerJson) || !isRecord(tokenizerJson.model)) {
    throw new FileFormatError('TOKENIZER_JSON_INVALID', `Invalid ${tokenizerFile}: expected an object with a "model" object.`, {
      details: { file: tokenizerFile },
    });
  }
  if (!isRecord(config)) {
    throw new FileFormatError('TOKENIZER_CONFIG_INVALID', `Invalid ${configFile}: expected a JSON object.`, {
      details: { file: configFile },
    });
  }

  const special = readSpecialTokens(config, configFile);
  const libraryConfig = { ...config, ...special.asStrings, additional_special_tokens: stringList(config.additional_special_tokens) };

  let inner: HfTokenizer;
  try {
    const addedTokens = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
    inner = new HfTokenizer({ ...tokenizerJson, added_tokens: addedTokens }, libraryConfig);
  } catch (error) {
    throw new FileFormatError(
      'TOKENIZER_UNSUPPORTED',
      `Failed to build the tokenizer from ${tokenizerFile}: ${(error as Error).message}. ` +
        'Supported models are BPE, WordPiece, Unigram and Legacy.',
      { cause: error, details: { file: tokenizerFile } },
    );
  }

  const templateFile = options.chatTemplate === undefined ? configFile : (options.chatTemplateFile ?? 'chatTemplate option');
  const templateSource = options.chatTemplate ?? selectChatTemplate(config.chat_template, configFile);
  const chatTemplate = templateSource === undefined ? undefined : compileChatTemplate(templateSource, templateFile);
  const toolTemplateSource =
    options.chatTemplate === undefined ? selectChatTemplate(config.chat_template, configFile, { tools: true }) : undefined;
  const toolTemplate =
    toolTemplateSource !== undefined && toolTemplateSource !== templateSource
      ? compileChatTemplate(toolTemplateSource, configFile)
      : chatTemplate;

  return new LoadedTokenizer(inner, special, configFile, config.add_bos_token, chatTemplate, toolTemplate);
}

interface SpecialTokens {
  bos?: string;
  eos?: string;
  pad?: string;
  unk?: string;
  /** The same tokens as plain strings, in the config's key names, for `@huggingface/tokenizers`. */
  asStrings: Record<string, string>;
}

class LoadedTokenizer implements Tokenizer {
  readonly bosToken: string | undefined;
  readonly bosTokenId: number | undefined;
  readonly eosToken: string;
  readonly eosTokenId: number;
  readonly padToken: string;
  readonly padTokenId: number;
  readonly addBosToken: boolean;
  readonly vocabSize: number;
  readonly hasChatTemplate: boolean;

  /** Whether the `tokenizer.json` post-processor prepends BOS when special tokens are added. */
  private readonly processorAddsBos: boolean;
  private readonly specialIds: Set<number>;

  constructor(
    private readonly inner: HfTokenizer,
    special: SpecialTokens,
    private readonly configFile: string,
    addBosSetting: unknown,
    private readonly chatTemplate: CompiledChatTemplate | undefined,
    private readonly toolTemplate: CompiledChatTemplate | undefined,
  ) {
    let maxId = -1;
    for (const id of inner.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    if (special.eos === undefined) {
      throw new FileFormatError(
        'TOKENIZER_EOS_MISSING',
        `${configFile} sets no eos_token; add the model's end-of-sequence token as "eos_token".`,
        { details: { file: configFile } },
      );
    }
    this.eosToken = special.eos;
    this.eosTokenId = this.requireId(special.eos, 'eos_token');
    this.bosToken = special.bos;
    this.bosTokenId = special.bos === undefined ? undefined : this.requireId(special.bos, 'bos_token');
    this.padToken = special.pad ?? special.eos;
    this.padTokenId = this.requireId(this.padToken, special.pad === undefined ? 'eos_token' : 'pad_token');

    const emptyWithSpecial = inner.encode('', { add_special_tokens: true }).ids;
    this.processorAddsBos = this.bosTokenId !== undefined && emptyWithSpecial[0] === this.bosTokenId;
    this.addBosToken = this.bosTokenId !== undefined && (typeof addBosSetting === 'boolean' ? addBosSetting : this.processorAddsBos);
    this.hasChatTemplate = chatTemplate !== undefined;

    this.specialIds = new Set(
      [...inner.get_added_tokens_decoder().values()].filter((token) => token.special).map((token) => token.id),
    );
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const addSpecialTokens = options.addSpecialTokens ?? true;
    const ids = this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    if (!addSpecialTokens || this.bosTokenId === undefined) return ids;

    // Replace the post-processor's BOS decision by add_bos_token. The text's own leading BOS, if
    // any, follows the one the post-processor added, so dropping the added one removes doubles.
    const body = this.processorAddsBos ? ids.slice(1) : ids;
    return this.addBosToken && body[0] !== this.bosTokenId ? [this.bosTokenId, ...body] : body;
  }

  encodeChat(text: string): number[] {
    const ids = this.inner.encode(text, { add_special_tokens: false }).ids;
    if (this.addBosToken && this.bosTokenId !== undefined && ids[0] !== this.bosTokenId) return [this.bosTokenId, ...ids];
    return ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const decodedIds = options.skipSpecialTokens === true ? ids.filter((id) => !this.specialIds.has(id)) : [...ids];
    if (decodedIds.length === 0) return '';
    return this.inner.decode(decodedIds, { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  applyChatTemplate(messages: readonly ChatMessage[], options: ApplyChatTemplateOptions & { tokenize: true }): number[];
  applyChatTemplate(messages: readonly ChatMessage[], options?: ApplyChatTemplateOptions & { tokenize?: false }): string;
  applyChatTemplate(messages: readonly ChatMessage[], options?: ApplyChatTemplateOptions): string | number[];
  applyChatTemplate(messages: readonly ChatMessage[], options: ApplyChatTemplateOptions = {}): string | number[] {
    const hasTools = options.tools !== undefined && options.tools.length > 0;
    const template = hasTools ? this.toolTemplate : this.chatTemplate;
    if (template === undefined) {
      throw new FileFormatError(
        'CHAT_TEMPLATE_MISSING',
        `${this.configFile} has no chat_template; use a tokenizer folder with a chat template or text-format data.`,
        { details: { file: this.configFile } },
      );
    }
    const text = renderChatTemplate(template, messages, this.templateTokens(), options);
    return options.tokenize === true ? this.encodeChat(text) : text;
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  private templateTokens(): TemplateSpecialTokens {
    return { bosToken: this.bosToken, eosToken: this.eosToken, padToken: this.padToken };
  }

  private requireId(token: string, field: string): number {
    const id = this.inner.token_to_id(token);
    if (id === undefined) {
      throw new FileFormatError(
        'TOKENIZER_SPECIAL_TOKEN_UNKNOWN',
        `${field} ${JSON.stringify(token)} in ${this.configFile} is not in the tokenizer vocabulary; ` +
          'check that tokenizer.json and tokenizer_config.json come from the same model.',
        { details: { file: this.configFile, field, token } },
      );
    }
    return id;
  }
}

function readSpecialTokens(config: Record<string, unknown>, configFile: string): SpecialTokens {
  const special: SpecialTokens = { asStrings: {} };
  const fields = [
    ['bos_token', 'bos'],
    ['eos_token', 'eos'],
    ['pad_token', 'pad'],
    ['unk_token', 'unk'],
  ] as const;
  for (const [field, key] of fields) {
    const token = tokenContent(config[field], field, configFile);
    if (token === undefined) continue;
    special[key] = token;
    special.asStrings[field] = token;
  }
  return special;
}

/** Reads a special token written as a string or as an `AddedToken` object with `content`. */
function tokenContent(value: unknown, field: string, configFile: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (isRecord(value) && typeof value.content === 'string') return value.content;
  throw new FileFormatError(
    'TOKENIZER_CONFIG_INVALID',
    `Invalid ${field} in ${configFile}: expected a string or an object with a string "content".`,
    { details: { file: configFile, field } },
  );
}

function stringList(value: unknown): string[] {
  if (!Array.isArray(value)) return [];
  return value.flatMap((entry) => {
    if (typeof entry === 'string') return [entry];
    if (isRecord(entry) && typeof entry.content === 'string') return [entry.content];
    return [];
  });
}

async function readJsonFile(file: string, invalidCode: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new FileFormatError('TOKENIZER_FILE_NOT_FOUND', `Tokenizer file ${file} not found or not readable; check the model folder.`, {
      cause: error,
      details: { file },
    });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new FileFormatError(invalidCode, `Invalid JSON in ${file}: ${(error as Error).message}.`, {
      cause: error,
      details: { file },
    });
  }
}

async function readOptionalText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FileFormatError('TOKENIZER_FILE_NOT_FOUND', `Failed to read ${file}: ${(error as Error).message}.`, {
      cause: error,
      details: { file },
    });
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

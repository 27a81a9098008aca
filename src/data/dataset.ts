/**
 * Loading JSONL datasets into token ids and target masks, with counts of what was kept and why
 * the rest was not.
 */

import { ArgumentError } from '../errors.js';
import { type InvalidLinePolicy, type JsonlLine, readJsonlLines } from '../io/jsonl.js';
import { type DatasetFormat, type DatasetRecord, parseRecord, type RecordFields, recordError } from './records.js';
import { type DatasetSample, encodeRecord } from './samples.js';
import type { Tokenizer } from './tokenizer.js';

/** End of a sample that is cut when the sample is longer than `maxSeqLength`. */
export type TruncationSide = 'right' | 'left';

/** Options of {@link loadDataset}. */
export interface LoadDatasetOptions {
  tokenizer: Tokenizer;
  /**
   * Maximum sample length in tokens. Longer samples are cut at the `truncationSide` end and counted.
   * @default 2048
   */
  maxSeqLength?: number;
  /**
   * Counts only completion tokens (`completions`) or the last assistant message (`chat`) in the
   * loss. `text` samples are unaffected.
   * @default false
   */
  maskPrompt?: boolean;
  /** Prompt field of the `completions` format. @default 'prompt' */
  promptField?: string;
  /** Completion field of the `completions` format. @default 'completion' */
  completionField?: string;
  /** `error` stops at the first line that is not a JSON object; `skip` leaves it out and counts it. @default 'error' */
  onInvalidLine?: InvalidLinePolicy;
  /**
   * `right` keeps the first `maxSeqLength` tokens, so the end of a long completion is lost.
   * `left` keeps the last `maxSeqLength` tokens, so the BOS token and the start of the prompt are
   * lost but the completion and its EOS are kept.
   * @default 'right'
   */
  truncationSide?: TruncationSide;
  /** Extra chat template variables, for example `{ enable_thinking: false }`. */
  chatTemplateVariables?: Record<string, unknown>;
}

/** Counts of one dataset load. */
export interface DatasetStats {
  /** Physical lines of the file, blank and invalid ones included. */
  lines: number;
  /** Samples kept. */
  samples: number;
  /** Invalid lines skipped because `onInvalidLine` is `skip`. */
  skippedInvalid: number;
  /** Kept samples that were cut to `maxSeqLength`. */
  truncated: number;
  /** Samples dropped because no target token was left (for example a prompt longer than `maxSeqLength`). */
  skippedNoTargets: number;
  /** Tokens of the kept samples. */
  tokens: number;
  /** Target tokens of the kept samples, the positions that count in the loss. */
  targetTokens: number;
  /** Format of the records; undefined when the file has none. */
  format: DatasetFormat | undefined;
}

/** A tokenised dataset. */
export interface Dataset {
  /** The file, or the `source` name given to {@link datasetFromRecords}. */
  source: string;
  samples: DatasetSample[];
  stats: DatasetStats;
  /** The tokenizer's padding id, the default for batching. */
  padTokenId: number;
}

/**
 * Reads a JSONL file and tokenises every record.
 *
 * All records must have the same format; the first record that differs raises
 * `FileFormatError` with code `DATASET_FORMAT_MIXED` and its line number. Record errors
 * (`DATASET_FORMAT_UNKNOWN`, `DATASET_FIELD_INVALID`, `DATASET_ROLE_UNKNOWN`,
 * `DATASET_CONVERSATION_EMPTY`, `DATASET_CHAT_TEMPLATE_MISSING`, `DATASET_FINAL_ASSISTANT_MISSING`,
 * `DATASET_PROMPT_BOUNDARY_UNDEFINED`, `DATASET_TEMPLATE_RENDER_FAILED`) are raised for any
 * `onInvalidLine` value, because they are mistakes in valid JSON rather than damaged lines.
 */
export async function loadDataset(path: string, options: LoadDatasetOptions): Promise<Dataset> {
  const settings = resolveOptions(options);
  const reader = readJsonlLines(path, { onInvalidLine: settings.onInvalidLine, objectsOnly: true });
  const builder = new DatasetBuilder(path, settings);
  for await (const line of reader) builder.add(line);
  return builder.finish({ lines: reader.stats.lines, skippedInvalid: reader.stats.skippedInvalid });
}

/**
 * Tokenises records that are already in memory, with the rules of {@link loadDataset}. Record i
 * is called line i + 1 in error messages.
 */
export function datasetFromRecords(records: readonly unknown[], options: LoadDatasetOptions & { source?: string }): Dataset {
  const settings = resolveOptions(options);
  const builder = new DatasetBuilder(options.source ?? 'records', settings);
  records.forEach((record, index) => builder.add({ lineNumber: index + 1, value: record }));
  return builder.finish({ lines: records.length, skippedInvalid: 0 });
}

interface ResolvedOptions extends RecordFields {
  tokenizer: Tokenizer;
  maxSeqLength: number;
  maskPrompt: boolean;
  onInvalidLine: InvalidLinePolicy;
  truncationSide: TruncationSide;
  chatTemplateVariables: Record<string, unknown> | undefined;
}

class DatasetBuilder {
  private readonly samples: DatasetSample[] = [];
  private format: DatasetFormat | undefined;
  private firstLineNumber = 0;
  private truncated = 0;
  private skippedNoTargets = 0;

  constructor(
    private readonly source: string,
    private readonly options: ResolvedOptions,
  ) {}

  add(line: JsonlLine): void {
    const location = { path: this.source, lineNumber: line.lineNumber };
    const record = parseRecord(line.value, this.options, location);
    this.checkFormat(record, line.lineNumber);

    const encoded = encodeRecord(limitTextLength(record, this.options), this.options, location);
    const sample = truncate(encoded, this.options.maxSeqLength, this.options.truncationSide);
    if (sample !== encoded) this.truncated += 1;

    if (countTargets(sample) === 0) {
      this.skippedNoTargets += 1;
      if (sample !== encoded) this.truncated -= 1;
      return;
    }
    this.samples.push(sample);
  }

  finish(counts: { lines: number; skippedInvalid: number }): Dataset {
    let tokens = 0;
    let targetTokens = 0;
    for (const sample of this.samples) {
      tokens += sample.inputIds.length;
      targetTokens += countTargets(sample);
    }
    return {
      source: this.source,
      samples: this.samples,
      padTokenId: this.options.tokenizer.padTokenId,
      stats: {
        lines: counts.lines,
        samples: this.samples.length,
        skippedInvalid: counts.skippedInvalid,
        truncated: this.truncated,
        skippedNoTargets: this.skippedNoTargets,
        tokens,
        targetTokens,
        format: this.format,
      },
    };
  }

  private checkFormat(record: DatasetRecord, lineNumber: number): void {
    if (this.format === undefined) {
      this.format = record.format;
      this.firstLineNumber = lineNumber;
      return;
    }
    if (record.format !== this.format) {
      throw recordError(
        'DATASET_FORMAT_MIXED',
        { path: this.source, lineNumber },
        `is in ${record.format} format, but the file starts in ${this.format} format (line ${this.firstLineNumber}); ` +
          'a dataset file holds one format, so split or convert the records',
      );
    }
  }
}

/** Maximum token string length of each tokenizer, in UTF-16 code units. */
const maxTokenLengths = new WeakMap<Tokenizer, number>();

/**
 * Cuts a `text` record, or a `completions` record encoded without a chat template, that is far
 * longer than `maxSeqLength` tokens can cover. A huge line (tens of MB) then costs encoding time
 * and memory in proportion to `maxSeqLength` rather than to its length. Only right
 * truncation is affected, which keeps the first `maxSeqLength` tokens. Those tokens cover at most
 * `maxSeqLength` times the longest token string of the vocabulary, and the cut is made at twice
 * that plus 4096 characters. A prompt longer than the cut leaves an empty completion, so with
 * maskPrompt the sample still has no target and is skipped, as it was uncut.
 *
 * Chat records are not cut, because a template may rewrite a message's content as a whole (for
 * example drop the reasoning before a closing think tag) and a cut could change what it renders.
 *
 * NOTE: a cut can change how the word it falls in is split. The first `maxSeqLength` tokens end
 * at least `maxSeqLength` token lengths earlier, so they change only if one pretokenized word
 * spans that whole distance, or if a normalizer deletes that many characters.
 */
function limitTextLength(record: DatasetRecord, options: ResolvedOptions): DatasetRecord {
  if (options.truncationSide !== 'right') {
    return record;
  }
  const limit = 2 * options.maxSeqLength * maxTokenLength(options.tokenizer) + 4096;

  if (record.format === 'text' && record.text.length > limit) {
    return { ...record, text: cutText(record.text, limit) };
  }
  if (record.format === 'completions' && !options.tokenizer.hasChatTemplate && record.prompt.length + record.completion.length > limit) {
    const prompt = cutText(record.prompt, limit);
    return { ...record, prompt, completion: cutText(record.completion, limit - prompt.length) };
  }
  return record;
}

/** Returns the first `limit` UTF-16 code units of `text`, one fewer when the last would be half of a surrogate pair. */
function cutText(text: string, limit: number): string {
  if (text.length <= limit) {
    return text;
  }
  const code = text.charCodeAt(limit - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? limit - 1 : limit);
}

function maxTokenLength(tokenizer: Tokenizer): number {
  let length = maxTokenLengths.get(tokenizer);
  if (length === undefined) {
    length = 1;
    for (let id = 0; id < tokenizer.vocabSize; id += 1) {
      length = Math.max(length, tokenizer.idToToken(id)?.length ?? 0);
    }
    maxTokenLengths.set(tokenizer, length);
  }
  return length;
}

/** Cuts a sample to `maxSeqLength` tokens; returns the same object when it already fits. */
function truncate(sample: DatasetSample, maxSeqLength: number, side: TruncationSide): DatasetSample {
  const length = sample.inputIds.length;
  if (length <= maxSeqLength) return sample;

  const start = side === 'right' ? 0 : length - maxSeqLength;
  const targetMask = sample.targetMask.slice(start, start + maxSeqLength);
  // The new first token has no earlier position, so it cannot be a target.
  targetMask[0] = 0;
  return { ...sample, inputIds: sample.inputIds.slice(start, start + maxSeqLength), targetMask };
}

function countTargets(sample: DatasetSample): number {
  let count = 0;
  for (const flag of sample.targetMask) count += flag;
  return count;
}

function resolveOptions(options: LoadDatasetOptions): ResolvedOptions {
  if (options.tokenizer === undefined) {
    throw new ArgumentError('DATASET_OPTION_INVALID', 'loadDataset needs a tokenizer; pass one from loadTokenizer(folder).');
  }
  const maxSeqLength = options.maxSeqLength ?? 2048;
  if (!Number.isInteger(maxSeqLength) || maxSeqLength < 2) {
    throw new ArgumentError(
      'DATASET_OPTION_INVALID',
      `Invalid maxSeqLength ${String(maxSeqLength)}; expected an integer of at least 2, ` +
        'because a sample needs one token to predict from and one to predict.',
      { details: { maxSeqLength } },
    );
  }
  const truncationSide = options.truncationSide ?? 'right';
  if (truncationSide !== 'right' && truncationSide !== 'left') {
    throw new ArgumentError('DATASET_OPTION_INVALID', `Invalid truncationSide ${JSON.stringify(truncationSide)}; use 'right' or 'left'.`, {
      details: { truncationSide },
    });
  }
  const promptField = options.promptField ?? 'prompt';
  const completionField = options.completionField ?? 'completion';
  if (promptField === completionField || promptField === '' || completionField === '') {
    throw new ArgumentError(
      'DATASET_OPTION_INVALID',
      `Invalid promptField ${JSON.stringify(promptField)} and completionField ${JSON.stringify(completionField)}; ` +
        'they must be two different non-empty names.',
      { details: { promptField, completionField } },
    );
  }
  return {
    tokenizer: options.tokenizer,
    maxSeqLength,
    maskPrompt: options.maskPrompt ?? false,
    promptField,
    completionField,
    onInvalidLine: options.onInvalidLine ?? 'error',
    truncationSide,
    chatTemplateVariables: options.chatTemplateVariables,
  };
}

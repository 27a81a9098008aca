import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  createTokenizer,
  datasetFromRecords,
  FileFormatError,
  loadDataset,
  type LoadDatasetOptions,
  loadTokenizer,
  makeBatch,
  type Tokenizer,
} from '../src/index.js';
import { LLAMA_STYLE_FOLDER, QWEN3_FOLDER, TOKENIZER_FIXTURES } from './fixtures/tokenizer/paths.js';

// Ids of the hand-made Llama-style tokenizer: 0 = <s> (BOS), 1 = </s> (EOS, and padding because
// the config sets no pad_token), byte b = b + 2, and merges 260 = "Ġthe", 262 = "the",
// 263 = "Ġc", 265 = "Ġcat", 267 = "Ġin", 269 = "Ġhat".
const BOS = 0;
const EOS = 1;
const THE = 262;
const SPACE_THE = 260;
const SPACE_C = 263;
const SPACE_CAT = 265;
const SPACE_IN = 267;
const SPACE_HAT = 269;

interface ChatFixture {
  samples: { name: string; record: Record<string, unknown>; inputIds: number[]; targetMask: number[] }[];
}

const chatFixture = JSON.parse(readFileSync(join(TOKENIZER_FIXTURES, 'qwen3-chat-expected.json'), 'utf8')) as ChatFixture;
const scratch = mkdtempSync(join(tmpdir(), 'nl-dataset-'));
let llama: Tokenizer;
let llamaPlain: Tokenizer;
let qwen: Tokenizer;
let qwenPadEos: Tokenizer;

beforeAll(async () => {
  llama = await loadTokenizer(LLAMA_STYLE_FOLDER);
  const llamaJson = JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer.json'), 'utf8')) as unknown;
  const llamaConfig = JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  llamaPlain = createTokenizer(llamaJson, { ...llamaConfig, chat_template: undefined });

  const qwenJson = JSON.parse(readFileSync(join(QWEN3_FOLDER, 'tokenizer.json'), 'utf8')) as unknown;
  const qwenConfig = JSON.parse(readFileSync(join(QWEN3_FOLDER, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  qwen = createTokenizer(qwenJson, qwenConfig);
  qwenPadEos = createTokenizer(qwenJson, { ...qwenConfig, pad_token: '<|im_end|>' });
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let fileCounter = 0;

/** Writes a JSONL file: objects are serialised, strings are written as raw lines. */
function writeJsonl(lines: readonly (string | object)[]): string {
  fileCounter += 1;
  const path = join(scratch, `data-${fileCounter}.jsonl`);
  writeFileSync(path, `${lines.map((line) => (typeof line === 'string' ? line : JSON.stringify(line))).join('\n')}\n`);
  return path;
}

async function loadError(lines: readonly (string | object)[], options: LoadDatasetOptions): Promise<FileFormatError> {
  const path = writeJsonl(lines);
  const error = await loadDataset(path, options).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(FileFormatError);
  expect((error as Error).message).toContain(path);
  return error as FileFormatError;
}

describe('text format', () => {
  it('appends EOS and targets every later token', async () => {
    const dataset = await loadDataset(writeJsonl([{ text: 'the cat' }, { text: 'the cat</s>' }]), { tokenizer: llama });
    expect(dataset.samples[0]).toMatchObject({ inputIds: [BOS, THE, SPACE_CAT, EOS], targetMask: [0, 1, 1, 1], format: 'text' });
    // EOS already present: not appended a second time.
    expect(dataset.samples[1]!.inputIds).toEqual([BOS, THE, SPACE_CAT, EOS]);
    expect(dataset.stats).toEqual({
      lines: 2,
      samples: 2,
      skippedInvalid: 0,
      truncated: 0,
      skippedNoTargets: 0,
      tokens: 8,
      targetTokens: 6,
      format: 'text',
    });
  });

  it('counts the EOS target when padding equals EOS', async () => {
    const dataset = await loadDataset(writeJsonl([{ text: 'the cat' }, { text: 'the cat in the hat' }]), { tokenizer: llama });
    expect(llama.padTokenId).toBe(EOS);
    const batch = makeBatch(dataset.samples, { padTokenId: llama.padTokenId });

    // Row 0 is [BOS, the, Ġcat, EOS] padded with EOS to 7. Positions 0..2 predict the, Ġcat, EOS.
    expect(Array.from(batch.inputIds.slice(0, 7))).toEqual([BOS, THE, SPACE_CAT, EOS, EOS, EOS, EOS]);
    expect(Array.from(batch.labels.slice(0, 3))).toEqual([THE, SPACE_CAT, EOS]);
    expect(Array.from(batch.lossMask.slice(0, 7))).toEqual([1, 1, 1, 0, 0, 0, 0]);
    // Row 1 has no padding: six predictions, the last one the EOS.
    expect(Array.from(batch.labels.slice(7, 13))).toEqual([THE, SPACE_CAT, SPACE_IN, SPACE_THE, SPACE_HAT, EOS]);
    expect(Array.from(batch.lossMask.slice(7, 14))).toEqual([1, 1, 1, 1, 1, 1, 0]);
    expect(batch.tokenCount).toBe(9);
  });

  it('keeps a raw U+2028 inside the text', async () => {
    const dataset = await loadDataset(join(import.meta.dirname, 'fixtures', 'data', 'bom-crlf-u2028.jsonl'), { tokenizer: llama });
    expect(dataset.stats.samples).toBe(3);
    expect(dataset.stats.lines).toBe(5);
    expect(llama.decode(dataset.samples[1]!.inputIds, { skipSpecialTokens: true })).toBe('b\u2028c');
  });
});

describe('completions format', () => {
  it('masks the prompt without a chat template', async () => {
    const path = writeJsonl([{ prompt: 'the cat', completion: ' in the hat' }]);
    const dataset = await loadDataset(path, { tokenizer: llamaPlain, maskPrompt: true });
    const sample = dataset.samples[0]!;
    // Prompt ids [BOS, the, Ġcat]; the completion and the appended EOS are targets.
    expect(sample.inputIds).toEqual([BOS, THE, SPACE_CAT, SPACE_IN, SPACE_THE, SPACE_HAT, EOS]);
    expect(sample.targetMask).toEqual([0, 0, 0, 1, 1, 1, 1]);
    expect(sample.format).toBe('completions');

    // A longer second row makes row 0 end in padding, and the padding id is the EOS id.
    const longer = {
      inputIds: [BOS, THE, SPACE_CAT, SPACE_IN, SPACE_THE, SPACE_HAT, SPACE_CAT, SPACE_CAT, EOS],
      targetMask: [0, 0, 0, 1, 1, 1, 1, 1, 1],
    };
    expect(llamaPlain.padTokenId).toBe(EOS);
    const batch = makeBatch([sample, longer], { padTokenId: llamaPlain.padTokenId });
    // Position t predicts token t + 1, so positions 2..5 of row 0 count: Ġin, Ġthe, Ġhat, EOS.
    expect(Array.from(batch.labels.slice(0, 9))).toEqual([THE, SPACE_CAT, SPACE_IN, SPACE_THE, SPACE_HAT, EOS, EOS, EOS, EOS]);
    expect(Array.from(batch.lossMask.slice(0, 9))).toEqual([0, 0, 1, 1, 1, 1, 0, 0, 0]);
    expect(batch.tokenCount).toBe(4 + 6);
  });

  it('targets a token that spans the boundary', async () => {
    // "the c" encodes to [BOS, the, Ġc], but "the cat" to [BOS, the, Ġcat]: the shared prefix is 2
    // ids, so Ġcat, which contains the prompt's " c", is the first target.
    const dataset = await loadDataset(writeJsonl([{ prompt: 'the c', completion: 'at' }]), { tokenizer: llamaPlain, maskPrompt: true });
    expect(llamaPlain.encode('the c')).toEqual([BOS, THE, SPACE_C]);
    expect(dataset.samples[0]!.inputIds).toEqual([BOS, THE, SPACE_CAT, EOS]);
    expect(dataset.samples[0]!.targetMask).toEqual([0, 0, 1, 1]);
  });

  it('targets everything without maskPrompt', async () => {
    const dataset = await loadDataset(writeJsonl([{ prompt: 'the cat', completion: ' in the hat' }]), { tokenizer: llamaPlain });
    expect(dataset.samples[0]!.targetMask).toEqual([0, 1, 1, 1, 1, 1, 1]);
  });

  it('reads configured field names', async () => {
    const path = writeJsonl([{ question: 'the cat', answer: ' in the hat' }]);
    const dataset = await loadDataset(path, {
      tokenizer: llamaPlain,
      maskPrompt: true,
      promptField: 'question',
      completionField: 'answer',
    });
    expect(dataset.samples[0]!.targetMask).toEqual([0, 0, 0, 1, 1, 1, 1]);
  });

  it('renders a chat turn with a template', async () => {
    const dataset = await loadDataset(writeJsonl([{ prompt: 'the cat', completion: 'the hat' }]), { tokenizer: llama, maskPrompt: true });
    const sample = dataset.samples[0]!;
    // "<s>[INST] the cat [/INST] the hat</s>": the reply " the hat" and EOS are the targets.
    expect(llama.decode(sample.inputIds)).toBe('<s>[INST] the cat [/INST] the hat</s>');
    expect(sample.inputIds.slice(-3)).toEqual([SPACE_THE, SPACE_HAT, EOS]);
    expect(sample.targetMask.filter((flag) => flag === 1)).toHaveLength(3);
    expect(sample.targetMask.slice(-3)).toEqual([1, 1, 1]);
    expect(sample.inputIds.filter((id) => id === BOS)).toHaveLength(1);
  });
});

describe('chat format', () => {
  it('matches the reference fixture', async () => {
    const chatRecords = chatFixture.samples.filter((sample) => 'messages' in sample.record);
    const completionRecords = chatFixture.samples.filter((sample) => 'prompt' in sample.record);
    const chat = await loadDataset(writeJsonl(chatRecords.map((sample) => sample.record)), { tokenizer: qwen, maskPrompt: true });
    const completions = await loadDataset(writeJsonl(completionRecords.map((sample) => sample.record)), {
      tokenizer: qwen,
      maskPrompt: true,
    });

    const samples = [...chat.samples, ...completions.samples];
    const expected = [...chatRecords, ...completionRecords];
    expect(samples).toHaveLength(3);
    samples.forEach((sample, index) => {
      expect(sample.inputIds).toEqual(expected[index]!.inputIds);
      expect(sample.targetMask).toEqual(expected[index]!.targetMask);
    });
  });

  it('targets the final turn and its end-of-turn token', async () => {
    const record = chatFixture.samples.find((sample) => sample.name === 'two turns')!.record;
    const dataset = datasetFromRecords([record], { tokenizer: qwenPadEos, maskPrompt: true });
    const sample = dataset.samples[0]!;
    const targets = sample.inputIds.filter((_, index) => sample.targetMask[index] === 1);
    expect(qwen.decode(targets)).toBe('<think>\n\n</think>\n\n一、二、三。<|im_end|>\n');

    // With padding equal to EOS (<|im_end|>), the <|im_end|> label still counts.
    const batch = makeBatch([sample, { inputIds: [...sample.inputIds, 1, 2, 3], targetMask: [...sample.targetMask, 0, 0, 0] }], {
      padTokenId: qwenPadEos.padTokenId,
    });
    // The sample ends with <|im_end|> and "\n"; position endOfTurn - 1 predicts <|im_end|>.
    const length = sample.inputIds.length;
    const endOfTurn = sample.inputIds.lastIndexOf(qwenPadEos.eosTokenId);
    expect(endOfTurn).toBe(length - 2);
    expect(qwenPadEos.padTokenId).toBe(qwenPadEos.eosTokenId);
    expect(batch.labels[endOfTurn - 1]).toBe(qwenPadEos.eosTokenId);
    expect(batch.lossMask[endOfTurn - 1]).toBe(1);
    expect(batch.lossMask[length - 2]).toBe(1);
    expect(batch.lossMask[length - 1]).toBe(0);
    expect(batch.inputIds[length]).toBe(qwenPadEos.padTokenId);
    expect(Array.from(batch.lossMask.slice(length - 1, batch.seqLength)).every((flag) => flag === 0)).toBe(true);
    expect(batch.tokenCount).toBe(targets.length + targets.length);
  });

  it('targets all but the first token without maskPrompt', async () => {
    const record = chatFixture.samples[0]!.record;
    const dataset = datasetFromRecords([record], { tokenizer: qwen });
    const mask = dataset.samples[0]!.targetMask;
    expect(mask[0]).toBe(0);
    expect(mask.slice(1).every((flag) => flag === 1)).toBe(true);
  });

  it('renders tools from the record', () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];
    const dataset = datasetFromRecords(
      [
        {
          messages: [
            { role: 'user', content: 'Weather?' },
            { role: 'assistant', content: 'Sunny.' },
          ],
          tools,
        },
      ],
      { tokenizer: qwen, maskPrompt: true },
    );
    const sample = dataset.samples[0]!;
    expect(qwen.decode(sample.inputIds)).toContain('"name": "get_weather"');
    const targets = sample.inputIds.filter((_, index) => sample.targetMask[index] === 1);
    expect(qwen.decode(targets)).toBe('<think>\n\n</think>\n\nSunny.<|im_end|>\n');
  });
});

describe('dataset errors', () => {
  const chatLine = { messages: [{ role: 'user', content: 'the cat' }, { role: 'assistant', content: 'the hat' }] };

  it('names an unknown role and its line', async () => {
    const error = await loadError([chatLine, '', { messages: [{ role: 'narrator', content: 'x' }] }], { tokenizer: llama });
    expect(error.code).toBe('DATASET_ROLE_UNKNOWN');
    expect(error.details.lineNumber).toBe(3);
    expect(error.message).toContain('"narrator"');
  });

  it('rejects non-string content', async () => {
    const error = await loadError([chatLine, { messages: [{ role: 'user', content: [{ type: 'text', text: 'x' }] }] }], { tokenizer: llama });
    expect(error.code).toBe('DATASET_FIELD_INVALID');
    expect(error.details.lineNumber).toBe(2);
    expect(error.message).toContain('content of type array');
  });

  it('rejects an empty conversation', async () => {
    const error = await loadError([chatLine, { messages: [] }], { tokenizer: llama });
    expect(error.code).toBe('DATASET_CONVERSATION_EMPTY');
    expect(error.details.lineNumber).toBe(2);
  });

  it('names the first line of another format', async () => {
    const error = await loadError([{ text: 'a' }, '', { text: 'b' }, { prompt: 'c', completion: 'd' }, { messages: [] }], { tokenizer: llama });
    expect(error.code).toBe('DATASET_FORMAT_MIXED');
    expect(error.details.lineNumber).toBe(4);
    expect(error.message).toContain('completions format');
    expect(error.message).toContain('text format (line 1)');
  });

  it('rejects a record of no format', async () => {
    const error = await loadError([{ text: 'a' }, { input: 'x' }], { tokenizer: llama });
    expect(error.code).toBe('DATASET_FORMAT_UNKNOWN');
    expect(error.details.lineNumber).toBe(2);
    expect(error.message).toContain('"input"');
  });

  it('rejects a prompt without completion', async () => {
    const error = await loadError([{ prompt: 'a' }], { tokenizer: llama });
    expect(error.code).toBe('DATASET_FIELD_INVALID');
    expect(error.details.lineNumber).toBe(1);
    expect(error.message).toContain('"completion"');
  });

  it('rejects non-string text', async () => {
    const error = await loadError([{ text: 'a' }, { text: 7 }], { tokenizer: llama });
    expect(error.code).toBe('DATASET_FIELD_INVALID');
    expect(error.details.lineNumber).toBe(2);
  });

  it('rejects tools that are not a list', async () => {
    const error = await loadError([{ ...chatLine, tools: { name: 'f' } }], { tokenizer: llama });
    expect(error.code).toBe('DATASET_FIELD_INVALID');
    expect(error.message).toContain('"tools"');
  });

  it('rejects invalid JSON by default', async () => {
    const error = await loadError([{ text: 'a' }, '{"text": ', { text: 'b' }], { tokenizer: llama });
    expect(error.code).toBe('JSONL_INVALID_LINE');
    expect(error.details.lineNumber).toBe(2);
  });

  it('skips invalid lines on request', async () => {
    const path = writeJsonl([{ text: 'a' }, '{"text": ', '"just a string"', { text: 'b' }]);
    const dataset = await loadDataset(path, { tokenizer: llama, onInvalidLine: 'skip' });
    expect(dataset.stats.samples).toBe(2);
    expect(dataset.stats.skippedInvalid).toBe(2);
    expect(dataset.stats.lines).toBe(4);
  });

  it('requires a final assistant message with maskPrompt', async () => {
    const error = await loadError([{ messages: [{ role: 'user', content: 'x' }] }], { tokenizer: llama, maskPrompt: true });
    expect(error.code).toBe('DATASET_FINAL_ASSISTANT_MISSING');
    expect(error.details.lineNumber).toBe(1);
  });

  it('requires a chat template for chat records', async () => {
    const error = await loadError([chatLine], { tokenizer: llamaPlain });
    expect(error.code).toBe('DATASET_CHAT_TEMPLATE_MISSING');
  });

  it('reports a template failure with its line', async () => {
    const raising = createTokenizer(
      JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer.json'), 'utf8')),
      {
        eos_token: '</s>',
        chat_template: "{% if messages[0]['role'] != 'system' %}{{ raise_exception('System message first') }}{% endif %}",
      },
    );
    const error = await loadError([chatLine], { tokenizer: raising });
    expect(error.code).toBe('DATASET_TEMPLATE_RENDER_FAILED');
    expect(error.details.lineNumber).toBe(1);
    expect(error.message).toContain('System message first');
  });

  it('rejects a prompt rendering that is not a prefix', async () => {
    const suffixed = createTokenizer(JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer.json'), 'utf8')), {
      eos_token: '</s>',
      chat_template: "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}",
    });
    const error = await loadError([chatLine], { tokenizer: suffixed, maskPrompt: true });
    expect(error.code).toBe('DATASET_PROMPT_BOUNDARY_UNDEFINED');
    expect(error.details.lineNumber).toBe(1);
  });

  it('rejects an invalid maxSeqLength', async () => {
    await expect(loadDataset(writeJsonl([{ text: 'a' }]), { tokenizer: llama, maxSeqLength: 1 })).rejects.toMatchObject({
      code: 'DATASET_OPTION_INVALID',
    });
  });
});

describe('truncation', () => {
  const records = [{ text: 'the cat' }, { text: 'the cat in the hat' }];

  it('cuts the right end by default and counts it', () => {
    const dataset = datasetFromRecords(records, { tokenizer: llama, maxSeqLength: 4 });
    // [BOS, the, Ġcat, EOS] fits; [BOS, the, Ġcat, Ġin, Ġthe, Ġhat, EOS] loses its last three ids.
    expect(dataset.samples.map((sample) => sample.inputIds)).toEqual([
      [BOS, THE, SPACE_CAT, EOS],
      [BOS, THE, SPACE_CAT, SPACE_IN],
    ]);
    expect(dataset.stats.truncated).toBe(1);
    expect(dataset.stats.tokens).toBe(8);
  });

  it('cuts the left end on request', () => {
    const dataset = datasetFromRecords(records, { tokenizer: llama, maxSeqLength: 4, truncationSide: 'left' });
    expect(dataset.samples[1]!.inputIds).toEqual([SPACE_IN, SPACE_THE, SPACE_HAT, EOS]);
    // The new first token has nothing before it, so it is no longer a target.
    expect(dataset.samples[1]!.targetMask).toEqual([0, 1, 1, 1]);
    expect(dataset.stats.truncated).toBe(1);
  });

  it('skips a sample whose targets are all cut', () => {
    const dataset = datasetFromRecords(
      [
        { prompt: 'the cat in the hat', completion: ' the cat' },
        { prompt: 'the', completion: ' cat' },
      ],
      { tokenizer: llamaPlain, maskPrompt: true, maxSeqLength: 5 },
    );
    // The first prompt alone is [BOS, the, Ġcat, Ġin, Ġthe, Ġhat]: 6 ids, longer than 5.
    expect(dataset.stats.skippedNoTargets).toBe(1);
    expect(dataset.stats.truncated).toBe(0);
    expect(dataset.stats.samples).toBe(1);
    expect(dataset.samples[0]!.inputIds).toEqual([BOS, THE, SPACE_CAT, EOS]);
    expect(dataset.stats.targetTokens).toBe(2);
  });
});

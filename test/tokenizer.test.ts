import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createTokenizer, FileFormatError, loadTokenizer, type Tokenizer } from '../src/index.js';
import { LLAMA_STYLE_FOLDER, QWEN3_FOLDER, TOKENIZER_FIXTURES } from './fixtures/tokenizer/paths.js';

interface TextCase {
  name: string;
  text: string;
  ids: number[];
  idsWithoutSpecial: number[];
  decoded: string;
  decodedSkippingSpecial: string;
}

interface ExpectedIds {
  tokenizer?: { sha256: string };
  cases: TextCase[];
}

function readFixture(name: string): ExpectedIds {
  return JSON.parse(readFileSync(join(TOKENIZER_FIXTURES, name), 'utf8')) as ExpectedIds;
}

const qwenExpected = readFixture('qwen3-expected.json');
const llamaExpected = readFixture('llama-style-expected.json');
const scratch = mkdtempSync(join(tmpdir(), 'nl-tokenizer-'));
let qwen: Tokenizer;
let llama: Tokenizer;

beforeAll(async () => {
  qwen = await loadTokenizer(QWEN3_FOLDER);
  llama = await loadTokenizer(LLAMA_STYLE_FOLDER);
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Copies a tokenizer folder into the scratch folder and applies edits to its parsed config. */
function editedFolder(source: string, name: string, edit: (config: Record<string, unknown>) => void): string {
  const folder = join(scratch, name);
  mkdirSync(folder, { recursive: true });
  copyFileSync(join(source, 'tokenizer.json'), join(folder, 'tokenizer.json'));
  const config = JSON.parse(readFileSync(join(source, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  edit(config);
  writeFileSync(join(folder, 'tokenizer_config.json'), JSON.stringify(config));
  return folder;
}

async function loadError(folder: string): Promise<FileFormatError> {
  const error = await loadTokenizer(folder).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(FileFormatError);
  return error as FileFormatError;
}

describe('Qwen3 tokenizer', () => {
  it('reads the tokenizer.json the fixtures came from', () => {
    // The fixtures were made from this exact file; a changed package version would invalidate them.
    const digest = createHash('sha256').update(readFileSync(join(QWEN3_FOLDER, 'tokenizer.json'))).digest('hex');
    expect(digest).toBe(qwenExpected.tokenizer?.sha256);
  });

  it.each(qwenExpected.cases.map((entry) => [entry.name, entry] as const))('encodes %s like the Rust reference', (_, entry) => {
    expect(qwen.encode(entry.text)).toEqual(entry.ids);
    expect(qwen.encode(entry.text, { addSpecialTokens: false })).toEqual(entry.idsWithoutSpecial);
  });

  it.each(qwenExpected.cases.map((entry) => [entry.name, entry] as const))('decodes %s like the Rust reference', (_, entry) => {
    expect(qwen.decode(entry.ids)).toBe(entry.decoded);
    expect(qwen.decode(entry.ids, { skipSpecialTokens: true })).toBe(entry.decodedSkippingSpecial);
  });

  it('reads special tokens from tokenizer_config.json', () => {
    expect(qwen.bosToken).toBeUndefined();
    expect(qwen.bosTokenId).toBeUndefined();
    expect(qwen.eosToken).toBe('<|im_end|>');
    expect(qwen.eosTokenId).toBe(151645);
    expect(qwen.padToken).toBe('<|endoftext|>');
    expect(qwen.padTokenId).toBe(151643);
    expect(qwen.addBosToken).toBe(false);
    expect(qwen.hasChatTemplate).toBe(true);
  });

  it('counts added tokens in vocabSize', () => {
    // 151643 BPE entries (ids 0..151642) plus 26 added tokens (ids 151643..151668).
    expect(qwen.vocabSize).toBe(151669);
  });

  it('maps tokens to ids and back', () => {
    expect(qwen.tokenToId('<|im_start|>')).toBe(151644);
    expect(qwen.idToToken(151644)).toBe('<|im_start|>');
    expect(qwen.tokenToId('Hello')).toBe(9707);
    expect(qwen.tokenToId('no-such-token-anywhere')).toBeUndefined();
    expect(qwen.idToToken(10_000_000)).toBeUndefined();
  });

  it('decodes an empty list to an empty string', () => {
    expect(qwen.decode([])).toBe('');
    expect(qwen.decode([151645], { skipSpecialTokens: true })).toBe('');
  });
});

describe('Llama-style tokenizer', () => {
  it.each(llamaExpected.cases.filter((entry) => !entry.text.startsWith('<s>')).map((entry) => [entry.name, entry] as const))(
    'encodes %s like the Rust reference',
    (_, entry) => {
      expect(llama.encode(entry.text)).toEqual(entry.ids);
      expect(llama.encode(entry.text, { addSpecialTokens: false })).toEqual(entry.idsWithoutSpecial);
      expect(llama.decode(entry.ids)).toBe(entry.decoded);
    },
  );

  it('adds no second BOS to text starting with BOS', () => {
    const entry = llamaExpected.cases.find((c) => c.name === 'starts with bos')!;
    // The Rust post-processor prepends BOS regardless and gives [0, 0, ...]; one BOS is kept here.
    expect(entry.ids.slice(0, 2)).toEqual([0, 0]);
    expect(llama.encode(entry.text)).toEqual(entry.idsWithoutSpecial);
    expect(llama.encode(entry.text).filter((id) => id === 0)).toHaveLength(1);
  });

  it('reads an AddedToken object as bos_token', () => {
    expect(llama.bosToken).toBe('<s>');
    expect(llama.bosTokenId).toBe(0);
    expect(llama.addBosToken).toBe(true);
  });

  it('falls back to EOS for padding', () => {
    expect(llama.eosTokenId).toBe(1);
    expect(llama.padToken).toBe('</s>');
    expect(llama.padTokenId).toBe(1);
  });

  it('follows add_bos_token over the post-processor', async () => {
    const folder = editedFolder(LLAMA_STYLE_FOLDER, 'no-bos', (config) => {
      config.add_bos_token = false;
    });
    const tokenizer = await loadTokenizer(folder);
    expect(tokenizer.addBosToken).toBe(false);
    // "the cat" is 262 = "the" and 265 = "Ġcat" in the fixture vocabulary, with no BOS in front.
    expect(tokenizer.tokenToId('the')).toBe(262);
    expect(tokenizer.tokenToId('Ġcat')).toBe(265);
    expect(tokenizer.encode('the cat')).toEqual([262, 265]);
    expect(tokenizer.encode('<s>the cat')).toEqual([0, 262, 265]);
  });

  it('adds BOS when add_bos_token is set without a post-processor', () => {
    const tokenizerJson = JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    const config = JSON.parse(readFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    const tokenizer = createTokenizer({ ...tokenizerJson, post_processor: null }, config);
    expect(tokenizer.encode('the cat')).toEqual([0, 262, 265]);
    expect(tokenizer.encode('<s>the cat')).toEqual([0, 262, 265]);
    expect(tokenizer.encode('the cat', { addSpecialTokens: false })).toEqual([262, 265]);
  });
});

describe('loadTokenizer errors', () => {
  it('names a missing tokenizer.json', async () => {
    const error = await loadError(join(scratch, 'nowhere'));
    expect(error.code).toBe('TOKENIZER_FILE_NOT_FOUND');
    expect(error.message).toContain(join(scratch, 'nowhere', 'tokenizer.json'));
  });

  it('names a missing tokenizer_config.json', async () => {
    const folder = join(scratch, 'no-config');
    mkdirSync(folder, { recursive: true });
    copyFileSync(join(LLAMA_STYLE_FOLDER, 'tokenizer.json'), join(folder, 'tokenizer.json'));
    const error = await loadError(folder);
    expect(error.code).toBe('TOKENIZER_FILE_NOT_FOUND');
    expect(error.message).toContain('tokenizer_config.json');
  });

  it('rejects invalid JSON', async () => {
    const folder = editedFolder(LLAMA_STYLE_FOLDER, 'bad-json', () => {});
    writeFileSync(join(folder, 'tokenizer.json'), '{"model": ');
    const error = await loadError(folder);
    expect(error.code).toBe('TOKENIZER_JSON_INVALID');
    expect(error.message).toContain(join(folder, 'tokenizer.json'));
  });

  it('requires an eos_token', async () => {
    const folder = editedFolder(LLAMA_STYLE_FOLDER, 'no-eos', (config) => {
      delete config.eos_token;
    });
    const error = await loadError(folder);
    expect(error.code).toBe('TOKENIZER_EOS_MISSING');
    expect(error.message).toContain('tokenizer_config.json');
  });

  it('rejects special tokens outside the vocabulary', async () => {
    const folder = editedFolder(LLAMA_STYLE_FOLDER, 'unknown-pad', (config) => {
      config.pad_token = '<pad>';
    });
    const error = await loadError(folder);
    expect(error.code).toBe('TOKENIZER_SPECIAL_TOKEN_UNKNOWN');
    expect(error.details.field).toBe('pad_token');
    expect(error.message).toContain('"<pad>"');
  });

  it('rejects a special token of the wrong type', async () => {
    const folder = editedFolder(LLAMA_STYLE_FOLDER, 'numeric-eos', (config) => {
      config.eos_token = 2;
    });
    const error = await loadError(folder);
    expect(error.code).toBe('TOKENIZER_CONFIG_INVALID');
    expect(error.details.field).toBe('eos_token');
  });

  it('rejects an unsupported model type', async () => {
    const folder = editedFolder(LLAMA_STYLE_FOLDER, 'word-level', () => {});
    writeFileSync(join(folder, 'tokenizer.json'), JSON.stringify({ added_tokens: [], model: { type: 'WordLevel', vocab: { a: 0 } } }));
    const error = await loadError(folder);
    expect(error.code).toBe('TOKENIZER_UNSUPPORTED');
    expect(error.message).toContain('tokenizer.json');
  });
});

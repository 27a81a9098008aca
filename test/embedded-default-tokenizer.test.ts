import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as ReferenceTokenizer } from '@anush008/tokenizers';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { describe, expect, it } from 'vitest';
import {
  MIN_PAIR_FREQUENCY,
  SPECIAL_TOKENS,
  VOCAB_SIZE,
  byteToCharacterTable,
  countWords,
  readTexts,
  renderTokenizerJson,
  trainBpe,
} from '../scripts/train-tokenizer.js';

const DATA_FOLDER = join(import.meta.dirname, '..', 'examples', 'data');
const MODEL_FOLDER = join(import.meta.dirname, '..', 'examples', 'models', 'tiny-qwen2');
const TOKENIZER_PATH = join(MODEL_FOLDER, 'tokenizer.json');

const tokenizerJsonText = readFileSync(TOKENIZER_PATH, 'utf8');
const tokenizerConfig = JSON.parse(readFileSync(join(MODEL_FOLDER, 'tokenizer_config.json'), 'utf8')) as Record<
  string,
  unknown
>;
const tokenizer = new Tokenizer(JSON.parse(tokenizerJsonText) as object, tokenizerConfig);

/** Returns the first line where two texts differ, or undefined when they are equal. */
function firstDifferentLine(actual: string, expected: string): string | undefined {
  const actualLines = actual.split('\n');
  const expectedLines = expected.split('\n');
  const count = Math.max(actualLines.length, expectedLines.length);
  for (let i = 0; i < count; i++) {
    if (actualLines[i] !== expectedLines[i]) {
      return `line ${i + 1}: built ${JSON.stringify(actualLines[i]?.slice(0, 120))}, committed ${JSON.stringify(expectedLines[i]?.slice(0, 120))}`;
    }
  }
  return undefined;
}

const encode = (text: string): number[] => tokenizer.encode(text, { add_special_tokens: false }).ids;

/** Strings beyond the corpus: accents, CJK, emoji, whitespace runs, control bytes, special tokens. */
const HARD_STRINGS = [
  'naïve café, Zürich and São Paulo',
  '東京タワー and 北京',
  'emoji 🙂👍🏽 and a flag 🇺🇸',
  '  two leading spaces, a tab\tand\r\nCRLF\n\n\nthree newlines   ',
  'control \u0000 and \u007f bytes',
  "it's, I'LL, we've, they'd",
  'prices: $1,000.50 (about 12%)',
  '<|im_start|>user\nHi<|im_end|>\n<|endoftext|>',
];

describe('BPE trainer', () => {
  it('maps bytes to GPT-2 characters', () => {
    const table = byteToCharacterTable();
    expect(table).toHaveLength(256);
    expect(new Set(table).size).toBe(256);
    // Printable ASCII maps to itself. Unprintable bytes count up from U+0100: byte 0 -> U+0100 = Ā,
    // newline 0x0a -> U+010A = Ċ, space 0x20 -> U+0120 = Ġ. After 0x00-0x20 (33 bytes) and 0x7f-0xa0
    // (34 bytes), soft hyphen 0xad is the 68th -> U+0143 = Ń.
    expect(table[0x41]).toBe('A');
    expect(table[0x20]).toBe('Ġ');
    expect(table[0x0a]).toBe('Ċ');
    expect(table[0x00]).toBe('Ā');
    expect(table[0xad]).toBe('Ń');
  });

  it('merges the most frequent pair first', () => {
    // Pair counts: "abab" x2 gives (a,b) 4 and (b,a) 2, "ab" x3 adds (a,b) 3, "bc" x4 gives (b,c) 4.
    // Step 1: (a,b) = 7 -> "ab". Words become [ab ab] x2, [ab] x3, [b c] x4.
    // Step 2: (b,c) = 4 beats (ab,ab) = 2 -> "bc". Step 3: (ab,ab) = 2 -> "abab". No pairs remain.
    const model = trainBpe(
      new Map([
        ['abab', 2],
        ['ab', 3],
        ['bc', 4],
      ]),
      { vocabSize: 300, minPairFrequency: 1 },
    );
    expect(model.merges).toEqual([
      ['a', 'b'],
      ['b', 'c'],
      ['ab', 'ab'],
    ]);
    expect(model.tokens.slice(256)).toEqual(['ab', 'bc', 'abab']);
  });

  it('breaks ties by the smaller pair of ids', () => {
    // (x,y) = (120,121) and (z,w) = (122,119) both occur twice, and (120,121) is the smaller pair.
    const model = trainBpe(
      new Map([
        ['zw', 2],
        ['xy', 2],
      ]),
      { vocabSize: 300, minPairFrequency: 1 },
    );
    expect(model.merges).toEqual([
      ['x', 'y'],
      ['z', 'w'],
    ]);
  });

  it('merges overlapping pairs left to right', () => {
    // "aaa" x5 has (a,a) twice per word = 10. Merging left to right gives [aa a], so the next pair
    // (aa,a) has count 5.
    const model = trainBpe(new Map([['aaa', 5]]), { vocabSize: 300, minPairFrequency: 1 });
    expect(model.merges).toEqual([
      ['a', 'a'],
      ['aa', 'a'],
    ]);
  });

  it('stops at the vocabulary size or the minimum frequency', () => {
    const counts = new Map([
      ['abab', 2],
      ['ab', 3],
      ['bc', 4],
    ]);
    expect(trainBpe(counts, { vocabSize: 257, minPairFrequency: 1 }).merges).toEqual([['a', 'b']]);
    // (ab,ab) occurs 2 times, below a minimum of 3.
    expect(trainBpe(counts, { vocabSize: 300, minPairFrequency: 3 }).merges).toHaveLength(2);
    expect(() => trainBpe(counts, { vocabSize: 100, minPairFrequency: 1 })).toThrow(/vocabSize/);
  });

  it('rebuilds the committed tokenizer.json byte for byte', () => {
    const wordCounts = countWords(readTexts(join(DATA_FOLDER, 'press', 'train.jsonl')));
    const model = trainBpe(wordCounts, { vocabSize: VOCAB_SIZE - SPECIAL_TOKENS.length, minPairFrequency: MIN_PAIR_FREQUENCY });
    expect(firstDifferentLine(renderTokenizerJson(model), tokenizerJsonText)).toBeUndefined();
  });
});

describe('tiny-qwen2 tokenizer', () => {
  it('has 2048 tokens with the special tokens last', () => {
    expect(tokenizer.get_vocab(true).size).toBe(2048);
    expect(tokenizer.token_to_id('<|endoftext|>')).toBe(2045);
    expect(tokenizer.token_to_id('<|im_start|>')).toBe(2046);
    expect(tokenizer.token_to_id('<|im_end|>')).toBe(2047);
    // Ids 0 to 255 are the single bytes, in byte order.
    expect(tokenizer.id_to_token(65)).toBe('A');
    expect(tokenizer.id_to_token(32)).toBe('Ġ');
    expect(tokenizer.id_to_token(255)).toBe('ÿ');
  });

  it('round-trips every passage of both domains', () => {
    for (const domain of ['press', 'fiction']) {
      for (const split of ['train', 'valid', 'test']) {
        for (const text of readTexts(join(DATA_FOLDER, domain, `${split}.jsonl`))) {
          const ids = encode(text);
          expect(tokenizer.decode(ids), `${domain}/${split}: ${text.slice(0, 60)}`).toBe(text);
        }
      }
    }
  });

  it('round-trips text outside the corpus', () => {
    for (const text of HARD_STRINGS) {
      expect(tokenizer.decode(encode(text))).toBe(text);
    }
  });

  it('normalizes input to NFC', () => {
    // "e" + U+0301 (combining acute) is composed to U+00E9 before encoding, as in Qwen2.
    expect(tokenizer.decode(encode('cafe\u0301'))).toBe('caf\u00e9');
  });

  it('encodes special tokens as single ids', () => {
    const ids = encode('<|im_start|>user\nHi<|im_end|>\n<|endoftext|>');
    expect(ids[0]).toBe(2046);
    expect(ids).toContain(2047);
    expect(ids.at(-1)).toBe(2045);
    expect(tokenizer.decode(ids, { skip_special_tokens: true })).toBe('user\nHi\n');
  });

  it('compresses old-domain text to about 3 characters per token', () => {
    const texts = readTexts(join(DATA_FOLDER, 'press', 'valid.jsonl'));
    const characters = texts.reduce((sum, text) => sum + text.length, 0);
    const tokens = texts.reduce((sum, text) => sum + encode(text).length, 0);
    // A byte-only tokenizer gives 1.0 here, and the trained merges give about 3.
    expect(characters / tokens).toBeGreaterThan(2.8);
  });

  it('matches the Rust tokenizers library', async () => {
    const reference = ReferenceTokenizer.fromFile(TOKENIZER_PATH);
    const texts = [
      ...HARD_STRINGS,
      ...readTexts(join(DATA_FOLDER, 'press', 'valid.jsonl')).slice(0, 100),
      ...readTexts(join(DATA_FOLDER, 'fiction', 'valid.jsonl')).slice(0, 100),
    ];
    for (const text of texts) {
      const expected = (await reference.encode(text, null, { addSpecialTokens: false })).getIds();
      expect(encode(text), text.slice(0, 60)).toEqual(expected);
    }
  });
});

describe('tiny-qwen2 chat template', () => {
  const template = new Template(tokenizerConfig.chat_template as string);
  const conversation = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Who won the primary?' },
    { role: 'assistant', content: 'Ivan Allen Jr.' },
  ];

  it('renders a conversation in ChatML', () => {
    const rendered = template.render({ messages: conversation, add_generation_prompt: false, bos_token: '', eos_token: '<|endoftext|>' });
    expect(rendered).toBe(
      '<|im_start|>system\nYou are terse.<|im_end|>\n' +
        '<|im_start|>user\nWho won the primary?<|im_end|>\n' +
        '<|im_start|>assistant\nIvan Allen Jr.<|im_end|>\n',
    );
    const ids = encode(rendered);
    expect(ids.filter((id) => id === 2046)).toHaveLength(3);
    expect(ids.filter((id) => id === 2047)).toHaveLength(3);
    expect(tokenizer.decode(ids)).toBe(rendered);
  });

  it('appends the generation prompt', () => {
    const rendered = template.render({ messages: conversation.slice(0, 2), add_generation_prompt: true });
    expect(rendered).toBe(
      '<|im_start|>system\nYou are terse.<|im_end|>\n' +
        '<|im_start|>user\nWho won the primary?<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  it('declares the special tokens', () => {
    expect(tokenizerConfig.eos_token).toBe('<|endoftext|>');
    expect(tokenizerConfig.pad_token).toBe('<|endoftext|>');
    expect(tokenizerConfig.bos_token).toBeNull();
    expect(tokenizerConfig.add_bos_token).toBe(false);
    // Decoding must not rewrite " ." or " 's", or corpus text would not round-trip.
    expect(tokenizerConfig.clean_up_tokenization_spaces).toBe(false);
  });
});

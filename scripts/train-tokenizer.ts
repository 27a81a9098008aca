/**
 * Trains the byte-level BPE tokenizer of the embedded tiny Qwen2 model.
 *
 * Reads the old domain's training split (`examples/data/press/train.jsonl`) and learns byte-level
 * BPE merges with Qwen2's normalizer and pre-tokenizer: NFC, then the Qwen2 split regex, then GPT-2's
 * byte-to-character map. Writes `tokenizer.json` (Hugging Face tokenizers format) and
 * `tokenizer_config.json` (with a ChatML chat template) to `examples/models/tiny-qwen2/`. Then loads
 * the result with `@huggingface/tokenizers`, checks that every passage of both domains round-trips,
 * and prints the token counts per split.
 *
 * Run: `npx tsx scripts/train-tokenizer.ts` (or `npm run tokenizer:train`) after
 * `npm run data:brown`.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { NFCNormalizer, SequencePreTokenizer, Tokenizer } from '@huggingface/tokenizers';

/** Total vocabulary size: the BPE vocabulary plus the special tokens, which take the last ids. */
export const VOCAB_SIZE = 2048;

/** A pair seen fewer times than this is never merged, so training may end below `VOCAB_SIZE`. */
export const MIN_PAIR_FREQUENCY = 2;

/**
 * Special tokens in id order after the BPE vocabulary. `<|endoftext|>` ends plain-text documents and
 * pads batches, while `<|im_start|>` and `<|im_end|>` delimit ChatML turns.
 */
export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/** End-of-sequence token, as in Qwen2 base models, because the embedded model learns plain text. */
export const EOS_TOKEN = '<|endoftext|>';
export const PAD_TOKEN = '<|endoftext|>';

/** Maximum sequence length in tokens, equal to `max_position_embeddings` in `config.json`. */
export const MODEL_MAX_LENGTH = 512;

/**
 * ChatML, as Qwen2 formats turns: `<|im_start|>{role}\n{content}<|im_end|>\n` for each message, then
 * `<|im_start|>assistant\n` when a generation prompt is requested. No default system message is added.
 */
export const CHAT_TEMPLATE =
  "{%- for message in messages %}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  '{%- endfor %}' +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/** The pre-tokenization split pattern of Qwen2's `tokenizer.json` (Oniguruma syntax). */
export const QWEN2_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export const NORMALIZER_CONFIG = { type: 'NFC' } as const;

const BYTE_LEVEL_OPTIONS = { add_prefix_space: false, trim_offsets: false, use_regex: false } as const;

export const PRE_TOKENIZER_CONFIG = {
  type: 'Sequence',
  pretokenizers: [
    { type: 'Split', pattern: { Regex: QWEN2_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', ...BYTE_LEVEL_OPTIONS },
  ],
} as const;

export interface BpeTrainingOptions {
  /** Size of the BPE vocabulary: 256 byte tokens plus the merged tokens. */
  vocabSize: number;
  /** Pairs seen fewer times than this are never merged. */
  minPairFrequency: number;
}

export interface BpeModel {
  /** Token strings indexed by id: ids 0 to 255 are the single bytes, then one token per merge. */
  tokens: string[];
  /** Merges in the order they were learned, each as the two token strings it joins. */
  merges: [string, string][];
}

/**
 * Returns GPT-2's byte-to-character table, indexed by byte value: printable Latin-1 bytes map to
 * themselves and the other 68 bytes to U+0100 onwards in byte order, so every byte is one visible
 * character (space is `Ġ`, newline is `Ċ`).
 */
export function byteToCharacterTable(): string[] {
  const printable = (byte: number): boolean =>
    (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
  const table: string[] = [];
  let next = 0x100;
  for (let byte = 0; byte < 256; byte++) {
    table.push(String.fromCodePoint(printable(byte) ? byte : next++));
  }
  return table;
}

/**
 * Counts pre-tokens ("words") over the texts with the runtime library's own NFC normalizer and
 * Qwen2 pre-tokenizer, so training counts exactly the pieces that encoding produces. The words are
 * returned in byte-level characters.
 */
export function countWords(texts: Iterable<string>): Map<string, number> {
  const normalizer = new NFCNormalizer(NORMALIZER_CONFIG);
  const preTokenizer = new SequencePreTokenizer(
    PRE_TOKENIZER_CONFIG as unknown as ConstructorParameters<typeof SequencePreTokenizer>[0],
  );
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const word of preTokenizer.pre_tokenize_text(normalizer.normalize(text))) {
      counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  }
  return counts;
}

/** Base of adjacent-pair keys `left * base + right`. Ids stay below 2^16, so keys sort as (left, right). */
const PAIR_KEY_BASE = 65536;

/**
 * Learns byte-level BPE merges from word counts.
 *
 * Each step merges the adjacent pair with the highest count, summed over all occurrences in all
 * words weighted by word count. Ties go to the pair with the smallest left id, then the smallest right
 * id (ids 0 to 255 are byte values, merged tokens follow in the order learned), which is the
 * tie-breaking rule of the Hugging Face `BpeTrainer`. Within a word a merge replaces occurrences left
 * to right without overlap (`a a a` becomes `aa a`). Training stops at `vocabSize` tokens or when the
 * best pair is seen fewer than `minPairFrequency` times.
 */
export function trainBpe(wordCounts: ReadonlyMap<string, number>, options: BpeTrainingOptions): BpeModel {
  if (options.vocabSize < 256 || options.vocabSize > PAIR_KEY_BASE) {
    throw new RangeError(`vocabSize must be between 256 and ${PAIR_KEY_BASE}, got ${options.vocabSize}.`);
  }
  const byteTable = byteToCharacterTable();
  const byteOfCharacter = new Map(byteTable.map((character, byte) => [character, byte]));
  const tokens = [...byteTable];
  const merges: [string, string][] = [];

  // Words in a fixed order (sorted by UTF-16 code unit), each as a list of symbol ids.
  const entries = [...wordCounts.entries()].sort(([a], [b]) => compareCodeUnits(a, b));
  const words = entries.map(([word]) =>
    [...word].map((character) => {
      const byte = byteOfCharacter.get(character);
      if (byte === undefined) {
        throw new RangeError(`Word "${word}" contains "${character}", which is not a byte-level character.`);
      }
      return byte;
    }),
  );
  const frequencies = entries.map(([, count]) => count);

  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPairs = (wordIndex: number, sign: 1 | -1): void => {
    const symbols = words[wordIndex] as number[];
    const frequency = (frequencies[wordIndex] as number) * sign;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const key = (symbols[i] as number) * PAIR_KEY_BASE + (symbols[i + 1] as number);
      const count = (pairCounts.get(key) ?? 0) + frequency;
      if (count === 0) pairCounts.delete(key);
      else pairCounts.set(key, count);
      if (sign > 0) {
        const holders = pairWords.get(key) ?? new Set<number>();
        holders.add(wordIndex);
        pairWords.set(key, holders);
      }
    }
  };
  words.forEach((_, wordIndex) => addPairs(wordIndex, 1));

  while (tokens.length < options.vocabSize) {
    let bestKey = -1;
    let bestCount = 0;
    for (const [key, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && key < bestKey)) {
        bestKey = key;
        bestCount = count;
      }
    }
    if (bestKey < 0 || bestCount < options.minPairFrequency) break;

    const left = Math.floor(bestKey / PAIR_KEY_BASE);
    const right = bestKey % PAIR_KEY_BASE;
    const mergedId = tokens.length;
    tokens.push((tokens[left] as string) + (tokens[right] as string));
    merges.push([tokens[left] as string, tokens[right] as string]);

    // A word listed under a pair may have lost it to an earlier merge. Such a word stays unchanged.
    for (const wordIndex of pairWords.get(bestKey) ?? []) {
      const symbols = words[wordIndex] as number[];
      const merged = mergePair(symbols, left, right, mergedId);
      if (merged.length === symbols.length) continue;
      addPairs(wordIndex, -1);
      words[wordIndex] = merged;
      addPairs(wordIndex, 1);
    }
    pairWords.delete(bestKey);
  }
  return { tokens, merges };
}

function compareCodeUnits(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}

/** Replaces each non-overlapping occurrence of (left, right), scanning left to right. */
function mergePair(symbols: readonly number[], left: number, right: number, mergedId: number): number[] {
  const merged: number[] = [];
  for (let i = 0; i < symbols.length; i++) {
    if (symbols[i] === left && symbols[i + 1] === right) {
      merged.push(mergedId);
      i++;
    } else {
      merged.push(symbols[i] as number);
    }
  }
  return merged;
}

/**
 * Builds the `tokenizer.json` text: Qwen2's normalizer, pre-tokenizer, post-processor and decoder,
 * a BPE model with `merges` as `"left right"` strings, and the special tokens as added tokens after
 * the BPE vocabulary. Older tokenizers releases read merges only as strings, and newer ones read both
 * strings and pairs. The vocabulary is written in id order.
 */
export function renderTokenizerJson(model: BpeModel): string {
  const addedTokens = SPECIAL_TOKENS.map((content, index) => ({
    id: model.tokens.length + index,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const vocabPlaceholder = '__VOCAB__';
  const document = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: NORMALIZER_CONFIG,
    pre_tokenizer: PRE_TOKENIZER_CONFIG,
    post_processor: { type: 'ByteLevel', ...BYTE_LEVEL_OPTIONS },
    decoder: { type: 'ByteLevel', ...BYTE_LEVEL_OPTIONS },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: vocabPlaceholder,
      merges: model.merges.map(([left, right]) => `${left} ${right}`),
    },
  };

  // JSON.stringify would list integer-like keys ("0" to "9") first, so the vocabulary is written by hand.
  const vocabLines = model.tokens.map((token, id) => `      ${JSON.stringify(token)}: ${id}`);
  const vocabJson = `{\n${vocabLines.join(',\n')}\n    }`;
  return `${JSON.stringify(document, null, 2).replace(JSON.stringify(vocabPlaceholder), vocabJson)}\n`;
}

/** Builds the `tokenizer_config.json` object, in the layout of Qwen2's configuration files. */
export function buildTokenizerConfig(bpeVocabSize: number): Record<string, unknown> {
  const addedTokensDecoder = Object.fromEntries(
    SPECIAL_TOKENS.map((content, index) => [
      String(bpeVocabSize + index),
      { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    ]),
  );
  return {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: EOS_TOKEN,
    errors: 'replace',
    model_max_length: MODEL_MAX_LENGTH,
    pad_token: PAD_TOKEN,
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
}

/** Reads the `text` field of every line of a `{"text": ...}` JSONL file. */
export function readTexts(path: string): string[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line, index) => {
      const record: unknown = JSON.parse(line);
      if (typeof record !== 'object' || record === null || typeof (record as { text?: unknown }).text !== 'string') {
        throw new Error(`Invalid record in ${path}, line ${index + 1}: expected an object with a string "text" field. Rebuild the data with npm run data:brown.`);
      }
      return (record as { text: string }).text;
    });
}

const DOMAIN_NAMES = ['press', 'fiction'] as const;
const SPLIT_NAMES = ['train', 'valid', 'test'] as const;

function main(): void {
  const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const dataFolder = join(repositoryRoot, 'examples', 'data');
  const modelFolder = join(repositoryRoot, 'examples', 'models', 'tiny-qwen2');

  const started = performance.now();
  const wordCounts = countWords(readTexts(join(dataFolder, 'press', 'train.jsonl')));
  const model = trainBpe(wordCounts, {
    vocabSize: VOCAB_SIZE - SPECIAL_TOKENS.length,
    minPairFrequency: MIN_PAIR_FREQUENCY,
  });
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `Trained on ${wordCounts.size} distinct pre-tokens in ${seconds.toFixed(1)} s: ` +
      `${model.tokens.length} BPE tokens (${model.merges.length} merges) + ${SPECIAL_TOKENS.length} special tokens`,
  );

  mkdirSync(modelFolder, { recursive: true });
  const tokenizerJson = renderTokenizerJson(model);
  const tokenizerConfig = buildTokenizerConfig(model.tokens.length);
  writeFileSync(join(modelFolder, 'tokenizer.json'), tokenizerJson);
  writeFileSync(join(modelFolder, 'tokenizer_config.json'), `${JSON.stringify(tokenizerConfig, null, 2)}\n`);

  const tokenizer = new Tokenizer(JSON.parse(tokenizerJson), tokenizerConfig);
  for (const domain of DOMAIN_NAMES) {
    for (const split of SPLIT_NAMES) {
      const texts = readTexts(join(dataFolder, domain, `${split}.jsonl`));
      let tokenCount = 0;
      let characterCount = 0;
      for (const text of texts) {
        const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
        if (tokenizer.decode(ids) !== text) {
          throw new Error(`Round trip failed for a ${domain}/${split} passage: decoding its ids does not return the text "${text.slice(0, 80)}...". Check the normalizer and decoder settings.`);
        }
        tokenCount += ids.length;
        characterCount += text.length;
      }
      const ratio = (characterCount / tokenCount).toFixed(2);
      console.log(`${domain}/${split}: ${texts.length} passages, ${tokenCount} tokens, ${ratio} characters per token`);
    }
  }
  console.log(`Wrote ${join(modelFolder, 'tokenizer.json')} and tokenizer_config.json`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main();
}

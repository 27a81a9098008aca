import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';

import { NestedLearningConfig } from '../src/config/index.js';
import { CONFIG_DOCS_PATH, EXAMPLE_CONFIG_YAML, renderConfigurationDocs } from '../scripts/generate-config-docs.js';

describe('configuration docs', () => {
  it('match the schema', async () => {
    const committed = await readFile(CONFIG_DOCS_PATH, 'utf8');

    // On failure, regenerate with: npm run docs:config
    expect(committed).toBe(renderConfigurationDocs());
  });

  it('list every option', () => {
    const text = renderConfigurationDocs();

    for (const field of NestedLearningConfig.fields()) {
      expect(text).toContain(`| \`${field.name}\` | \`${field.snakeName}\` |`);
      expect(field.description.length).toBeGreaterThan(0);
    }
  });

  it('show an example that parses', () => {
    const config = NestedLearningConfig.parse(parseYaml(EXAMPLE_CONFIG_YAML));

    expect(config.tierUpdateFrequencies).toEqual([1, 2, 4]);
    expect(config.learningRate).toBe(1e-5);
    expect(config.earlyStop).toBe(true);
  });
});

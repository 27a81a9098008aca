/**
 * `nested-learning/server` as an application installs it: the built bundles (`npm test` builds them
 * first through the `pretest` script), imported from ESM and CommonJS, serving the dashboard copied
 * next to them and training through the bundled training process.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));

let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'nl-server-package-'));
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

function runNode(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: repositoryRoot, encoding: 'utf8', timeout: 150_000 });
}

describe('built server package', () => {
  it('has bundles, declarations and dashboard files', () => {
    const files = [
      'dist/server.js',
      'dist/server.cjs',
      'dist/server.d.ts',
      'dist/server.d.cts',
      'dist/server-worker.js',
      'dist/server-worker.cjs',
      'dist/dashboard/index.html',
      'dist/dashboard/dashboard.js',
      'dist/dashboard/dashboard.css',
    ];
    for (const file of files) {
      expect(existsSync(join(repositoryRoot, file)), file).toBe(true);
    }
  });

  it('requires createServer from CommonJS', () => {
    const script = [
      `const { createServer, startServer } = require('nested-learning/server');`,
      `const app = createServer({ logger: false, outputDir: ${JSON.stringify(join(workDir, 'cjs'))} });`,
      `app.inject({ method: 'GET', url: '/' }).then(async (page) => {`,
      `  console.log(JSON.stringify([typeof startServer, page.statusCode, page.body.includes('dashboard.js')]));`,
      `  await app.close();`,
      `});`,
    ].join('\n');
    expect(JSON.parse(runNode(['--input-type=commonjs', '-e', script]))).toEqual(['function', 200, true]);
  });

  it('trains through the ESM bundle', { timeout: 180_000 }, async () => {
    // Two steps on the embedded model, through the bundled training process.
    const outputDir = join(workDir, 'esm');
    const config = {
      baseModelPath: join(repositoryRoot, 'examples', 'models', 'tiny-qwen2'),
      trainDataPath: join(repositoryRoot, 'examples', 'data', 'fiction', 'valid.jsonl'),
      experimentName: 'bundle-run',
      numSteps: 2,
      batchSize: 2,
      maxSeqLength: 32,
      backend: 'wasm',
    };
    const script = [
      `import { startServer } from 'nested-learning/server';`,
      `const server = await startServer({ logger: false, port: 0, outputDir: ${JSON.stringify(outputDir)} });`,
      `const start = await fetch(server.url + '/nested-learning/start', {`,
      `  method: 'POST', headers: { 'content-type': 'application/json' }, body: ${JSON.stringify(JSON.stringify(config))},`,
      `});`,
      `let status;`,
      `do {`,
      `  await new Promise((resolve) => setTimeout(resolve, 100));`,
      `  status = await (await fetch(server.url + '/nested-learning/status')).json();`,
      `} while (status.status === 'running');`,
      `const uplot = await fetch(server.url + '/vendor/uPlot.iife.min.js');`,
      `console.log(JSON.stringify({ start: start.status, status: status.status, step: status.currentStep, error: status.error, uplot: uplot.status }));`,
      `await server.close();`,
    ].join('\n');

    const result = JSON.parse(runNode(['--input-type=module', '-e', script])) as Record<string, unknown>;
    expect(result).toEqual({ start: 202, status: 'completed', step: 2, error: null, uplot: 200 });
    const metadata = JSON.parse(await readFile(join(outputDir, 'bundle-run', 'checkpoints', 'final', 'metadata.json'), 'utf8')) as {
      step: number;
      stopped: boolean;
    };
    expect(metadata.step).toBe(2);
    expect(metadata.stopped).toBe(false);
  });
});

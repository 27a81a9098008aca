/**
 * Files the server needs at run time: the package root with the embedded default model and data,
 * the dashboard's static files, uPlot's browser build, and the script of the training process.
 * They are located from this module's own URL, so they are found both from the TypeScript sources
 * (`src/server/`) and from the build (`dist/`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_NAME = 'nested-learning';
const moduleUrl = import.meta.url;
const moduleDir = dirname(fileURLToPath(moduleUrl));

/** Form of the running code: the TypeScript sources (tests, tsx), or the ESM or CommonJS build. */
export type ModuleFlavor = 'typescript' | 'esm' | 'commonjs';

/** Returns the flavor of the running server code, from the extension of this module. */
export function moduleFlavor(): ModuleFlavor {
  if (moduleUrl.endsWith('.ts')) {
    return 'typescript';
  }
  return moduleUrl.endsWith('.cjs') ? 'commonjs' : 'esm';
}

/** Returns the folder of the `nested-learning` package: the nearest parent with its package.json. */
export function packageRoot(): string {
  let dir = moduleDir;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && readPackageName(manifest) === PACKAGE_NAME) {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) {
      // Only reachable when the package was copied without its package.json.
      return join(moduleDir, moduleFlavor() === 'typescript' ? '../..' : '..');
    }
    dir = parent;
  }
}

/** Paths of the embedded default: the tiny model, the new domain (fiction) and the old one (press). */
export interface EmbeddedDefaultPaths {
  modelsDir: string;
  dataDir: string;
  baseModelPath: string;
  trainDataPath: string;
  valDataPath: string;
  retainDataPath: string;
}

/** Returns the paths of the embedded default inside the package. */
export function embeddedDefaultPaths(): EmbeddedDefaultPaths {
  const root = packageRoot();
  const modelsDir = join(root, 'examples', 'models');
  const dataDir = join(root, 'examples', 'data');
  return {
    modelsDir,
    dataDir,
    baseModelPath: join(modelsDir, 'tiny-qwen2'),
    trainDataPath: join(dataDir, 'fiction', 'train.jsonl'),
    valDataPath: join(dataDir, 'fiction', 'valid.jsonl'),
    retainDataPath: join(dataDir, 'press', 'valid.jsonl'),
  };
}

/**
 * Returns the folder of the dashboard's static files. The build copies `src/server/dashboard/` to
 * `dist/dashboard/`, next to the server bundle.
 */
export function dashboardDir(): string {
  return join(moduleDir, 'dashboard');
}

/** Returns the paths of uPlot's browser build (a script that defines the global `uPlot`) and its stylesheet. */
export function uplotFiles(): { script: string; stylesheet: string } {
  const require = createRequire(moduleUrl);
  return {
    script: require.resolve('uplot/dist/uPlot.iife.min.js'),
    stylesheet: require.resolve('uplot/dist/uPlot.min.css'),
  };
}

/** The script of the training process and the Node options it needs. */
export interface TrainingProcessScript {
  path: string;
  execArgv: string[];
}

/**
 * Returns the script that runs one training in a child process: `worker.ts` through tsx from the
 * sources, or the `server-worker` bundle of the matching flavor from the build.
 */
export function trainingProcessScript(): TrainingProcessScript {
  switch (moduleFlavor()) {
    case 'typescript':
      return { path: join(moduleDir, 'worker.ts'), execArgv: ['--import', 'tsx'] };
    case 'commonjs':
      return { path: join(moduleDir, 'server-worker.cjs'), execArgv: [] };
    case 'esm':
      return { path: join(moduleDir, 'server-worker.js'), execArgv: [] };
  }
}

function readPackageName(manifest: string): string | undefined {
  try {
    const parsed = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown };
    return typeof parsed.name === 'string' ? parsed.name : undefined;
  } catch {
    return undefined;
  }
}

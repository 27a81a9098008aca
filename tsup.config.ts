import { cp } from 'node:fs/promises';
import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    server: 'src/server/index.ts',
    testing: 'src/testing/index.ts',
    // The child process that runs a training for the server.
    'server-worker': 'src/server/worker.ts',
    // The `nested-learning` command.
    cli: 'src/cli/index.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: false,
  shims: true,
  // The dashboard is static HTML, CSS and JavaScript that the server reads from next to its bundle.
  async onSuccess() {
    await cp('src/server/dashboard', 'dist/dashboard', { recursive: true });
  },
});

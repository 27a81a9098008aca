#!/usr/bin/env node
/**
 * Entry point of the `nested-learning` command.
 */
import { runCli } from './program.js';

runCli(process.argv).then(
  (status) => {
    process.exitCode = status;
  },
  (error: unknown) => {
    process.stderr.write(`Error: ${String(error)}\n`);
    process.exitCode = 1;
  },
);

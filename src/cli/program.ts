/**
 * The `nested-learning` command: its subcommands, global flags and error handling.
 */
import { Command, CommanderError } from 'commander';

import { compareCommand } from './commands/compare.js';
import { convertCommand } from './commands/convert.js';
import { evalCommand } from './commands/eval.js';
import { generateCommand } from './commands/generate.js';
import { serveCommand } from './commands/serve.js';
import { tiersCommand } from './commands/tiers.js';
import { trainCommand } from './commands/train.js';
import { packageVersion } from './names.js';
import { formatError, processTerminal, type Terminal } from './terminal.js';

/** Builds the program with every subcommand. `terminal` is read when a command runs, after the global flags are parsed. */
export function createProgram(): Command {
  const program = new Command('nested-learning');
  const terminal = (): Terminal => processTerminal(program.opts<{ verbose?: boolean }>().verbose === true);

  program
    .description('Continual LoRA fine-tuning of causal language models with Nested Learning tiers, on TensorFlow.js.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('-v, --verbose', 'print library info messages and stack traces of errors')
    .showSuggestionAfterError(true)
    .exitOverride();

  for (const command of [
    trainCommand(terminal),
    tiersCommand(terminal),
    evalCommand(terminal),
    generateCommand(terminal),
    convertCommand(terminal),
    compareCommand(terminal),
    serveCommand(terminal),
  ]) {
    program.addCommand(command.exitOverride().showSuggestionAfterError(true));
  }
  return program;
}

/**
 * Runs the command line `argv` (as `process.argv`) and returns the exit status: 0 on success, the
 * command's own status, 1 for an error. Errors print one line (with `--verbose`, the stack trace too).
 */
export async function runCli(argv: readonly string[]): Promise<number> {
  const program = createProgram();
  try {
    await program.parseAsync([...argv]);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // commander has already printed its message (or the help or version text).
      return error.exitCode;
    }
    const verbose = program.opts<{ verbose?: boolean }>().verbose === true || argv.includes('--verbose') || argv.includes('-v');
    process.stderr.write(`${formatError(error, verbose)}\n`);
    return 1;
  }
}

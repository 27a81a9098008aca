/**
 * The CLI's output streams, its logger for library messages, and the error it raises for bad
 * command-line input.
 */
import { NestedLearningError, type Logger } from '../index.js';
import type { ProgressStream } from './progress.js';

/** Output streams of a command: results and progress to `out`, warnings and errors to `err`. */
export interface Terminal {
  out: ProgressStream;
  err: ProgressStream;
  /** Print library info messages and stack traces. */
  verbose: boolean;
}

/** Returns the terminal of the running process. */
export function processTerminal(verbose: boolean): Terminal {
  return { out: process.stdout, err: process.stderr, verbose };
}

/**
 * Returns a logger that writes library warnings and errors to `err`, and info and debug messages
 * only with `verbose`. `beforeWrite` runs first, so a progress bar can clear its line.
 */
export function terminalLogger(terminal: Terminal, beforeWrite: () => void = () => {}): Logger {
  const write = (level: string, message: string): void => {
    beforeWrite();
    terminal.err.write(`${level}: ${message}\n`);
  };
  return {
    debug: (message) => (terminal.verbose ? write('debug', message) : undefined),
    info: (message) => (terminal.verbose ? write('info', message) : undefined),
    warn: (message) => write('warning', message),
    error: (message) => write('error', message),
  };
}

/** Formats an error for the terminal: the message (with the library code), and the stack with `verbose`. */
export function formatError(error: unknown, verbose: boolean): string {
  if (!(error instanceof Error)) {
    return `Error: ${String(error)}`;
  }
  const code = NestedLearningError.isInstance(error) ? ` [${error.code}]` : '';
  const text = `Error${code}: ${error.message}`;
  if (!verbose) {
    return text;
  }
  const cause = error.cause instanceof Error ? `\nCaused by: ${error.cause.stack ?? error.cause.message}` : '';
  return `${text}\n${error.stack ?? ''}${cause}`;
}

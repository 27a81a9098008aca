/**
 * The logger the library accepts. The library never writes to the console: it reports through
 * events and through this interface, and the caller decides where the lines go. `console` and
 * pino-style loggers fit it.
 */
export interface Logger {
  /** Receives detail useful only when debugging, with structured `fields`. */
  debug(message: string, fields?: Record<string, unknown>): void;
  /** Receives progress: setup, evaluations, checkpoints, resumes. */
  info(message: string, fields?: Record<string, unknown>): void;
  /** Receives problems that do not stop the work, for example a skipped step. */
  warn(message: string, fields?: Record<string, unknown>): void;
  /** Receives failures, for example the error that ended a run. */
  error(message: string, fields?: Record<string, unknown>): void;
}

/** A logger that discards everything; the default wherever a logger is optional. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

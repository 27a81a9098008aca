/** Helpers of the command line that have no place in the library API. */
import { LIBRARY_VERSION } from '../index.js';

/** Returns the version of the installed package. */
export function packageVersion(): string {
  return LIBRARY_VERSION;
}

/** Formats a time as `YYYYMMDD-HHMMSS` in UTC. */
export function timestampName(time: Date): string {
  return time.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
}

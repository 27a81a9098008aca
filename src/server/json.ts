/**
 * JSON encoding of responses. NaN and the infinities (a diverged loss, for example) are written as
 * the strings "NaN", "Infinity" and "-Infinity", as in the metrics files, because `JSON.stringify`
 * would turn them into `null`.
 */

/** Encodes a value as JSON, writing non-finite numbers as strings. */
export function encodeJson(value: unknown): string {
  return JSON.stringify(value, encodeNonFinite);
}

function encodeNonFinite(_key: string, value: unknown): unknown {
  if (typeof value === 'number' && !Number.isFinite(value)) {
    return String(value);
  }
  return value;
}

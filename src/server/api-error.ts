/**
 * The error body of every API response with a 4xx or 5xx status:
 * `{ "error": { "statusCode", "code", "message", "issues"? } }`.
 */

/** One problem of a request, located by the path of the value inside it. */
export interface RequestIssue {
  /** Location of the value, with the key as the client wrote it, e.g. `tier_update_frequencies[1]`. */
  path: string;
  message: string;
  /** The value found at the path, when there is one. */
  value?: unknown;
  /** camelCase name of the configuration option, when the problem belongs to one. */
  field?: string;
}

/** The body of an error response. */
export interface ApiErrorBody {
  error: {
    statusCode: number;
    code: string;
    message: string;
    issues?: RequestIssue[];
  };
}

/** An error that a route turns into a response with its status code. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly issues?: RequestIssue[],
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** Returns the response body of this error. */
  toBody(): ApiErrorBody {
    return {
      error: {
        statusCode: this.statusCode,
        code: this.code,
        message: this.message,
        ...(this.issues === undefined ? {} : { issues: this.issues }),
      },
    };
  }
}

/**
 * Options of the HTTP server, and their checks: where it listens, who may call it, which folders
 * requests may name, and where experiments go.
 */
import { existsSync } from 'node:fs';
import { mkdir, realpath } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import type { FastifyServerOptions } from 'fastify';

import { ArgumentError } from '../index.js';
import { embeddedDefaultPaths } from './locations.js';

/** Folders that paths in requests must lie under, by kind of path. */
export interface ServerRoots {
  /** Folders of base models and adapters (`baseModelPath`, `adapterPath`). @default the package's `examples/models` */
  model?: string | string[];
  /** Folders of data files (`trainDataPath`, `valDataPath`, `retainDataPath`). @default the package's `examples/data` */
  data?: string | string[];
  /** Folders that may contain experiment folders (`outputDir`). `outputDir` is always one of them. @default [] */
  output?: string | string[];
}

/** Options of {@link createServer}. */
export interface ServerOptions {
  /**
   * Folders that request paths must lie under. A path outside them, a path with a `..` segment
   * and a symbolic link that leads outside are rejected with 403.
   */
  roots?: ServerRoots;
  /**
   * Folder of the experiment folders: runs write there unless the request names another output
   * root, and `GET /nested-learning/experiments` lists it.
   * @default './nested_learning/checkpoints' under the working directory
   */
  outputDir?: string;
  /**
   * Folder that relative paths in requests are resolved against.
   * @default process.cwd()
   */
  baseDir?: string;
  /**
   * Bearer token: when set, every `/nested-learning/*` request needs the header
   * `Authorization: Bearer <token>`. Required when `allowRemote` is true.
   */
  token?: string;
  /**
   * Accepts requests whose `Host` header is not a loopback name. Without it, only `127.0.0.1`,
   * `[::1]` and `localhost` are accepted, which blocks DNS-rebinding attacks from web pages.
   * `startServer` also requires it to listen on a non-loopback address.
   * @default false
   */
  allowRemote?: boolean;
  /**
   * Largest request body in bytes; larger bodies get 413.
   * @default 65536
   */
  bodyLimit?: number;
  /**
   * Fastify's logger option: `true` logs at level info to stdout through pino, `false` turns
   * logging off, and an object sets pino's options.
   * @default true
   */
  logger?: FastifyServerOptions['logger'];
  /**
   * Seconds that closing the server waits for an active run to stop and write its final
   * checkpoint before the training process is killed.
   * @default 60
   */
  shutdownTimeoutSeconds?: number;
}

/** Options of {@link startServer}: those of the server plus the address it listens on. */
export interface StartServerOptions extends ServerOptions {
  /**
   * Address to listen on. A non-loopback address needs `allowRemote: true` and a `token`.
   * @default '127.0.0.1'
   */
  host?: string;
  /**
   * TCP port; 0 takes a free port.
   * @default 7860
   */
  port?: number;
}

/** Server options after checks, with absolute real paths. */
export interface ResolvedServerOptions {
  roots: { model: string[]; data: string[]; output: string[] };
  outputDir: string;
  baseDir: string;
  token: string | undefined;
  allowRemote: boolean;
  bodyLimit: number;
  shutdownTimeoutSeconds: number;
}

/** Kind of a root folder. */
export type RootKind = keyof ResolvedServerOptions['roots'];

/** TCP port of `startServer` and `nested-learning serve` when none is given. */
export const DEFAULT_PORT = 7860;
/** Address of `startServer` and `nested-learning serve` when none is given: loopback only. */
export const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_BODY_LIMIT = 64 * 1024;
const MIN_TOKEN_LENGTH = 16;
const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['127.0.0.1', '::1', '[::1]', 'localhost']);

/** Tells whether a host name or address is a loopback one that only this machine reaches. */
export function isLoopbackHost(host: string): boolean {
  return LOOPBACK_HOSTS.has(host.toLowerCase()) || /^127(\.\d{1,3}){3}$/.test(host);
}

/** The options that need no file system access, after checks. */
export type CheckedServerOptions = Pick<ResolvedServerOptions, 'token' | 'allowRemote' | 'bodyLimit' | 'shutdownTimeoutSeconds'>;

/**
 * Checks the options that need no file system access. Throws an ArgumentError for a short
 * token, `allowRemote` without a token, a body limit under 1 KiB or a shutdown timeout of 0 or less.
 */
export function checkServerOptions(options: ServerOptions): CheckedServerOptions {
  const allowRemote = options.allowRemote ?? false;
  const token = options.token;

  if (token !== undefined && token.length < MIN_TOKEN_LENGTH) {
    throw new ArgumentError(
      'SERVER_TOKEN_TOO_SHORT',
      `The server token has ${token.length} characters; use at least ${MIN_TOKEN_LENGTH}, for example from \`openssl rand -hex 24\`.`,
      { details: { length: token.length, minLength: MIN_TOKEN_LENGTH } },
    );
  }
  if (allowRemote && token === undefined) {
    throw new ArgumentError(
      'SERVER_TOKEN_REQUIRED',
      'allowRemote is true but no token is set; remote access requires a bearer token. Set token, or keep allowRemote false.',
    );
  }

  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  if (!Number.isInteger(bodyLimit) || bodyLimit < 1024) {
    throw new ArgumentError('SERVER_BODY_LIMIT_INVALID', `bodyLimit is ${bodyLimit}; expected an integer of at least 1024 bytes.`, {
      details: { bodyLimit },
    });
  }
  const shutdownTimeoutSeconds = options.shutdownTimeoutSeconds ?? 60;
  if (!(shutdownTimeoutSeconds > 0)) {
    throw new ArgumentError(
      'SERVER_SHUTDOWN_TIMEOUT_INVALID',
      `shutdownTimeoutSeconds is ${shutdownTimeoutSeconds}; expected a number above 0.`,
      { details: { shutdownTimeoutSeconds } },
    );
  }
  return { token, allowRemote, bodyLimit, shutdownTimeoutSeconds };
}

/**
 * Checks the options and resolves every folder to its real absolute path. `outputDir` is created
 * when missing. Throws an ArgumentError where {@link checkServerOptions} does, and for a root
 * folder that does not exist.
 */
export async function resolveServerOptions(options: ServerOptions): Promise<ResolvedServerOptions> {
  const checked = checkServerOptions(options);
  const baseDir = resolve(options.baseDir ?? process.cwd());

  const outputDirPath = resolve(baseDir, options.outputDir ?? './nested_learning/checkpoints');
  await mkdir(outputDirPath, { recursive: true });
  const outputDir = await realpath(outputDirPath);

  // The embedded default is a default root only where the package ships it.
  const embedded = embeddedDefaultPaths();
  const roots = {
    model: await resolveRoots('model', options.roots?.model ?? existing(embedded.modelsDir), baseDir),
    data: await resolveRoots('data', options.roots?.data ?? existing(embedded.dataDir), baseDir),
    output: [outputDir, ...(await resolveRoots('output', options.roots?.output ?? [], baseDir))],
  };

  return { ...checked, roots, outputDir, baseDir };
}

/** Checks that `startServer` may listen on `host` with these options. */
export function checkListenHost(host: string, options: ServerOptions): void {
  if (isLoopbackHost(host)) {
    return;
  }
  if (options.allowRemote !== true || options.token === undefined) {
    throw new ArgumentError(
      'SERVER_REMOTE_NOT_ALLOWED',
      `Listening on ${host} exposes the server to other machines; that requires allowRemote: true and a bearer token. ` +
        `Listen on ${DEFAULT_HOST}, or set both allowRemote and token.`,
      { details: { host } },
    );
  }
}

function existing(path: string): string[] {
  return existsSync(path) ? [path] : [];
}

async function resolveRoots(kind: RootKind, paths: string | string[], baseDir: string): Promise<string[]> {
  const list = Array.isArray(paths) ? paths : [paths];
  const resolved: string[] = [];
  for (const path of list) {
    const absolute = isAbsolute(path) ? path : resolve(baseDir, path);
    try {
      resolved.push(await realpath(absolute));
    } catch (error) {
      throw new ArgumentError(
        'SERVER_ROOT_NOT_FOUND',
        `The ${kind} root ${absolute} cannot be resolved (${(error as NodeJS.ErrnoException).code ?? String(error)}). Create the folder or remove it from roots.${kind}.`,
        { cause: error, details: { kind, path: absolute } },
      );
    }
  }
  return resolved;
}

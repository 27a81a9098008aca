/**
 * `createServer` and `startServer`: the fastify application with the API, the event stream and
 * the dashboard, and a helper that makes it listen.
 */
import fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { timingSafeEqual } from 'node:crypto';

import { ApiError } from './api-error.js';
import { registerApiRoutes } from './api-routes.js';
import { registerDashboardRoutes } from './dashboard-routes.js';
import { EventStreams, registerEventsRoute } from './events-route.js';
import { encodeJson } from './json.js';
import {
  checkListenHost,
  checkServerOptions,
  isLoopbackHost,
  resolveServerOptions,
  DEFAULT_HOST,
  DEFAULT_PORT,
  type ServerOptions,
  type StartServerOptions,
} from './options.js';
import { PathGuard } from './paths.js';
import { TrainingRunSupervisor } from './training-run.js';

/** A server that listens, from {@link startServer}. */
export interface StartedServer {
  /** The fastify instance. */
  app: FastifyInstance;
  /** Base URL, for example `http://127.0.0.1:7860`. */
  url: string;
  /** Stops an active run (waiting for its final checkpoint), ends event streams and closes the server. */
  close(): Promise<void>;
}

/**
 * Creates the fastify application of the HTTP API and the dashboard, without listening. Use
 * `app.inject()` to call it in tests, or `app.listen()`; {@link startServer} does both checks and
 * listening.
 *
 * Throws an ArgumentError at once for invalid token, body-limit and timeout options. Root folders
 * are resolved when the application becomes ready (`app.ready()`, the first `inject` or
 * `listen`), which rejects when a root does not exist.
 */
export function createServer(options: ServerOptions = {}): FastifyInstance {
  const checked = checkServerOptions(options);
  const app = fastify({
    logger: options.logger ?? true,
    bodyLimit: checked.bodyLimit,
    // Open keep-alive connections must not hold `close()` open; event streams are ended in preClose.
    forceCloseConnections: true,
  });

  const supervisor = new TrainingRunSupervisor(app.log);
  const streams = new EventStreams();

  app.setReplySerializer((payload) => encodeJson(payload));
  app.setErrorHandler((error, request, reply) => {
    const apiError = toApiError(error);
    if (apiError.statusCode >= 500) {
      request.log.error({ err: error }, 'Request failed');
    }
    if (apiError.statusCode === 401) {
      reply.header('www-authenticate', 'Bearer');
    }
    return reply.code(apiError.statusCode).send(apiError.toBody());
  });
  app.setNotFoundHandler((request, reply) => {
    const error = new ApiError(404, 'NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0]}. The API lives under /nested-learning/.`);
    return reply.code(404).send(error.toBody());
  });

  app.addHook('onRequest', async (request) => {
    if (!checked.allowRemote && !isLoopbackHostHeader(request.headers.host)) {
      throw new ApiError(
        403,
        'HOST_NOT_ALLOWED',
        `Host ${JSON.stringify(request.headers.host)} is not a loopback name; this server accepts 127.0.0.1, [::1] and localhost only. ` +
          'Start it with allowRemote and a token to serve other hosts.',
      );
    }
    if (checked.token !== undefined && request.url.startsWith('/nested-learning/') && !hasToken(request.headers.authorization, checked.token)) {
      throw new ApiError(401, 'UNAUTHORIZED', 'Missing or wrong bearer token: send the header "Authorization: Bearer <token>".');
    }
  });

  app.addHook('preClose', async () => {
    streams.endAll();
    await supervisor.shutdown(checked.shutdownTimeoutSeconds);
  });

  registerDashboardRoutes(app);
  registerEventsRoute(app, supervisor, streams);
  app.register(async (instance) => {
    const resolved = await resolveServerOptions(options);
    const guard = new PathGuard(resolved.roots, resolved.baseDir);
    registerApiRoutes(instance, { options: resolved, guard, supervisor });
    app.log.info({ roots: resolved.roots, outputDir: resolved.outputDir }, 'nested-learning server ready');
  });

  return app;
}

/**
 * Creates the server and listens on `host:port` (default 127.0.0.1:7860). A non-loopback host
 * needs `allowRemote: true` and a `token`; otherwise this throws an ArgumentError before
 * listening.
 */
export async function startServer(options: StartServerOptions = {}): Promise<StartedServer> {
  const host = options.host ?? DEFAULT_HOST;
  checkListenHost(host, options);
  const app = createServer(options);
  await app.listen({ host, port: options.port ?? DEFAULT_PORT });

  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : (options.port ?? DEFAULT_PORT);
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return { app, url: `http://${urlHost}:${port}`, close: () => app.close() };
}

function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) {
    return error;
  }
  const fastifyError = error as Partial<FastifyError>;
  const statusCode = fastifyError.statusCode;
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
    // fastify's own client errors: invalid JSON (400), body too large (413), unsupported media type (415).
    return new ApiError(statusCode, fastifyError.code ?? 'BAD_REQUEST', fastifyError.message ?? 'Bad request.');
  }
  return new ApiError(500, 'INTERNAL_ERROR', `The server failed to handle the request: ${(error as Error).message ?? String(error)}`);
}

function isLoopbackHostHeader(header: string | undefined): boolean {
  if (header === undefined) {
    return true;
  }
  const host = header.startsWith('[') ? header.slice(0, header.indexOf(']') + 1) : header.split(':')[0] ?? '';
  return isLoopbackHost(host);
}

function hasToken(authorization: string | undefined, token: string): boolean {
  const match = /^Bearer (.+)$/i.exec(authorization ?? '');
  if (match === null) {
    return false;
  }
  const received = Buffer.from(match[1] as string);
  const expected = Buffer.from(token);
  return received.length === expected.length && timingSafeEqual(received, expected);
}

/**
 * `GET /nested-learning/events`: server-sent events of the run. A new connection first gets a
 * `status` event with the current snapshot, then every run event as it happens (`status`,
 * `step`, `eval`, `checkpoint`, `done`, `error`), and a comment line every 15 seconds that keeps
 * proxies from closing an idle stream.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';

import { encodeJson } from './json.js';
import type { RunEvent, TrainingRunSupervisor } from './training-run.js';

const HEARTBEAT_MS = 15_000;

/** The open event streams, so that closing the server can end them. */
export class EventStreams {
  private readonly open = new Set<ServerResponse>();

  add(response: ServerResponse): void {
    this.open.add(response);
  }

  delete(response: ServerResponse): void {
    this.open.delete(response);
  }

  /** Number of open streams. */
  get size(): number {
    return this.open.size;
  }

  /** Ends every open stream. */
  endAll(): void {
    for (const response of this.open) {
      response.end();
    }
    this.open.clear();
  }
}

/** Registers the event stream endpoint. */
export function registerEventsRoute(app: FastifyInstance, supervisor: TrainingRunSupervisor, streams: EventStreams): void {
  app.get('/nested-learning/events', (request, reply) => {
    reply.hijack();
    const response = reply.raw;
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // Tells nginx-style proxies not to buffer the stream.
      'x-accel-buffering': 'no',
    });

    let sequence = 0;
    const send = (event: RunEvent): void => {
      sequence += 1;
      response.write(`id: ${sequence}\nevent: ${event.type}\ndata: ${encodeJson(event.data)}\n\n`);
    };

    send({ type: 'status', data: supervisor.snapshot() });
    const unsubscribe = supervisor.subscribe(send);
    const heartbeat = setInterval(() => response.write(': keep-alive\n\n'), HEARTBEAT_MS);
    streams.add(response);

    const close = (): void => {
      clearInterval(heartbeat);
      unsubscribe();
      streams.delete(response);
    };
    request.raw.once('close', close);
    response.once('close', close);
  });
}

export * from './lr-schedule.js';
export * from './events.js';

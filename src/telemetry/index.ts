// Public surface of telemetry. Only the energy meters exist so far; metric windows and the MQTT
// publisher/outbox (design step 6) will be exported from here too.
export * from './energy/index.js';

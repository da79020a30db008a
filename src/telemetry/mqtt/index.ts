// MQTT side of telemetry: the adapter over MQTT.js and the device publisher built on it.
export * from './client.js';
export * from './publisher.js';

// Public surface of telemetry (design step 6): the device session (startDeviceTelemetry for a
// loaded bundle, DeviceTelemetry underneath), energy meters, the wire format (payload schemas
// and topics), the persistent outbox, the MQTT connection and publisher, and the metric windows.
// Helpers the collector shares with the device (size checks, id checks, sysfs readers) stay
// internal: import them from their files inside this repository.
export { startDeviceTelemetry, type StartTelemetryOptions } from './session.js';
export { DeviceTelemetry, DEFAULT_FLEET, DEFAULT_DRAIN_MS, describeSummary, type DeviceTelemetryOptions, type TelemetrySummary, type TlsFiles } from './device.js';
export {
  detectEnergyMeter,
  ENERGY_METERS,
  ENERGY_DETECT_ORDER,
  type DetectOptions,
  type DetectProfile,
  type DetectResult,
  type SensorKind,
} from './energy/detect.js';
export { EnergySensorError, type EnergyMeter, type EnergyMeterKind, type EnergyReading, type EnergySource, type MeterOptions } from './energy/meter.js';
export { PowerModelMeter, type PowerModel, type PowerModelOptions } from './energy/model.js';
export { Ina3221IioMeter, Ina3221HwmonMeter, type Ina3221IioOptions, type Ina3221HwmonOptions } from './energy/jetson.js';
export { Rpi5PmicMeter, type Rpi5PmicOptions } from './energy/rpi5.js';
export { RaplMeter, type RaplOptions } from './energy/rapl.js';
export { NvidiaSmiMeter, type NvidiaSmiOptions } from './energy/nvidia.js';
export {
  BirthSchema,
  DeathSchema,
  MetricsWindowSchema,
  MetricsWindowBodySchema,
  PAYLOAD_SCHEMAS,
  MAX_PAYLOAD_BYTES,
  TOPIC_ROOT,
  PayloadTooLargeError,
  validatePayload,
  validateMetricsBody,
  encodePayload,
  decodePayload,
  topicFor,
  parseTopic,
  subscriptionFor,
  AckSchema,
  MAX_ACK_IDS,
  decodeAck,
  type Ack,
  type Birth,
  type Death,
  type MetricsWindow,
  type MetricsWindowBody,
  type PayloadKind,
  type PayloadOf,
  type TopicKind,
  type ParsedTopic,
} from './payloads.js';
export { Outbox, type OutboxOptions, type OutboxEntry, type OutboxRecovery } from './outbox.js';
export { connectMqtt, MqttConnectionError, type MqttConnection, type MqttConnectOptions, type MqttMessage, type MqttProperties, type MqttTls } from './mqtt/client.js';
export {
  TelemetryPublisher,
  backoffDelay,
  DEFAULT_BACKOFF,
  type Backoff,
  type BirthInfo,
  type PublisherOptions,
  type PublisherStats,
  type WindowInput,
} from './mqtt/publisher.js';
export {
  WindowAggregator,
  BusyTime,
  thermalReader,
  DEFAULT_WINDOW_MS,
  DEFAULT_WINDOW_MAX_COUNT,
  type InferenceRecord,
  type WindowAggregatorOptions,
} from './window.js';

// Public surface of the energy meters: the contract, the implementations, the integrator and
// the detection registry.
export * from './meter.js';
export * from './integrate.js';
export * from './jetson.js';
export * from './rpi5.js';
export * from './rapl.js';
export * from './nvidia.js';
export * from './model.js';
export * from './detect.js';
export { readNumber, globDirs } from './sysfs.js';

// Public surface of the device-profile module: the schema and its types, the loader, and the
// registry tables the schema's enumerations come from.
export * from './schema.js';
export * from './registry.js';
export {
  DEVICE_SCHEMA_FILE,
  devicesDir,
  findPackageRoot,
  listDeviceProfiles,
  loadDeviceProfile,
  packageRoot,
  parseDeviceProfile,
  validateDeviceProfile,
  writeDeviceProfileJsonSchema,
} from './load.js';

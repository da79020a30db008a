// Public surface of the runtime, the device library: load a verified bundle and classify images,
// raw pixels or tensors through its early-exit cascade (or a CBNet run order). Loads no compiler,
// calibration or fleet module.
export {
  loadBundle,
  DEFAULT_BATCH_SIZE,
  type BundleRunner,
  type LoadBundleOptions,
  type ClassifyOptions,
  type ClassifyItem,
  type ClassifyResult,
  type Prediction,
  type FailedInput,
} from './bundle-runner.js';
export { CBNET_POLICIES, type CbnetPolicy, type CbnetRunName, type CbnetRun } from './cbnet-cascade.js';
export { EXIT_POLICIES, exitPolicy, softmax, type ExitPolicyInfo } from './exit-policy.js';
export type { ImageInput, RawPixels, TensorData } from '../backends/image.js';

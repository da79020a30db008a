// Public entry point of the compiler: prepare and split a float ONNX model into early-exit stages,
// check them against the source, quantise them to int8 (src/compiler/quantize), and pack them with a manifest and signature into a bundle.
export {
  compileModel,
  parseLabelsText,
  edgeexitVersion,
  PRECISIONS,
  SUPPORTED_PRECISIONS,
  DEFAULT_CALIBRATION,
  DEFAULT_CALIBRATION_METHOD,
  DEFAULT_MAX_ACCURACY_DROP,
  AccuracyDropError,
  type CompileOptions,
  type CompileResult,
  type CompileReport,
  type StageReport,
  type QuantizationReport,
  type Precision,
} from './compile.js';
export { compileCbnet, isCbnetFolder, CBNET_FILES, type CbnetReport } from './cbnet.js';
export { measureStageLatency, median, LATENCY_NOTE, DEFAULT_LATENCY_RUNS, type LatencyReport, type StageLatency, type LatencyStage } from './latency.js';
export * as quantize from './quantize/index.js';
export { CALIBRATION_METHODS, type CalibrationMethod } from './quantize/index.js';
export { prepareModel, countOps, type PrepareReport } from './prepare.js';
export { splitModel, chooseRecompute, resolveExits, type SplitResult, type StagePlan, type SplitOptions } from './split.js';
export { checkStages, StageRunner, randomImages, CheckFailedError, type CheckResult, type CheckSet, type CheckStage, type ExitComparison, type CheckOptions } from './check.js';
export {
  ManifestSchema,
  CbnetPipelineSchema,
  CBNET_EXIT_POINTS,
  SignatureSchema,
  MANIFEST_FILE,
  SIGNATURE_FILE,
  REPORT_FILE,
  MANIFEST_FORMAT_VERSION,
  parseManifest,
  validateManifest,
  encodeManifest,
  parseSignature,
  manifestJsonSchema,
  type Manifest,
  type ManifestInput,
  type ManifestStage,
  type CbnetPipeline,
  type CbnetExitPoint,
  type SignatureFile,
} from './manifest.js';
export {
  writeBundleAtomic,
  checkBundleTarget,
  loadBundleFiles,
  verifyBundle,
  verifyLoadedBundle,
  packBundle,
  sha256Hex,
  BundleIntegrityError,
  type LoadedBundle,
  type VerifyOptions,
  type VerifyResult,
  type VerifiedFile,
  type WriteBundleOptions,
} from './bundle.js';
export { generateKeyPair, loadPrivateKey, loadPublicKey, signManifest, checkSignature, keyId, PRIVATE_KEY_SUFFIX, PUBLIC_KEY_SUFFIX, type KeyPairFiles } from './signing.js';
export { writeTar, readTar, looksLikeTar, type TarEntry } from './tar.js';

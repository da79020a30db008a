// The bundle format: manifest schema, reading and verification, signing, tar archives, the
// preprocess spec and the exit metric names. Below both the compiler (which writes bundles) and
// the runtime (which reads them).
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
  type ManifestGolden,
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
} from './files.js';
export { generateKeyPair, loadPrivateKey, loadPublicKey, signManifest, checkSignature, keyId, PRIVATE_KEY_SUFFIX, PUBLIC_KEY_SUFFIX, type KeyPairFiles } from './signing.js';
export { defaultTrustDir, loadTrustStore, lookupKey, addTrustedKey, revokeKey, resolveKeyId, TRUST_DIR_ENV, REVOKED_FILE, type TrustStore, type TrustedKey, type RevokedKey, type TrustLookup } from './trust.js';
export { DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE, blockHashes, blockCount, listedFiles, withBlockHashes } from './blocks.js';
export { writeTar, readTar, looksLikeTar, type TarEntry } from './tar.js';
export { EXIT_METRICS, EXIT_METRIC_INFO, type ExitMetric, type ExitMetricInfo } from './exit-metrics.js';
export { MAX_PREPROCESS_SIDE, RESIZE_POLICIES, channelsOf, parsePreprocessSpec, type ColorSpace, type PreprocessSpec, type ResizePolicy } from './preprocess.js';
export { edgeexitVersion } from './version.js';
export { GOLDEN_FILE, encodeGolden, decodeGolden, runGoldenChain, compareGolden, type GoldenTensor, type GoldenRecord, type GoldenStageRun, type ChainTensor } from './golden.js';

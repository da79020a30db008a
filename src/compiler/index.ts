// Public entry point of the compiler: prepare and split a float ONNX model into early-exit stages,
// check them against the source, quantise them (src/compiler/quantize), and write them as a bundle
// (the format itself is src/bundle). Model families (multi-exit, CBNet) plan the stages; one
// pipeline (pipeline.ts) does the rest for all of them.
export { compileModel, compileCbnet, compileWith } from './compile.js';
export {
  PRECISIONS,
  SUPPORTED_PRECISIONS,
  DEFAULT_CALIBRATION,
  DEFAULT_CALIBRATION_METHOD,
  DEFAULT_MAX_ACCURACY_DROP,
  FP16_TOLERANCE,
  AccuracyDropError,
  type CompileOptions,
  type CompileResult,
  type CompileReport,
  type StageReport,
  type QuantizationReport,
  type Precision,
  type CbnetReport,
  type Fp16Report,
} from './options.js';
export { parseLabelsText } from './inputs.js';
export { FAMILIES, familyOf, cbnetFamily, multiExitFamily, isCbnetFolder, CBNET_FILES, type ModelFamily, type FamilyPlan, type StagesPlan, type CompileEnv } from './families/index.js';
export { compilePlan, compileStages, type CompiledStages } from './pipeline.js';
export { measureStageLatency, median, LATENCY_NOTE, DEFAULT_LATENCY_RUNS, type LatencyReport, type StageLatency, type LatencyStage } from './latency.js';
export * as quantize from './quantize/index.js';
export { CALIBRATION_METHODS, type CalibrationMethod } from './quantize/index.js';
export { prepareModel, countOps, type PrepareReport } from './prepare.js';
export { splitModel, chooseRecompute, resolveExits, type SplitResult, type StagePlan, type SplitOptions } from './split.js';
export { checkStages, StageRunner, randomImages, CheckFailedError, type CheckResult, type CheckSet, type CheckStage, type ExitComparison, type CheckOptions } from './check.js';
export { checkModelContract, contractInputOf, contractNotes, looksLikeProbabilities, type ContractFinding, type ContractInput, type ContractRule, type ContractSample } from './contract.js';

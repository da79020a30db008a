// Public entry point of int8 quantisation: calibrate float stages, rewrite them as QDQ models for
// a device's quantisation scheme, verify per exit and keep sensitive nodes float when needed.
export { roundHalfEven, qRange, computeScaleZp, activationQParams, quantizeValue, dequantizeValue, quantizeWeight, quantizeBias, resolveScheme, type QParams, type QType, type QuantScheme } from './qparams.js';
export { CALIBRATION_METHODS, calibrateStages, loadCalibrationImages, augmentOutputs, rangeOf, type CalibrationMethod, type CalibrationData, type CalibrationResult, type CalibrationOptions, type CalibStage, type StageRanges } from './calibrate.js';
export { quantizeStage, MIN_QDQ_OPSET, type QuantizeStageOptions, type QuantizeStageReport, type NodeQuantInfo } from './qdq.js';
export { quantizeWithBudget, compareExit, type QuantStage, type ExitVerification, type KeptFloat, type QuantizeResult, type QuantizeOptions, type QuantVerifier } from './mixed.js';
export { calibrationTensors, WEIGHTED_OPS, ACTIVATION_OPS, PASS_THROUGH_OPS } from './ops.js';

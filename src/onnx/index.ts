// Public entry point of edgeexit's ONNX layer: file codec, tensors, graph index, subgraph
// extraction, shape inference and cost. The generated protobuf types are re-exported for the
// few callers that need a field the helpers do not cover.
export {
  OnnxModel,
  readModel,
  decodeModel,
  writeModel,
  encodeModel,
  encodeModelWithExternalData,
  allTensors,
  type DecodeOptions,
  type ReadOptions,
  type WriteOptions,
  type ExternalDataOptions,
  type ExternalTensorRef,
  type TensorSite,
} from './model.js';
export {
  tensorToArray,
  decodeTensor,
  arrayToTensor,
  tensorDims,
  tensorDType,
  tensorRawBytes,
  elementCount,
  isExternal,
  float16ToFloat32,
  float32ToFloat16,
  float16BitsToNumber,
  numberToFloat16Bits,
  bfloat16ToFloat32,
  float32ToBfloat16,
  float8ToFloat32,
  float8CodeToNumber,
  toFloat32,
  type TensorValue,
  type Float8DType,
} from './tensor.js';
export {
  DataType,
  DTYPES,
  DTYPE_NAMES,
  dtypeFromCode,
  dtypeCode,
  dtypeBits,
  describeDType,
  isDTypeName,
  rawByteLength,
  type DTypeName,
  type DTypeArrayMap,
  type TensorArray,
} from './dtype.js';
export {
  OnnxGraph,
  getAttribute,
  attrInt,
  attrInts,
  attrFloat,
  attrFloats,
  attrString,
  attrTensor,
  type GraphNode,
} from './graph.js';
export { extractSubgraph, type ExtractOptions } from './extract.js';
export { inferShapes, broadcastShapes, valueInfoShape, type ShapeOptions, type ShapeResult, type TensorShapeInfo } from './shapes.js';
export {
  modelCost,
  nodeCosts,
  costPerOutput,
  parameterCount,
  opHistogram,
  type ModelCost,
  type NodeCost,
  type OutputCost,
} from './cost.js';
export type {
  ModelProto,
  GraphProto,
  NodeProto,
  TensorProto,
  AttributeProto,
  ValueInfoProto,
  TypeProto,
  SparseTensorProto,
  FunctionProto,
} from './gen/onnx_pb.js';

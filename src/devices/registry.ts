// Reference tables that device profiles point into: execution providers, int8 quantisation
// schemes, energy sensors, device kinds and precisions. They are data, kept apart from the
// schema so that the compiler, the runtime and the docs read the same facts the validator
// enforces; the schema's enums are the keys of these tables, so adding a row here is the only
// step needed to allow a new value in `devices/*.json`.

/** Platforms onnxruntime-node ships prebuilt binaries for (`${process.platform}-${process.arch}`). */
export const ORT_NODE_PLATFORMS = ['linux-x64', 'linux-arm64', 'darwin-x64', 'darwin-arm64', 'win32-x64', 'win32-arm64'] as const;
export type OrtNodePlatform = (typeof ORT_NODE_PLATFORMS)[number];

/**
 * How an execution provider reaches an onnxruntime-node 1.30 install on one platform:
 * - `bundled`: inside the npm tarball, works after `npm install`;
 * - `cuda-download`: the provider library is fetched from NuGet by the package's postinstall
 *   (denied in package.json's allowScripts; README "GPU" runs it by hand) and needs CUDA 12 / cuDNN 9 (and TensorRT
 *   for `tensorrt`) on the machine at run time;
 * - `source-build`: only with onnxruntime-node built from source against the local SDK (this
 *   is the Jetson case: no prebuilt linux-arm64 CUDA/TensorRT binding exists);
 * - `none`: the Node binding cannot use it at all.
 */
export type OrtNodeAvailability = 'bundled' | 'cuda-download' | 'source-build' | 'none';

export interface ExecutionProviderInfo {
  /** Name passed in `InferenceSession.create(..., { executionProviders: [name] })`. */
  ortNodeName: string;
  /** onnxruntime's internal provider name, as printed in its logs and errors. */
  ortProviderName: string;
  /** Where the provider computes. */
  device: 'cpu' | 'gpu';
  /** Availability per platform in onnxruntime-node 1.30 (see OrtNodeAvailability). */
  onnxruntimeNode: Record<OrtNodePlatform, OrtNodeAvailability>;
  /** Key of the provider to try next when this one cannot be created; `null` ends the chain. */
  fallback: ExecutionProviderKey | null;
  note: string;
}

const allNone: Record<OrtNodePlatform, OrtNodeAvailability> = {
  'linux-x64': 'none',
  'linux-arm64': 'none',
  'darwin-x64': 'none',
  'darwin-arm64': 'none',
  'win32-x64': 'none',
  'win32-arm64': 'none',
};

// Sources for the availability columns: onnxruntime-node 1.30 README ("EPs/Platforms" table),
// its script/install-metadata.js (only linux/x64 downloads the `cuda12` manifest, which holds
// libonnxruntime_providers_{cuda,tensorrt,shared}.so), `listSupportedBackends()` on linux-x64
// ([cpu bundled, webgpu bundled, cuda not bundled, tensorrt not bundled]) and
// js/node/src/session_options_helper.cc, whose ParseExecutionProviders has branches for cpu,
// cuda, tensorrt, dml, webgpu, coreml and qnn only.
export const EXECUTION_PROVIDERS = {
  cpu: {
    ortNodeName: 'cpu',
    ortProviderName: 'CPUExecutionProvider',
    device: 'cpu',
    onnxruntimeNode: {
      'linux-x64': 'bundled',
      'linux-arm64': 'bundled',
      'darwin-x64': 'bundled',
      'darwin-arm64': 'bundled',
      'win32-x64': 'bundled',
      'win32-arm64': 'bundled',
    },
    fallback: null,
    note: 'MLAS kernels; always present, the end of every fallback chain.',
  },
  webgpu: {
    ortNodeName: 'webgpu',
    ortProviderName: 'WebGpuExecutionProvider',
    device: 'gpu',
    onnxruntimeNode: {
      ...allNone,
      'linux-x64': 'bundled',
      'darwin-x64': 'bundled',
      'darwin-arm64': 'bundled',
      'win32-x64': 'bundled',
      'win32-arm64': 'bundled',
    },
    fallback: 'cpu',
    note: 'Experimental in onnxruntime-node (Dawn; needs Vulkan on Linux). Not in the linux-arm64 prebuilt, so not on Raspberry Pi or Jetson.',
  },
  cuda: {
    ortNodeName: 'cuda',
    ortProviderName: 'CUDAExecutionProvider',
    device: 'gpu',
    onnxruntimeNode: { ...allNone, 'linux-x64': 'cuda-download', 'linux-arm64': 'source-build' },
    fallback: 'cpu',
    note: 'linux-x64: provider library downloaded at install time (CUDA 12). Jetson: only with onnxruntime built from source against JetPack CUDA.',
  },
  tensorrt: {
    ortNodeName: 'tensorrt',
    ortProviderName: 'TensorrtExecutionProvider',
    device: 'gpu',
    onnxruntimeNode: { ...allNone, 'linux-x64': 'cuda-download', 'linux-arm64': 'source-build' },
    fallback: 'cuda',
    note: 'Needs the TensorRT libraries on the machine as well as CUDA; nodes TensorRT cannot take fall back to CUDA, then CPU. int8 requires symmetric quantisation (see QUANT_SCHEMES).',
  },
  dml: {
    ortNodeName: 'dml',
    ortProviderName: 'DmlExecutionProvider',
    device: 'gpu',
    onnxruntimeNode: { ...allNone, 'win32-x64': 'bundled', 'win32-arm64': 'bundled' },
    fallback: 'cpu',
    note: 'DirectML, Windows only.',
  },
  coreml: {
    ortNodeName: 'coreml',
    ortProviderName: 'CoreMLExecutionProvider',
    device: 'gpu',
    onnxruntimeNode: { ...allNone, 'darwin-x64': 'bundled', 'darwin-arm64': 'bundled' },
    fallback: 'cpu',
    note: 'macOS only; may place work on the GPU or the Neural Engine.',
  },
  xnnpack: {
    ortNodeName: 'xnnpack',
    ortProviderName: 'XnnpackExecutionProvider',
    device: 'cpu',
    onnxruntimeNode: allNone,
    fallback: 'cpu',
    note: 'Not usable from onnxruntime-node: its binding has no xnnpack branch (InferenceSession.create answers "backend not found"). Listed for onnxruntime-web / mobile targets; a profile that lists it falls back to cpu under Node.',
  },
} as const satisfies Record<string, Omit<ExecutionProviderInfo, 'fallback'> & { fallback: string | null }>;

export type ExecutionProviderKey = keyof typeof EXECUTION_PROVIDERS;

/** The fallback chain starting at `key`, e.g. tensorrt → cuda → cpu. */
export function fallbackChain(key: ExecutionProviderKey): ExecutionProviderKey[] {
  const chain: ExecutionProviderKey[] = [];
  let k: ExecutionProviderKey | null = key;
  while (k !== null && !chain.includes(k)) {
    chain.push(k);
    k = EXECUTION_PROVIDERS[k].fallback;
  }
  return chain;
}

/**
 * How `key` reaches onnxruntime-node on a platform (default: the running one). Lets the runtime
 * explain a fallback ("cuda needs the CUDA download on linux-x64") instead of failing silently.
 */
export function ortNodeAvailability(key: ExecutionProviderKey, platform: string = `${process.platform}-${process.arch}`): OrtNodeAvailability {
  const table: Record<OrtNodePlatform, OrtNodeAvailability> = EXECUTION_PROVIDERS[key].onnxruntimeNode;
  return (ORT_NODE_PLATFORMS as readonly string[]).includes(platform) ? table[platform as OrtNodePlatform] : 'none';
}

export interface QuantSchemeInfo {
  summary: string;
  /** Signedness and symmetry of activations (symmetric ⇒ activation zero-point 0). */
  activations: { type: 'uint8' | 'int8'; symmetric: boolean };
  /** Signedness and symmetry of weights. */
  weights: { type: 'int8'; symmetric: boolean };
  /** Weights get one scale per output channel. */
  perChannel: boolean;
  /** Weights use 7 bits so that VPMADDUBSW's int16 intermediate cannot saturate. */
  reduceRange: boolean;
  /** Every zero-point is forced to 0 (the model is rejected by the target otherwise). */
  zeroPointsZero: boolean;
  /** Execution providers the scheme is meant for. */
  executionProviders: readonly ExecutionProviderKey[];
  /** CPU architectures it is meant for when it targets the cpu provider. */
  cpuArch: readonly ('arm64' | 'x64')[];
  /** Arguments for onnxruntime.quantization.quantize_static (Python) that produce it. */
  ortQuantizeStatic: {
    quant_format: 'QDQ';
    activation_type: 'QUInt8' | 'QInt8';
    weight_type: 'QInt8';
    per_channel: boolean;
    reduce_range: boolean;
    extra_options: { ActivationSymmetric: boolean; WeightSymmetric: boolean };
  };
  cite: string;
}

const ORT_QUANT_DOC = 'https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html';

export const QUANT_SCHEMES = {
  's8s8-qdq': {
    summary: 'Signed int8 activations and weights in QDQ format; onnxruntime\'s default and first choice on CPU, the natural fit for Arm (SDOT/SMMLA are signed).',
    activations: { type: 'int8', symmetric: false },
    weights: { type: 'int8', symmetric: true },
    perChannel: true,
    reduceRange: false,
    zeroPointsZero: false,
    executionProviders: ['cpu'],
    cpuArch: ['arm64', 'x64'],
    ortQuantizeStatic: {
      quant_format: 'QDQ',
      activation_type: 'QInt8',
      weight_type: 'QInt8',
      per_channel: true,
      reduce_range: false,
      extra_options: { ActivationSymmetric: false, WeightSymmetric: true },
    },
    cite: `${ORT_QUANT_DOC} (Data type selection: "S8S8 with QDQ is the default setting and balances performance and accuracy. It should be the first choice."; no saturation issue on Arm)`,
  },
  'u8s8-reduce-range-qdq': {
    summary: 'uint8 activations, int8 weights quantised to 7 bits, for x86 AVX2/AVX512 without VNNI where U8S8 goes through VPMADDUBSW and can saturate int16.',
    activations: { type: 'uint8', symmetric: false },
    weights: { type: 'int8', symmetric: true },
    perChannel: true,
    reduceRange: true,
    zeroPointsZero: false,
    executionProviders: ['cpu'],
    cpuArch: ['x64'],
    ortQuantizeStatic: {
      quant_format: 'QDQ',
      activation_type: 'QUInt8',
      weight_type: 'QInt8',
      per_channel: true,
      reduce_range: true,
      extra_options: { ActivationSymmetric: false, WeightSymmetric: true },
    },
    cite: `${ORT_QUANT_DOC} (FAQ "When to use reduce-range and per-channel quantization?": reduce-range is designed for U8S8 on AVX2 and AVX512 (non-VNNI) machines; with per-channel on AVX2/AVX512 enable reduce-range too)`,
  },
  'u8s8-qdq': {
    summary: 'uint8 activations, full 8-bit int8 weights, for x86 with VNNI (VPDPBUSD accumulates in int32, so no saturation).',
    activations: { type: 'uint8', symmetric: false },
    weights: { type: 'int8', symmetric: true },
    perChannel: true,
    reduceRange: false,
    zeroPointsZero: false,
    executionProviders: ['cpu'],
    cpuArch: ['x64'],
    ortQuantizeStatic: {
      quant_format: 'QDQ',
      activation_type: 'QUInt8',
      weight_type: 'QInt8',
      per_channel: true,
      reduce_range: false,
      extra_options: { ActivationSymmetric: false, WeightSymmetric: true },
    },
    cite: `${ORT_QUANT_DOC} (the VPMADDUBSW saturation issue does not occur on x64 with VNNI; reduce-range "is not needed on machines supporting VNNI")`,
  },
  'symmetric-s8-qdq': {
    summary: 'Signed int8 activations and weights, both symmetric (every zero-point 0), per-channel weights: what TensorRT accepts for explicit (Q/DQ) int8.',
    activations: { type: 'int8', symmetric: true },
    weights: { type: 'int8', symmetric: true },
    perChannel: true,
    reduceRange: false,
    zeroPointsZero: true,
    executionProviders: ['tensorrt', 'cuda'],
    cpuArch: [],
    ortQuantizeStatic: {
      quant_format: 'QDQ',
      activation_type: 'QInt8',
      weight_type: 'QInt8',
      per_channel: true,
      reduce_range: false,
      extra_options: { ActivationSymmetric: true, WeightSymmetric: true },
    },
    cite: `${ORT_QUANT_DOC} ("ONNX Runtime quantization on GPU only supports S8S8"); NVIDIA TensorRT Developer Guide, "Working with Quantized Types": TensorRT uses symmetric quantisation, zero-point must be 0 (the ONNX parser rejects others: "TRT only supports symmetric quantization - zeroPt must be all zeros")`,
  },
} as const satisfies Record<string, QuantSchemeInfo>;

export type QuantSchemeKey = keyof typeof QUANT_SCHEMES;

/** What an energy reading covers; decides whether it is comparable with a power model. */
export type EnergyScope = 'board-input' | 'module-input' | 'soc-rails' | 'cpu-package' | 'gpu-board' | 'none';

export interface EnergySensorInfo {
  summary: string;
  /** What the reading covers. */
  scope: EnergyScope;
  /** Device kinds on which the sensor exists. */
  deviceKinds: readonly DeviceKindKey[];
  /** How edgeexit reads it. */
  read: string;
  cite: string;
}

export const ENERGY_SENSORS = {
  'ina3221-iio': {
    summary: 'TI INA3221 3-channel monitor through NVIDIA\'s downstream IIO driver (ina3221x), JetPack 4 / L4T 32.',
    scope: 'module-input',
    deviceKinds: ['jetson'],
    read: '<device>/in_power<N>_input (mW), in_current<N>_input (mA), in_voltage<N>_input (mV), label in rail_name_<N>; N = 0..2',
    cite: 'NVIDIA L4T 32 Developer Guide, "Clock Frequency and Power Management" (software-based power consumption modeling); rail names per energymon/energymon jetson/JetsonPowerRails.md',
  },
  'ina3221-hwmon': {
    summary: 'TI INA3221 through the mainline hwmon driver (ina3221), JetPack 5 and later / L4T 35+.',
    scope: 'module-input',
    deviceKinds: ['jetson'],
    read: '<hwmon>/in<N>_label, in<N>_input (mV), curr<N>_input (mA); power = V·I; N = 1..3; the hwmon<k> number changes across boots, so it is globbed',
    cite: 'Linux kernel Documentation/hwmon/ina3221.rst (sysfs entries); NVIDIA Jetson Linux Developer Guide r35/r36, "Platform Power and Performance", Jetson Orin Nano power monitor',
  },
  'rpi5-pmic': {
    summary: 'Raspberry Pi 5 DA9091 PMIC ADC read with `vcgencmd pmic_read_adc`: per-rail volts and amps of the rails the PMIC generates.',
    scope: 'soc-rails',
    deviceKinds: ['raspberry-pi'],
    read: 'run `vcgencmd pmic_read_adc`, sum V·I over rails that report both; EXT5V_V is the 5 V input voltage only (no input current)',
    cite: 'Raspberry Pi firmware `vcgencmd pmic_read_adc` (Pi 5 only); rail list as documented by pitop (https://pitop.hongjunwu.com/hardware/pi-features)',
  },
  rapl: {
    summary: 'Intel/AMD RAPL package energy counter through the powercap sysfs interface.',
    scope: 'cpu-package',
    deviceKinds: ['x86-host'],
    read: '<energyFile> (µJ, wraps at max_energy_range_uj); root-only on kernels ≥ 5.10 unless permissions are relaxed',
    cite: 'Linux kernel Documentation/power/powercap/powercap.rst',
  },
  nvml: {
    summary: 'NVIDIA Management Library board power of a discrete GPU (nvmlDeviceGetTotalEnergyConsumption / nvidia-smi).',
    scope: 'gpu-board',
    deviceKinds: ['x86-host', 'arm64-host'],
    read: 'nvidia-smi --query-gpu=power.draw or NVML total energy (mJ) for <deviceIndex>',
    cite: 'NVIDIA NVML API Reference, nvmlDeviceGetTotalEnergyConsumption',
  },
  none: {
    summary: 'No on-board energy sensor: energy is estimated from the power model (idle/busy watts × time).',
    scope: 'none',
    deviceKinds: ['raspberry-pi', 'jetson', 'x86-host', 'arm64-host'],
    read: 'nothing to read',
    cite: 'n/a',
  },
} as const satisfies Record<string, EnergySensorInfo>;

export type EnergySensorKey = keyof typeof ENERGY_SENSORS;

export const DEVICE_KINDS = {
  'raspberry-pi': { summary: 'Raspberry Pi single-board computer; CPU-only inference (Arm NEON).' },
  jetson: { summary: 'NVIDIA Jetson module or developer kit; GPU inference through TensorRT/CUDA.' },
  'x86-host': { summary: 'x86-64 workstation, server or VM (build machines, CI, desktop baselines).' },
  'arm64-host': { summary: 'Other 64-bit Arm Linux machine (servers, other SBCs).' },
} as const satisfies Record<string, { summary: string }>;

export type DeviceKindKey = keyof typeof DEVICE_KINDS;

export const PRECISIONS = {
  fp32: { bytes: 4, summary: 'IEEE float32; always available, the fallback of every other precision.' },
  fp16: { bytes: 2, summary: 'IEEE float16; fast on GPUs and on Arm cores with FP16 arithmetic (Armv8.2 FEAT_FP16).' },
  int8: { bytes: 1, summary: '8-bit integer QDQ model; needs a quantisation scheme (QUANT_SCHEMES).' },
} as const satisfies Record<string, { bytes: number; summary: string }>;

export type PrecisionKey = keyof typeof PRECISIONS;

/** Operator classes the cost model prices; every ONNX op the compiler meets maps to one of them. */
export const OP_CLASSES = {
  conv: 'Dense (group = 1) convolution; cost per multiply-accumulate.',
  gemm: 'MatMul / Gemm / fully connected; cost per multiply-accumulate.',
  depthwise: 'Grouped convolution with group = channels; cost per multiply-accumulate (memory-bound).',
  elementwise: 'Add, Mul, activations, pooling, quantise/dequantise; cost per output element.',
} as const;

export type OpClassKey = keyof typeof OP_CLASSES;

/** Keys of a table as a non-empty tuple, the shape `z.enum` wants. */
export function keysOf<T extends Record<string, unknown>>(table: T): [keyof T & string, ...(keyof T & string)[]] {
  const keys = Object.keys(table) as (keyof T & string)[];
  if (keys.length === 0) throw new Error('registry table is empty');
  return keys as [keyof T & string, ...(keyof T & string)[]];
}

// The one definition of a device profile (`devices/<id>.json`). The TypeScript types, the
// defaults, the field documentation (every `.describe()`), the JSON Schema that editors use
// (`devices/device-profile.schema.json`) and the validation rules all come from here, so they
// cannot disagree. Enumerations are the keys of the tables in ./registry.ts.
//
// Cross-field rules (sources cover every number, the cost model prices the default precision,
// the quantisation scheme suits the CPU, …) run even when other fields are broken, so that a
// profile with several mistakes reports all of them in one go.
import { z } from 'zod';
import {
  DEVICE_KINDS,
  ENERGY_SENSORS,
  EXECUTION_PROVIDERS,
  PRECISIONS,
  QUANT_SCHEMES,
  keysOf,
  type ExecutionProviderKey,
  type QuantSchemeKey,
} from './registry.js';

const KEBAB_CASE = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;
const DOTTED_PATH = /^[A-Za-z$][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)*$/;

export const DeviceKindSchema = z.enum(keysOf(DEVICE_KINDS)).describe('Family of the device; decides which energy sensors and checks apply.');
export const ExecutionProviderSchema = z
  .enum(keysOf(EXECUTION_PROVIDERS))
  .describe('onnxruntime execution provider key (see src/devices/registry.ts EXECUTION_PROVIDERS).');
export const PrecisionSchema = z.enum(keysOf(PRECISIONS)).describe('Numeric precision of a compiled model.');
export const QuantSchemeSchema = z
  .enum(keysOf(QUANT_SCHEMES))
  .describe('int8 quantisation scheme key (see src/devices/registry.ts QUANT_SCHEMES).');

const positive = (what: string) => z.number().positive().describe(what);
const nonNegative = (what: string) => z.number().nonnegative().describe(what);

export const CpuIsaSchema = z
  .strictObject({
    neonDotProd: z.boolean().describe('Arm v8.2 dot product (SDOT/UDOT, FEAT_DotProd; `asimddp` in /proc/cpuinfo). Makes int8 GEMM about 4× the fp32 MAC rate.'),
    avx2: z.boolean().describe('x86 AVX2 (`avx2` flag).'),
    avx512: z.boolean().describe('x86 AVX-512 Foundation (`avx512f` flag).'),
    vnni: z.boolean().describe('x86 VNNI, either AVX512_VNNI or AVX-VNNI (`avx512_vnni` / `avx_vnni` flags): int8 dot products without int16 saturation.'),
    fp16Arith: z.boolean().describe('Native half-precision arithmetic: Arm FEAT_FP16 (`asimdhp`) or x86 AVX512-FP16.'),
  })
  .describe('Instruction-set features that change which kernels onnxruntime picks.');

export const CpuSchema = z
  .strictObject({
    arch: z.enum(['arm64', 'x64']).describe('Instruction set architecture, as Node reports it in process.arch.'),
    model: z.string().min(1).describe('Core model, e.g. "Cortex-A72" or the x86 model name.'),
    cores: z.int().min(1).describe('CPU cores available to inference (logical CPUs the OS schedules on).'),
    maxFreqGHz: positive('Maximum sustained core clock in GHz at stock settings.'),
    isa: CpuIsaSchema,
  })
  .describe('The CPU that runs the cpu execution provider and the host side of GPU providers.');

export const GpuSchema = z
  .strictObject({
    name: z.string().min(1).describe('GPU name, e.g. "128-core Maxwell".'),
    architecture: z.string().min(1).describe('NVIDIA architecture generation, e.g. "Maxwell", "Ampere".'),
    cudaCores: z.int().min(1).describe('Number of CUDA cores.'),
    computeCapability: z
      .string()
      .regex(/^\d+\.\d+$/, { error: 'a CUDA compute capability "major.minor" such as "8.7"' })
      .describe('CUDA compute capability "major.minor" (a string, so 8.7 and 8.70 cannot be confused).'),
    tensorCores: z.int().min(0).describe('Number of tensor cores (0 when the architecture has none).'),
  })
  .describe('Integrated or discrete GPU; absent on CPU-only devices.');

export const PowerSchema = z
  .strictObject({
    idleWatts: nonNegative('Power drawn while idle (OS up, no inference), in watts.'),
    busyWatts: nonNegative('Power drawn while inference keeps the compute units busy, in watts; must be ≥ idleWatts.'),
    scope: z
      .enum(['board-input', 'module-input', 'cpu-package', 'wall'])
      .default('board-input')
      .describe('Where the watts are counted: the board\'s DC input, a module\'s input rail (Jetson VDD_IN), the CPU package (RAPL), or at the wall including the power supply.'),
  })
  .superRefine((p, ctx) => {
    // A negative value already has its own problem; comparing it would only repeat it.
    if (p.busyWatts >= 0 && p.busyWatts < p.idleWatts)
      ctx.addIssue({
        code: 'custom',
        path: ['busyWatts'],
        message: 'busyWatts is below idleWatts, but busy power includes idle power',
        params: { expected: `a number >= idleWatts (${p.idleWatts})`, got: String(p.busyWatts), fix: 'swap the two values or re-measure' },
      });
  })
  .describe('Linear power model: P(u) = idleWatts + u·(busyWatts − idleWatts) for utilisation u in [0, 1]. Used for energy when the device has no sensor, and to sanity-check sensor readings.');

const railLabel = z.string().min(1).describe('Rail label as the driver reports it.');

export const EnergySensorSchema = z
  .discriminatedUnion('kind', [
    z
      .strictObject({
        kind: z.literal('ina3221-iio').describe('INA3221 through NVIDIA\'s IIO driver (JetPack 4).'),
        device: z.string().startsWith('/sys/').describe('Absolute sysfs directory of the IIO device, e.g. /sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0.'),
        rails: z
          .array(z.strictObject({ channel: z.int().min(0).max(2).describe('IIO channel N of in_power<N>_input.'), label: railLabel }))
          .min(1)
          .describe('Channels and their rail labels (rail_name_<N>).'),
        inputRail: railLabel.describe('Label of the rail that carries the whole module input; the one energy is integrated from.'),
      })
      .describe('Jetson INA3221, IIO interface (L4T 32).'),
    z
      .strictObject({
        kind: z.literal('ina3221-hwmon').describe('INA3221 through the mainline hwmon driver (JetPack 5+).'),
        hwmonGlob: z.string().startsWith('/sys/').describe('Glob of the hwmon directory; hwmon numbering changes across boots, e.g. /sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon*.'),
        rails: z
          .array(z.strictObject({ channel: z.int().min(1).max(3).describe('hwmon channel N of in<N>_input / curr<N>_input.'), label: railLabel }))
          .min(1)
          .describe('Channels and their rail labels (in<N>_label).'),
        inputRail: railLabel.describe('Label of the rail that carries the whole module input; the one energy is integrated from.'),
      })
      .describe('Jetson INA3221, hwmon interface (L4T 35+).'),
    z
      .strictObject({
        kind: z.literal('rpi5-pmic').describe('Raspberry Pi 5 PMIC ADC.'),
        command: z.array(z.string().min(1)).min(1).describe('Command and arguments that print the rail readings.'),
        inputEstimate: z
          .strictObject({
            scale: positive('Multiplier applied to the summed rail power.'),
            offsetWatts: nonNegative('Watts added after scaling, for loads the PMIC does not see.'),
          })
          .optional()
          .describe('Affine correction from summed rail power to an estimate of board input power; the rails alone under-read it.'),
      })
      .describe('Raspberry Pi 5 `vcgencmd pmic_read_adc` (rails only).'),
    z
      .strictObject({
        kind: z.literal('rapl').describe('Intel/AMD RAPL via powercap.'),
        energyFile: z.string().startsWith('/sys/').describe('Cumulative energy counter in µJ, e.g. /sys/class/powercap/intel-rapl:0/energy_uj.'),
      })
      .describe('CPU package energy counter.'),
    z
      .strictObject({
        kind: z.literal('nvml').describe('NVIDIA NVML board power.'),
        deviceIndex: z.int().min(0).describe('NVML device index.'),
      })
      .describe('Discrete NVIDIA GPU board power.'),
    z
      .strictObject({
        kind: z.literal('none').describe('No sensor; energy comes from the power model.'),
      })
      .describe('No on-board energy sensor.'),
  ])
  .describe('How edgeexit measures energy on the device (see src/devices/registry.ts ENERGY_SENSORS).');

export const OpCostsSchema = z
  .strictObject({
    convNsPerMac: positive('Nanoseconds per multiply-accumulate of a dense (group = 1) convolution.'),
    gemmNsPerMac: positive('Nanoseconds per multiply-accumulate of MatMul / Gemm.'),
    depthwiseNsPerMac: positive('Nanoseconds per multiply-accumulate of a depthwise (group = channels) convolution.'),
    elementwiseNsPerElement: positive('Nanoseconds per output element of elementwise ops (Add, Mul, activations, pooling, Q/DQ).'),
  })
  .describe('Per-op-class costs at one precision.');

export const CostModelSchema = z
  .strictObject({
    executionProvider: ExecutionProviderSchema.describe('Execution provider these costs were measured or estimated for; must be listed in executionProviders.'),
    threads: z.int().min(1).optional().describe('Intra-op thread count the costs hold for; defaults to the profile\'s threads.'),
    overheadMsPerRun: nonNegative('Fixed cost of one session.run() in milliseconds (binding, scheduling, copies), independent of the model.'),
    perPrecision: z
      .strictObject({
        fp32: OpCostsSchema.describe('Costs at fp32 (required: fp32 is every precision\'s fallback).'),
        fp16: OpCostsSchema.optional().describe('Costs at fp16, if the device runs fp16 natively.'),
        int8: OpCostsSchema.optional().describe('Costs at int8 (QDQ), if the device runs int8.'),
      })
      .describe('Costs by precision; must include precision.default.'),
    memoryBandwidthGBs: positive('Memory bandwidth in GB/s counting bytes read plus bytes written (a memcpy rate of X GB/s is 2X here); the source says whether it is measured or a datasheet peak. Bounds memory-bound ops.').optional(),
  })
  .describe('Latency model: ms = overheadMsPerRun + Σ over ops of (MACs or elements) × cost / 1e6.');

export const SourceSchema = z
  .strictObject({
    field: z
      .string()
      .regex(DOTTED_PATH, { error: 'a dotted path into the profile such as "power.busyWatts" or "cpu"' })
      .describe('Dotted path of the field this source supports; a section name (e.g. "cpu") covers every field under it.'),
    cite: z.string().min(1).describe('Where the value comes from: document title, URL, datasheet, or the measurement command.'),
    note: z.string().min(1).optional().describe('How the value was derived; estimates say so ("estimate: …, calibrate with `edgeexit profile` on the board").'),
  })
  .describe('Provenance of one field or section.');

export const PrecisionPolicySchema = z
  .strictObject({
    default: PrecisionSchema.describe('Precision edgeexit compiles for unless told otherwise.'),
    quantScheme: QuantSchemeSchema.describe('Scheme used whenever an int8 model is produced for this device.'),
  })
  .describe('Precision policy.');

/** Sections whose every field must be covered by a `sources` entry. */
export const SOURCED_SECTIONS = ['cpu', 'gpu', 'memoryGiB', 'power', 'energySensor', 'costModel'] as const;

const DeviceProfileObject = z.strictObject({
  $schema: z.string().optional().describe('Path or URL of the JSON Schema, for editors: "./device-profile.schema.json".'),
  id: z
    .string()
    .regex(KEBAB_CASE, { error: 'a kebab-case id such as "rpi4" or "jetson-orin-nano"' })
    .describe('Kebab-case identifier; must equal the file name without ".json".'),
  name: z.string().min(1).describe('Human-readable product name.'),
  kind: DeviceKindSchema,
  cpu: CpuSchema,
  gpu: GpuSchema.optional(),
  memoryGiB: positive('Main memory in GiB (shared with the GPU on Jetson).'),
  executionProviders: z
    .array(ExecutionProviderSchema)
    .min(1)
    .default(['cpu'])
    .describe('Execution providers in order of preference; the first one that can be created is used, then each provider\'s fallback.'),
  threads: z.int().min(1).optional().describe('Default intra-op thread count; defaults to cpu.cores.'),
  precision: PrecisionPolicySchema,
  power: PowerSchema,
  energySensor: EnergySensorSchema,
  costModel: CostModelSchema,
  sources: z
    .array(SourceSchema)
    .min(1)
    .describe('Provenance: each of cpu, gpu, memoryGiB, power, energySensor and costModel needs a source, and every number or true/false fact under them must be covered by one (a source for a section covers all of it).'),
});

type ProfileShape = z.output<typeof DeviceProfileObject>;

export const DeviceProfileSchema = DeviceProfileObject.superRefine(crossFieldChecks, { when: () => true })
  .transform((p) => {
    const threads = p.threads ?? p.cpu.cores;
    return { ...p, threads, costModel: { ...p.costModel, threads: p.costModel.threads ?? threads } };
  })
  .meta({
    title: 'edgeexit device profile',
    description:
      'A device edgeexit compiles for and calibrates against: hardware facts, runtime choices, a power model, an energy sensor and a per-op latency cost model, each number with its source. Generated from src/devices/schema.ts; do not edit by hand.',
  });

/** A validated device profile, with defaults filled in (threads and costModel.threads are set). */
export type DeviceProfile = z.output<typeof DeviceProfileSchema>;
/** A device profile as written in JSON (defaults may be omitted). */
export type DeviceProfileInput = z.input<typeof DeviceProfileSchema>;
export type EnergySensor = z.output<typeof EnergySensorSchema>;
export type CostModel = DeviceProfile['costModel'];
export type OpCosts = z.output<typeof OpCostsSchema>;
export type Source = z.output<typeof SourceSchema>;

/** The JSON Schema of a device profile, as written to devices/device-profile.schema.json. */
export function deviceProfileJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(DeviceProfileSchema, { io: 'input', target: 'draft-2020-12' }) as Record<string, unknown>;
}

/** Exact text of devices/device-profile.schema.json (stable key order, two-space indent, final newline). */
export function deviceProfileJsonSchemaText(): string {
  return JSON.stringify(deviceProfileJsonSchema(), null, 2) + '\n';
}

// ---------------------------------------------------------------------------------------------
// Cross-field rules. They run on possibly invalid input (see `when` above), so they read the
// value defensively and only judge the parts that are well-formed.

type Ctx = z.RefinementCtx<ProfileShape>;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function issue(ctx: Ctx, path: (string | number)[], message: string, expected: string, got: string, fix: string): void {
  ctx.addIssue({ code: 'custom', path, message, params: { expected, got, fix } });
}

/** Dotted paths of the leaves under `value` (arrays count as leaves: sources cite them whole). */
function leafPaths(value: unknown, prefix: string): string[] {
  if (!isRecord(value)) return [prefix];
  const out: string[] = [];
  for (const [k, v] of Object.entries(value)) out.push(...leafPaths(v, `${prefix}.${k}`));
  return out.length ? out : [prefix];
}

function covers(field: string, path: string): boolean {
  return path === field || path.startsWith(field + '.');
}

function crossFieldChecks(raw: ProfileShape, ctx: Ctx): void {
  const p: unknown = raw;
  if (!isRecord(p)) return;
  checkSources(p, ctx);
  checkCpu(p, ctx);
  checkRuntime(p, ctx);
}

function checkSources(p: Record<string, unknown>, ctx: Ctx): void {
  const sources = Array.isArray(p.sources) ? p.sources : [];
  const fields: string[] = [];
  sources.forEach((s, i) => {
    if (!isRecord(s) || typeof s.field !== 'string' || !DOTTED_PATH.test(s.field)) return;
    fields.push(s.field);
    if (!pathExists(p, s.field))
      issue(
        ctx,
        ['sources', i, 'field'],
        'this source names a field the profile does not have',
        `a dotted path to an existing field, e.g. under ${SOURCED_SECTIONS.join(', ')}`,
        JSON.stringify(s.field),
        'fix the spelling of the path or remove the source',
      );
  });
  // A section needs at least one source; inside it, every number and every yes/no fact needs
  // one too. Strings (names, paths, choices) are covered by the section's source.
  const missing: string[] = [];
  for (const section of SOURCED_SECTIONS) {
    if (!(section in p) || p[section] === undefined) continue;
    if (!fields.some((f) => covers(f, section) || covers(section, f))) {
      missing.push(section);
      continue;
    }
    const facts = leafPaths(p[section], section).filter((leaf) => {
      const v = valueAtPath(p, leaf);
      return typeof v === 'number' || typeof v === 'boolean';
    });
    missing.push(...facts.filter((leaf) => !fields.some((f) => covers(f, leaf))));
  }
  if (missing.length)
    issue(
      ctx,
      ['sources'],
      'every section and every number needs a source',
      `a source (field, cite, note) covering ${missing.join(', ')}`,
      'none',
      `add e.g. { "field": "${missing[0]}", "cite": "<datasheet, URL or measurement command>", "note": "<derivation; say 'estimate' if it is one>" }`,
    );
}

function valueAtPath(root: Record<string, unknown>, dotted: string): unknown {
  let cur: unknown = root;
  for (const part of dotted.split('.')) cur = isRecord(cur) ? cur[part] : undefined;
  return cur;
}

function pathExists(root: Record<string, unknown>, dotted: string): boolean {
  let cur: unknown = root;
  for (const part of dotted.split('.')) {
    if (isRecord(cur) && part in cur) cur = cur[part];
    else if (Array.isArray(cur) && /^\d+$/.test(part) && Number(part) < cur.length) cur = cur[Number(part)];
    else return false;
  }
  return true;
}

const X86_ONLY = ['avx2', 'avx512', 'vnni'] as const;

function checkCpu(p: Record<string, unknown>, ctx: Ctx): void {
  const cpu = p.cpu;
  if (!isRecord(cpu) || !isRecord(cpu.isa)) return;
  const isa = cpu.isa;
  if (cpu.arch === 'arm64')
    for (const flag of X86_ONLY)
      if (isa[flag] === true)
        issue(ctx, ['cpu', 'isa', flag], `${flag} is an x86 feature and cpu.arch is arm64`, 'false on arm64', 'true', 'set it to false, or correct cpu.arch');
  if (cpu.arch === 'x64' && isa.neonDotProd === true)
    issue(ctx, ['cpu', 'isa', 'neonDotProd'], 'neonDotProd is an Arm feature and cpu.arch is x64', 'false on x64', 'true', 'set it to false, or correct cpu.arch');
  if (typeof p.threads === 'number' && typeof cpu.cores === 'number' && p.threads > cpu.cores)
    issue(
      ctx,
      ['threads'],
      'more intra-op threads than cores oversubscribes the CPU and makes latency erratic',
      `an integer <= cpu.cores (${cpu.cores})`,
      String(p.threads),
      `set threads to at most ${cpu.cores}, or leave it out to default to cpu.cores`,
    );
}

function checkRuntime(p: Record<string, unknown>, ctx: Ctx): void {
  const rawEps: unknown[] = Array.isArray(p.executionProviders) ? p.executionProviders : ['cpu'];
  const eps = rawEps.filter((e): e is ExecutionProviderKey => typeof e === 'string' && e in EXECUTION_PROVIDERS);
  // With an unknown provider in the list we cannot tell what was meant; rules that depend on
  // the list would only add noise to the problem already reported for it.
  const epsKnown = eps.length === rawEps.length;

  // The EP list is an ordered preference, so a repeat is a typo rather than a choice.
  if (Array.isArray(p.executionProviders)) {
    const list: unknown[] = p.executionProviders;
    list.forEach((ep, i) => {
      if (typeof ep === 'string' && list.indexOf(ep) !== i)
        issue(ctx, ['executionProviders', i], `${ep} is listed twice`, 'each provider at most once', `${JSON.stringify(ep)} again`, 'remove the repeat');
    });
  }

  if (!epsKnown) return;
  const usesGpu = eps.some((ep) => ep === 'cuda' || ep === 'tensorrt');
  if (usesGpu && p.gpu === undefined)
    issue(ctx, ['gpu'], 'cuda/tensorrt are listed but the profile has no gpu', 'a gpu section (name, architecture, cudaCores, computeCapability, tensorCores)', 'nothing', 'add the gpu section or remove cuda/tensorrt from executionProviders');
  else if (p.kind === 'jetson' && p.gpu === undefined)
    issue(ctx, ['gpu'], 'every Jetson has an integrated GPU', 'a gpu section', 'nothing', 'add the gpu section');

  const costModel = p.costModel;
  if (isRecord(costModel)) {
    const ep = costModel.executionProvider;
    if (typeof ep === 'string' && ep in EXECUTION_PROVIDERS && !eps.includes(ep as ExecutionProviderKey))
      issue(ctx, ['costModel', 'executionProvider'], 'the cost model describes a provider the profile does not use', `one of executionProviders: ${eps.join(', ')}`, JSON.stringify(ep), 'measure the cost model on a listed provider, or add the provider to executionProviders');
    const precision = isRecord(p.precision) ? p.precision : undefined;
    const def = precision?.default;
    if (typeof def === 'string' && def in PRECISIONS && isRecord(costModel.perPrecision) && costModel.perPrecision[def] === undefined)
      issue(ctx, ['costModel', 'perPrecision', def], `precision.default is ${def} but the cost model has no ${def} costs`, `costs for ${def}`, 'nothing', `add costModel.perPrecision.${def}, or change precision.default`);
    if (typeof costModel.threads === 'number' && isRecord(p.cpu) && typeof p.cpu.cores === 'number' && costModel.threads > p.cpu.cores)
      issue(ctx, ['costModel', 'threads'], 'more threads than cores', `an integer <= cpu.cores (${p.cpu.cores})`, String(costModel.threads), 'use the thread count the costs were measured with');
  }

  const precision = p.precision;
  if (isRecord(precision) && typeof precision.quantScheme === 'string' && precision.quantScheme in QUANT_SCHEMES) {
    const key = precision.quantScheme as QuantSchemeKey;
    const scheme = QUANT_SCHEMES[key];
    const forEps = scheme.executionProviders as readonly ExecutionProviderKey[];
    const cpu = isRecord(p.cpu) ? p.cpu : undefined;
    const arch = cpu?.arch;
    const isa = isRecord(cpu?.isa) ? cpu.isa : undefined;
    const suitable = (Object.keys(QUANT_SCHEMES) as QuantSchemeKey[]).filter((k) => schemeFits(k, eps, arch, isa));
    if (!schemeFits(key, eps, arch, isa)) {
      let why: string;
      if (!forEps.some((ep) => eps.includes(ep))) why = `${key} is for ${forEps.join('/')}, none of which is in executionProviders`;
      else if (key === 'u8s8-qdq' && isa?.vnni === false) why = 'u8s8-qdq without VNNI goes through VPMADDUBSW, whose int16 intermediate can saturate';
      else why = `${key} is not meant for ${String(arch)} CPUs`;
      issue(ctx, ['precision', 'quantScheme'], why, `a scheme suited to this device: ${suitable.join(', ') || '(none)'}`, JSON.stringify(key), suitable.length ? `use ${JSON.stringify(suitable[0])}` : 'check cpu.arch and executionProviders');
    }
  }

  const sensor = p.energySensor;
  if (isRecord(sensor) && typeof sensor.kind === 'string' && sensor.kind in ENERGY_SENSORS && typeof p.kind === 'string' && p.kind in DEVICE_KINDS) {
    const kinds = ENERGY_SENSORS[sensor.kind as keyof typeof ENERGY_SENSORS].deviceKinds as readonly string[];
    if (!kinds.includes(p.kind))
      issue(ctx, ['energySensor', 'kind'], `there is no ${sensor.kind} sensor on a ${p.kind}`, `one of: ${Object.entries(ENERGY_SENSORS).filter(([, s]) => (s.deviceKinds as readonly string[]).includes(p.kind as string)).map(([k]) => k).join(', ')}`, JSON.stringify(sensor.kind), 'pick the sensor this device has, or "none"');
  }
}

/** Whether a quantisation scheme suits a device's providers and CPU. */
export function schemeFits(key: QuantSchemeKey, eps: readonly ExecutionProviderKey[], arch: unknown, isa: Record<string, unknown> | undefined): boolean {
  const scheme = QUANT_SCHEMES[key];
  const forEps = scheme.executionProviders as readonly ExecutionProviderKey[];
  if (!forEps.some((ep) => eps.includes(ep))) return false;
  if (forEps.includes('cpu')) {
    if (!(scheme.cpuArch as readonly string[]).includes(String(arch))) return false;
    if (key === 'u8s8-qdq' && isa?.vnni === false) return false;
  }
  return true;
}

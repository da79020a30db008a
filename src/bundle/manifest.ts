// The one definition of a bundle's manifest.json (and of manifest.sig, its detached signature).
// The compiler writes it, verify-bundle and the device runtime read it; types, defaults and the
// error messages of every reader come from the zod schemas here, so they cannot drift apart.
// Validation reports every problem at once, each with its JSON path inside the file.
import { z } from 'zod';
import { ValidationError, show, type Problem } from '../util/errors.js';
import { EXIT_METRICS, EXIT_METRIC_INFO } from './exit-metrics.js';
import { MAX_PREPROCESS_SIDE } from './preprocess.js';

export const MANIFEST_FILE = 'manifest.json';
export const SIGNATURE_FILE = 'manifest.sig';
export const REPORT_FILE = 'report.json';
export const MANIFEST_FORMAT_VERSION = 1;

const SHA256 = /^[0-9a-f]{64}$/;
/** Bundle-relative file names: one path segment, no hidden files, nothing a shell or tar mangles. */
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

const sha256 = z.string().regex(SHA256, { error: '64 lowercase hex digits (a SHA-256)' });
const fileName = z
  .string()
  .regex(FILE_NAME, { error: 'a plain file name inside the bundle (letters, digits, . _ -; no folders)' })
  .refine((f) => f !== MANIFEST_FILE && f !== SIGNATURE_FILE, { error: `a file other than ${MANIFEST_FILE} and ${SIGNATURE_FILE}` });
const tensorName = z.string().min(1);

export const PreprocessSchema = z
  .strictObject({
    colorspace: z.enum(['gray', 'rgb']).describe('Colour space the model reads.'),
    size: z.tuple([z.int().positive().max(MAX_PREPROCESS_SIDE), z.int().positive().max(MAX_PREPROCESS_SIDE)]).describe(`[height, width] of the NCHW input, each at most ${MAX_PREPROCESS_SIDE}.`),
    scale: z.number().positive().describe('Pixels (0..255) are multiplied by this first, e.g. 1/255.'),
    mean: z.array(z.number()).min(1).max(3).describe('Subtracted after scaling: one value, or one per channel.'),
    std: z
      .array(z.number().refine((v) => v !== 0, { error: 'non-zero (it divides)' }))
      .min(1)
      .max(3)
      .describe('Divides after the mean: one value, or one per channel.'),
    resize: z
      .enum(['stretch', 'cover', 'contain'])
      .optional()
      .describe('How an image of another aspect ratio is fitted: stretch (default; ignores aspect), cover (scale, centre-crop), contain (scale, letterbox in black).'),
  })
  .describe('x = (pixel × scale − mean[c]) / std[c], NCHW float32.');

export const StageSchema = z
  .strictObject({
    file: fileName.describe('The stage model, next to manifest.json.'),
    sha256: sha256.describe('SHA-256 of the stage file.'),
    bytes: z.int().nonnegative().describe('Size of the stage file.'),
    inputs: z.array(tensorName).min(1).describe('Tensors the stage reads: the image input, or tensors earlier stages handed over.'),
    outputs: z.array(tensorName).min(1).describe('The exit first, then tensors this stage hands to later stages.'),
    exit: tensorName.describe('Name of the exit output (logits) of this stage.'),
    carry: z.array(tensorName).describe('Every tensor still needed after this stage (the hand-over); the runtime may drop the rest.'),
    macs: z.int().nonnegative().describe('Multiply-accumulates per sample added by this stage.'),
  })
  .describe('One stage: a standalone ONNX model ending in one exit.');

/** How a CBNet hybrid or pair reaches an answer: `classifier<-image` runs the light classifier on the image, `classifier<-converter` runs the converter and classifies its output. */
export const CBNET_EXIT_POINTS = ['classifier<-image', 'classifier<-converter'] as const;
/** A deeper backbone stage the hybrid falls through to last: `backbone:<its exit>`. */
export const BACKBONE_POINT_PREFIX = 'backbone:';
export type BackbonePoint = `backbone:${string}`;
export type CbnetExitPoint = (typeof CBNET_EXIT_POINTS)[number] | BackbonePoint;
export function isBackbonePoint(p: string): p is BackbonePoint {
  return p.startsWith(BACKBONE_POINT_PREFIX);
}
const exitPointSchema = z.union([
  z.enum(CBNET_EXIT_POINTS),
  z.templateLiteral([BACKBONE_POINT_PREFIX, z.string().min(1)]).describe('A backbone stage, by its exit: backbone:<exit of a pipeline.backbone stage>'),
]);

export const CbnetPipelineSchema = z
  .strictObject({
    converter: z
      .strictObject({
        stage: z.int().nonnegative().describe('Index into stages of the converter.'),
        input: tensorName.describe('Its input, fed with the preprocessed image.'),
        output: tensorName.describe('The converted image: same dims as the image, already normalised, fed to the classifier as is.'),
      })
      .describe('The converting autoencoder: image → easy image. Its stage "exit" is this output, not logits.'),
    classifier: z
      .strictObject({
        stage: z.int().nonnegative().describe('Index into stages of the light classifier.'),
        input: tensorName.describe('Its input: fed with the image or with the converter output, as the exit point says.'),
        exit: tensorName.describe('Its logits.'),
        inputFrom: z.array(z.enum(['image', 'converter'])).min(1).describe('What the classifier was compiled (and, for int8, calibrated) to read.'),
      })
      .describe('The light classifier (the backbone\'s first stage and exit head).'),
    policies: z
      .strictObject({
        cbnet: z.tuple([z.literal('classifier<-converter')]).describe('Converter, then classifier: always one answer.'),
        hybrid: z
          .array(exitPointSchema)
          .min(1)
          .describe('Exit points in run order: the classifier on the raw image first, the converter only when that is not confident, then the backbone stages; the last always answers.'),
      })
      .describe('Run orders the runtime may use; exitPolicy thresholds and temperatures are per exit point of `hybrid`.'),
    default: z.enum(['cbnet', 'hybrid']).describe('The policy to run when the device is not told otherwise.'),
    backbone: z
      .array(z.int().nonnegative())
      .min(1)
      .optional()
      .describe('Stages of the multi-exit backbone the classifier came from, beyond its first exit, in run order; the first reads the image (it recomputes the classifier\'s trunk), each yields an exit the hybrid falls through to after the converter.'),
  })
  .describe('kind cbnet only: which stage feeds which.');

export type CbnetPipeline = z.output<typeof CbnetPipelineSchema>;

export const GoldenSchema = z
  .strictObject({
    file: fileName.describe('The golden inputs and expected outputs (format: bundle/golden.ts); also listed, hashed, under files.'),
    samples: z.int().positive().describe('Input samples recorded.'),
    stages: z
      .array(
        z.strictObject({
          stage: z.int().nonnegative().describe('Index into stages.'),
          output: tensorName.describe('The output compared (the stage exit).'),
          atol: z.number().nonnegative().describe('Absolute tolerance: |got − expected| ≤ atol + rtol·|expected| for every element.'),
          rtol: z.number().nonnegative().describe('Relative tolerance.'),
        }),
      )
      .min(1)
      .describe('Per stage: the output the device self-test compares and how close it must be.'),
  })
  .describe('Golden I/O recorded by the compiler: a device runs these inputs through the stages before it switches to the bundle.');

export const ManifestSchema = z
  .strictObject({
    formatVersion: z.literal(MANIFEST_FORMAT_VERSION).describe('Version of this manifest format.'),
    model: z.strictObject({ name: z.string().min(1), version: z.string().min(1) }).describe('Model name and version (from edgeexit.model / edgeexit.version metadata, else the file).'),
    kind: z.enum(['multi-exit', 'cbnet']).describe('multi-exit: stages with an exit each; cbnet: converter then light classifier.'),
    target: z
      .strictObject({
        device: z.string().min(1).describe('Device profile id the bundle was compiled for.'),
        precision: z.enum(['fp32', 'fp16', 'int8']).describe('Numeric precision of the stage models.'),
      })
      .describe('What the bundle was compiled for.'),
    input: z
      .strictObject({
        name: tensorName.describe('Graph input fed with the image batch.'),
        dtype: z.literal('float32'),
        shape: z.array(z.union([z.int().positive(), z.string().min(1)])).describe('Dims; the batch is symbolic (a name).'),
        layout: z.literal('NCHW'),
        preprocess: PreprocessSchema,
      })
      .describe('The input the first stage reads and how images become it.'),
    labels: z.array(z.string().min(1)).min(1).describe('Class names, in logit order.'),
    stages: z.array(StageSchema).min(1).describe('Stages in the order they run (cbnet: see pipeline for which feeds which).'),
    pipeline: CbnetPipelineSchema.optional(),
    files: z
      .array(z.strictObject({ file: fileName, sha256, bytes: z.int().nonnegative() }))
      .default([])
      .describe('Other files of the bundle (the compile report), hashed like the stages.'),
    golden: GoldenSchema.optional(),
    blocks: z
      .strictObject({
        size: z.int().min(1024).max(1024 * 1024).describe('Block size in bytes; the last block of a file may be shorter.'),
        files: z.record(fileName, z.array(sha256).max(1 << 20)).describe('Per file (stages and files), the SHA-256 of each block in order.'),
      })
      .optional()
      .describe('Per-block hashes, so a device downloading a file in pieces checks each piece before writing it (optional: bundles without it stay valid).'),
    exitPolicy: z
      .strictObject({
        // The runtime's registry is the one list of metrics, so a bundle never names one the device cannot score.
        metric: z.enum(EXIT_METRICS).describe(`Confidence of an exit: ${EXIT_METRICS.map((m) => `${m} (${EXIT_METRIC_INFO[m].summary})`).join('; ')}.`),
        thresholds: z
          .array(z.number().min(0).max(1))
          .nullable()
          .default(null)
          .describe('One threshold per exit but the last (which always answers); null = uncalibrated: run to the last exit.'),
        temperatures: z.array(z.number().positive()).describe('Softmax temperature per exit (1 = none).'),
      })
      .describe('When a sample leaves at an exit.'),
    provenance: z
      .strictObject({
        source: z.strictObject({ file: z.string().min(1), sha256 }).describe('The float ONNX model compiled.'),
        edgeexitVersion: z.string().min(1),
        created: z.iso.datetime().describe('When the bundle was made (UTC, ISO 8601).'),
        command: z.string().min(1).describe('The command that made it.'),
        quantization: z
          .strictObject({
            scheme: z.string().min(1).describe('Quantisation scheme key (devices/registry.ts QUANT_SCHEMES), e.g. s8s8-qdq.'),
            calibrationMethod: z.enum(['minmax', 'percentile', 'entropy']).describe('How activation ranges were calibrated.'),
            calibrationImages: z.int().nonnegative().describe('Calibration images the ranges came from.'),
            calibrationSource: z.string().min(1).describe('The ImageFolder they came from.'),
            keptFloat: z.array(z.string().min(1)).default([]).describe('Nodes left float by mixed precision.'),
          })
          .optional()
          .describe('int8 bundles only: how the stages were quantised.'),
      })
      .describe('Where the bundle came from.'),
  })
  .superRefine((m, ctx) => {
    const n = m.stages.length;
    const p = m.pipeline;
    if (m.kind === 'cbnet' && !p) ctx.addIssue({ code: 'custom', path: ['pipeline'], message: 'a cbnet bundle needs a pipeline section (which stage is the converter, which the classifier)', input: undefined });
    if (m.kind !== 'cbnet' && p) ctx.addIssue({ code: 'custom', path: ['pipeline'], message: `only kind cbnet has a pipeline; this bundle is ${m.kind}`, input: p });
    // A CBNet's exits are the hybrid's exit points, not its stages (the converter has no exit).
    const exits = m.kind === 'cbnet' && p ? p.policies.hybrid.length : n;
    const what = m.kind === 'cbnet' ? 'exit points of pipeline.policies.hybrid' : 'stages';
    if (m.exitPolicy.thresholds !== null && m.exitPolicy.thresholds.length !== exits - 1) {
      ctx.addIssue({ code: 'custom', path: ['exitPolicy', 'thresholds'], message: `expected ${exits - 1} thresholds (one per exit but the last) for ${exits} ${what}`, input: m.exitPolicy.thresholds });
    }
    if (m.exitPolicy.temperatures.length !== exits) {
      ctx.addIssue({ code: 'custom', path: ['exitPolicy', 'temperatures'], message: `expected ${exits} temperatures (one per ${m.kind === 'cbnet' ? 'exit point' : 'stage'})`, input: m.exitPolicy.temperatures });
    }
    if (p) {
      for (const role of ['converter', 'classifier'] as const) {
        const s = m.stages[p[role].stage];
        if (!s) {
          ctx.addIssue({ code: 'custom', path: ['pipeline', role, 'stage'], message: `no stage ${p[role].stage} (the bundle has ${n})`, input: p[role].stage });
          continue;
        }
        if (!s.inputs.includes(p[role].input)) ctx.addIssue({ code: 'custom', path: ['pipeline', role, 'input'], message: `stage ${p[role].stage} reads ${s.inputs.join(', ')}`, input: p[role].input });
        const out = role === 'converter' ? p.converter.output : p.classifier.exit;
        if (s.exit !== out) ctx.addIssue({ code: 'custom', path: ['pipeline', role, role === 'converter' ? 'output' : 'exit'], message: `stage ${p[role].stage} yields '${s.exit}'`, input: out });
      }
      if (p.converter.stage === p.classifier.stage) ctx.addIssue({ code: 'custom', path: ['pipeline', 'classifier', 'stage'], message: 'the classifier and the converter must be different stages', input: p.classifier.stage });
      const hy = p.policies.hybrid;
      const backbone = p.backbone ?? [];
      for (const [j, k] of backbone.entries()) {
        if (!m.stages[k]) ctx.addIssue({ code: 'custom', path: ['pipeline', 'backbone', j], message: `no stage ${k} (the bundle has ${n})`, input: k });
        else if (k === p.converter.stage || k === p.classifier.stage) ctx.addIssue({ code: 'custom', path: ['pipeline', 'backbone', j], message: 'a backbone stage cannot be the converter or the classifier', input: k });
      }
      const backboneExits = backbone.map((k) => `${BACKBONE_POINT_PREFIX}${m.stages[k]?.exit ?? '?'}`);
      let nextBackbone = 0;
      hy.forEach((e, i) => {
        if (hy.indexOf(e) !== i) ctx.addIssue({ code: 'custom', path: ['pipeline', 'policies', 'hybrid', i], message: `'${e}' is listed twice`, input: e });
        if (isBackbonePoint(e)) {
          // Backbone stages chain (each reads what the one before handed over): in order, none skipped.
          if (e !== backboneExits[nextBackbone]) {
            ctx.addIssue({ code: 'custom', path: ['pipeline', 'policies', 'hybrid', i], message: `expected ${backboneExits[nextBackbone] ? `'${backboneExits[nextBackbone]}' (pipeline.backbone in order)` : 'no further backbone point (pipeline.backbone lists none)'}`, input: e });
          }
          nextBackbone++;
          return;
        }
        if (nextBackbone > 0) ctx.addIssue({ code: 'custom', path: ['pipeline', 'policies', 'hybrid', i], message: 'the classifier points before the backbone points', input: e });
        const from = e === 'classifier<-image' ? 'image' : 'converter';
        if (!p.classifier.inputFrom.includes(from)) ctx.addIssue({ code: 'custom', path: ['pipeline', 'policies', 'hybrid', i], message: `the classifier was not compiled to read the ${from} (inputFrom)`, input: e });
      });
    }
    if (m.golden) {
      if (!m.files.some((f) => f.file === m.golden!.file)) ctx.addIssue({ code: 'custom', path: ['golden', 'file'], message: 'must also be listed under files (so its hash is checked)', input: m.golden.file });
      m.golden.stages.forEach((g, i) => {
        const s = m.stages[g.stage];
        if (!s) ctx.addIssue({ code: 'custom', path: ['golden', 'stages', i, 'stage'], message: `no stage ${g.stage} (the bundle has ${n})`, input: g.stage });
        else if (!s.outputs.includes(g.output)) ctx.addIssue({ code: 'custom', path: ['golden', 'stages', i, 'output'], message: `stage ${g.stage} yields ${s.outputs.join(', ')}`, input: g.output });
      });
    }
    const names = [...m.stages.map((s) => s.file), ...m.files.map((f) => f.file)];
    names.forEach((f, i) => {
      if (names.indexOf(f) !== i) ctx.addIssue({ code: 'custom', path: i < n ? ['stages', i, 'file'] : ['files', i - n, 'file'], message: `'${f}' is listed twice`, input: f });
    });
    if (m.blocks) {
      // Every listed file has exactly its number of blocks, and nothing else is listed.
      const { size, files } = m.blocks;
      const sizes = new Map([...m.stages.map((s) => [s.file, s.bytes] as const), ...m.files.map((f) => [f.file, f.bytes] as const)]);
      for (const [f, bytes] of sizes) {
        const want = Math.ceil(bytes / size);
        const got = files[f];
        if (!got) ctx.addIssue({ code: 'custom', path: ['blocks', 'files', f], message: `missing: ${f} is listed, so it needs ${want} block hashes`, input: undefined });
        else if (got.length !== want) ctx.addIssue({ code: 'custom', path: ['blocks', 'files', f], message: `expected ${want} block hashes (${bytes} bytes in blocks of ${size}), got ${got.length}`, input: got.length });
      }
      for (const f of Object.keys(files)) {
        if (!sizes.has(f)) ctx.addIssue({ code: 'custom', path: ['blocks', 'files', f], message: 'not a file of this bundle (stages or files)', input: f });
      }
    }
    const channels = m.input.preprocess.colorspace === 'rgb' ? 3 : 1;
    for (const key of ['mean', 'std'] as const) {
      const len = m.input.preprocess[key].length;
      if (len !== 1 && len !== channels) {
        ctx.addIssue({ code: 'custom', path: ['input', 'preprocess', key], message: `expected 1 or ${channels} values for ${m.input.preprocess.colorspace}`, input: m.input.preprocess[key] });
      }
    }
    // Stages must chain: every input is the image or something an earlier stage carried on.
    let alive = new Set<string>([m.input.name]);
    m.stages.forEach((s, k) => {
      if (s.outputs[0] !== s.exit) ctx.addIssue({ code: 'custom', path: ['stages', k, 'outputs'], message: `the first output must be the exit '${s.exit}'`, input: s.outputs });
      for (const [j, t] of s.inputs.entries()) {
        if (!alive.has(t)) ctx.addIssue({ code: 'custom', path: ['stages', k, 'inputs', j], message: `'${t}' is neither the input nor handed over by an earlier stage`, input: t });
      }
      const known = new Set([...alive, ...s.outputs]);
      for (const [j, t] of s.carry.entries()) {
        if (!known.has(t)) ctx.addIssue({ code: 'custom', path: ['stages', k, 'carry', j], message: `'${t}' is carried but nothing produced it`, input: t });
      }
      alive = new Set(s.carry);
    });
  })
  .describe('manifest.json of an edgeexit bundle.');

export type Manifest = z.output<typeof ManifestSchema>;
export type ManifestInput = z.input<typeof ManifestSchema>;
export type ManifestStage = z.output<typeof StageSchema>;
export type ManifestGolden = z.output<typeof GoldenSchema>;

export const SignatureSchema = z
  .strictObject({
    algorithm: z.literal('ed25519'),
    keyId: z.string().regex(/^sha256:[0-9a-f]{64}$/, { error: '"sha256:" and 64 hex digits (the public key fingerprint)' }),
    signature: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, { error: 'base64' }),
  })
  .describe('manifest.sig: a detached ed25519 signature over the exact bytes of manifest.json.');

export type SignatureFile = z.output<typeof SignatureSchema>;

// ---- zod issues → Problems ----

function pathText(p: readonly PropertyKey[]): string {
  let out = '';
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out;
}

function valueAt(root: unknown, p: readonly PropertyKey[]): unknown {
  let cur = root;
  for (const k of p) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return cur;
}

function toProblem(issue: z.core.$ZodIssue, file: string, input: unknown): Problem[] {
  const at = pathText(issue.path);
  const where = at ? `${file}: ${at}` : file;
  const value = 'input' in issue && issue.input !== undefined ? issue.input : valueAt(input, issue.path);
  const got = value === undefined ? 'nothing (the field is missing)' : show(value);
  switch (issue.code) {
    case 'invalid_type':
      return [{ where, expected: issue.expected, got }];
    case 'invalid_value':
      return [{ where, expected: `one of: ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`, got }];
    case 'unrecognized_keys':
      return issue.keys.map((k) => ({ where: at ? `${file}: ${at}.${k}` : `${file}: ${k}`, message: 'unknown field', fix: 'remove it (is the bundle from a newer edgeexit?)' }));
    case 'invalid_format':
      return [{ where, expected: issue.message, got }];
    case 'too_small':
    case 'too_big':
      return [{ where, expected: issue.message, got }];
    default:
      return [{ where, message: issue.message, got }];
  }
}

function validate<T>(schema: z.ZodType<T>, json: unknown, file: string): T {
  const r = schema.safeParse(json, { reportInput: true });
  if (r.success) return r.data;
  throw new ValidationError(file, r.error.issues.flatMap((i) => toProblem(i, file, json)));
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ValidationError(file, [{ where: file, expected: 'JSON', message: (err as Error).message }]);
  }
}

/**
 * The problem to report for a formatVersion this edgeexit does not read, in place of the
 * schema's bare "expected 1": which side is out of date and what to do. Null when the version
 * is ours, or not a number at all (the schema's message says that well enough).
 */
function formatVersionProblem(json: unknown, file: string): Problem | null {
  if (typeof json !== 'object' || json === null) return null;
  const o = json as Record<string, unknown>;
  const v = o.formatVersion;
  if (v === MANIFEST_FORMAT_VERSION || typeof v !== 'number' || !Number.isInteger(v)) return null;
  const by = (o.provenance as Record<string, unknown> | undefined)?.edgeexitVersion;
  const made = typeof by === 'string' ? `, written by edgeexit ${by}` : '';
  const where = `${file}: formatVersion`;
  const expected = `format ${MANIFEST_FORMAT_VERSION}`;
  if (v > MANIFEST_FORMAT_VERSION) {
    return {
      where,
      message: `the bundle is manifest format ${v}${made}, newer than this edgeexit reads;`,
      expected,
      got: String(v),
      fix: 're-compile the model with this version of edgeexit, or upgrade edgeexit on this device',
    };
  }
  return {
    where,
    message: `the bundle is manifest format ${v}${made}, older than this edgeexit supports (it reads format ${MANIFEST_FORMAT_VERSION} only);`,
    expected,
    got: String(v),
    fix: 're-compile the model with this version of edgeexit',
  };
}

/**
 * Validate a manifest object; throws ValidationError listing every problem.
 *
 * @example
 * ```ts
 * import { validateManifest } from 'edgeexit/bundle';
 * const manifest = validateManifest(JSON.parse(text), 'bundles/x/manifest.json');
 * ```
 */
export function validateManifest(json: unknown, file = MANIFEST_FILE): Manifest {
  try {
    return validate(ManifestSchema, json, file);
  } catch (err) {
    const version = formatVersionProblem(json, file);
    if (!(err instanceof ValidationError) || !version) throw err;
    // The version first: with another format, the other problems are most likely its changes.
    throw new ValidationError(file, [version, ...err.problems.filter((p) => p.where !== version.where)]);
  }
}

/**
 * Parse manifest.json text (bytes as UTF-8).
 *
 * @example
 * ```ts
 * import { readFile } from 'node:fs/promises';
 * import { parseManifest } from 'edgeexit/bundle';
 * const m = parseManifest(await readFile('bundles/branchy-rpi4/manifest.json'));
 * console.log(m.kind, m.labels, m.exitPolicy.thresholds);
 * ```
 */
export function parseManifest(text: string | Uint8Array, file = MANIFEST_FILE): Manifest {
  const s = typeof text === 'string' ? text : new TextDecoder('utf-8', { fatal: false }).decode(text);
  return validateManifest(parseJson(s, file), file);
}

/**
 * The exact bytes written as manifest.json (what the signature covers).
 *
 * @example
 * ```ts
 * import { encodeManifest, parseManifest } from 'edgeexit/bundle';
 * const m = parseManifest(text);
 * const bytes = encodeManifest({ ...m, exitPolicy: { ...m.exitPolicy, thresholds: [0.9, 0.9] } }); // then re-sign
 * ```
 */
export function encodeManifest(m: Manifest): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(m, null, 2) + '\n');
}

/**
 * Parse and validate manifest.sig (algorithm, key id, base64 signature).
 *
 * @example
 * ```ts
 * import { readFile } from 'node:fs/promises';
 * import { parseSignature } from 'edgeexit/bundle';
 * const { keyId } = parseSignature(await readFile('bundles/branchy-rpi4/manifest.sig'));
 * ```
 */
export function parseSignature(text: string | Uint8Array, file = SIGNATURE_FILE): SignatureFile {
  const s = typeof text === 'string' ? text : new TextDecoder().decode(text);
  return validate(SignatureSchema, parseJson(s, file), file);
}

export function encodeSignature(sig: SignatureFile): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(sig, null, 2) + '\n');
}

/**
 * JSON Schema of the manifest, for editors and other languages' readers.
 *
 * @example
 * ```ts
 * import { manifestJsonSchema } from 'edgeexit/bundle';
 * await writeFile('manifest.schema.json', JSON.stringify(manifestJsonSchema(), null, 2));
 * ```
 */
export function manifestJsonSchema(): unknown {
  return z.toJSONSchema(ManifestSchema, { io: 'input', unrepresentable: 'any' });
}

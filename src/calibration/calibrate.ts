// `calibrate`: bundle + labelled images + a latency target → per-exit thresholds and temperatures
// written into the bundle's manifest, checked on held-out data, with a report.
//
// Observations are collected once: every stage runs on every image (no exits), keeping each
// exit's logits, so fitting temperatures and searching thresholds are pure arithmetic after.
// The data is split fit / held-out per class with a fixed seed, so a rerun gives the same split.
//
// CBNet bundles: the "exits" are the hybrid policy's exit points (the classifier on the raw
// image, then on the converter's output), costing the classifier, then converter + classifier.
// The search finds the hybrid's threshold; it is then weighed against the plain cbnet policy
// (converter then classifier, no threshold), and the better one under the target becomes the
// bundle's default policy.
//
// Signing: the manifest changes, so an old signature no longer matches. With --key the manifest is
// re-signed; a signed bundle without --key is refused (a bundle with a stale signature would be
// rejected by every device), with the fix in the message. An unsigned bundle stays unsigned.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { loadBundleFiles, rewriteArchive, verifyLoadedBundle, writeBundleAtomic } from '../bundle/files.js';
import { MANIFEST_FILE, SIGNATURE_FILE, encodeManifest, isBackbonePoint, validateManifest, type Manifest } from '../bundle/manifest.js';
import { loadPrivateKey, signManifest } from '../bundle/signing.js';
import { scanImageFolder } from '../data/imagefolder.js';
import { EXIT_POLICIES, softmaxInto } from '../runtime/exit-policy.js';
import { prepareBatch, type PreprocessSpec } from '../backends/image.js';
import { createSession, type ModelSession, type PlainTensor } from '../backends/onnxruntime.js';
import { InputError, UnsupportedError, formatProblem } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { mulberry32 } from '../util/random.js';
import { loadDeviceProfile } from '../devices/load.js';
import type { DeviceProfile } from '../devices/schema.js';
import { hostMatchesDevice, measureLatencyProfile, modelLatencyProfile, readLatencyProfile, stageLatencyFrom, type LatencyProfile, type StageStat } from './latency.js';
import { accuracyLossStderrPp, evaluatePolicy, fitTemperature, searchThresholds, type PolicyPoint, type SearchData, type SearchResult, type SearchTarget } from './search.js';
import { frontierSvg } from './svg.js';

/** Per exit: logits [n × classes], plus the labels. */
export interface Observations {
  logits: Float32Array[];
  labels: Int32Array;
  classes: number;
  files: string[];
}

/** The manifest stage a `backbone:<exit>` point runs. */
function backboneStageOf(m: Manifest, point: string): number {
  const k = (m.pipeline?.backbone ?? []).find((i) => `backbone:${m.stages[i]!.exit}` === point);
  if (k === undefined) throw new UnsupportedError(`exit point '${point}': no pipeline.backbone stage has that exit`);
  return k;
}

/**
 * Run every stage on every image (batches of 64) and keep every exit's logits.
 *
 * @example
 * ```ts
 * import { collectObservations } from 'edgeexit/calibration';
 * const { manifest, obs } = await collectObservations('bundles/branchy-rpi4', 'calibration/fashion-mnist', { limit: 500 });
 * console.log(obs.labels.length, manifest.stages.length); // images, exits
 * ```
 */
export async function collectObservations(bundle: string, data: string, opts: { limit?: number; threads?: number } = {}): Promise<{ manifest: Manifest; obs: Observations }> {
  const loaded = await loadBundleFiles(bundle);
  const { manifest } = await verifyLoadedBundle(loaded);
  if (manifest.kind === 'cbnet' && !manifest.pipeline) throw new UnsupportedError(`${bundle}: cbnet bundle without a pipeline section`);
  const folder = await scanImageFolder(data, { labels: manifest.labels });
  let items = folder.items;
  if (opts.limit !== undefined && opts.limit < items.length) {
    // Spread evenly over the (class-ordered) list, so every class keeps its share.
    const step = items.length / opts.limit;
    items = Array.from({ length: opts.limit }, (_, i) => items[Math.floor(i * step)]!);
  }
  if (items.length === 0) throw new InputError(`${data}: no images found`);
  const K = manifest.stages.length;
  const C = manifest.labels.length;
  const spec: PreprocessSpec = { ...manifest.input.preprocess, size: [...manifest.input.preprocess.size] };
  const sessions: ModelSession[] = [];
  const logits: number[][] = (manifest.pipeline ? manifest.pipeline.policies.hybrid : manifest.stages).map(() => []);
  const labels: number[] = [];
  const files: string[] = [];
  try {
    for (const s of manifest.stages) sessions.push(await createSession(loaded.files.get(s.file)!, { intraOpNumThreads: opts.threads ?? 1, onWarning: () => {} }));
    for (let start = 0; start < items.length; start += 64) {
      const chunk = items.slice(start, start + 64);
      const prep = await prepareBatch(chunk.map((x) => x.file), spec);
      if (prep.failures.length) throw new InputError(`${prep.failures[0]!.name}: ${prep.failures[0]!.error.message}`);
      if (manifest.pipeline) {
        // One row of logits per hybrid exit point, in its run order.
        const p = manifest.pipeline;
        const cls = sessions[p.classifier.stage]!;
        let converted: PlainTensor | undefined;
        // Backbone points chain: the first reads the image, the next what the previous handed on.
        const pool: Record<string, PlainTensor> = { [manifest.input.name]: prep.tensor };
        for (const [j, point] of p.policies.hybrid.entries()) {
          if (isBackbonePoint(point)) {
            const k = backboneStageOf(manifest, point);
            const st = manifest.stages[k]!;
            const out = await sessions[k]!.run(Object.fromEntries(st.inputs.map((nm) => [nm, pool[nm]!])));
            Object.assign(pool, out);
            for (const v of out[st.exit]!.data as Float32Array) logits[j]!.push(v);
            continue;
          }
          let x = prep.tensor as PlainTensor;
          if (point === 'classifier<-converter') {
            converted ??= (await sessions[p.converter.stage]!.run({ [p.converter.input]: prep.tensor }, [p.converter.output]))[p.converter.output]! as PlainTensor;
            x = converted;
          }
          const out = await cls.run({ [p.classifier.input]: x }, [p.classifier.exit]);
          for (const v of out[p.classifier.exit]!.data as Float32Array) logits[j]!.push(v);
        }
      } else {
        const pool: Record<string, PlainTensor> = { [manifest.input.name]: prep.tensor };
        for (const [k, s] of manifest.stages.entries()) {
          const out = await sessions[k]!.run(Object.fromEntries(s.inputs.map((n) => [n, pool[n]!])));
          Object.assign(pool, out);
          const ex = out[s.exit]!;
          for (const v of ex.data as Float32Array) logits[k]!.push(v);
        }
      }
      for (const i of prep.indices) {
        labels.push(chunk[i]!.label);
        files.push(chunk[i]!.file);
      }
    }
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
  void K;
  return { manifest, obs: { logits: logits.map((l) => Float32Array.from(l)), labels: Int32Array.from(labels), classes: C, files } };
}

/** Stratified split with a fixed seed (mulberry32): returns held-out indices and fit indices. */
export function stratifiedSplit(labels: ArrayLike<number>, holdout: number, seed = 20261127): { fit: number[]; held: number[] } {
  const rand = mulberry32(seed);
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]!;
    if (!byClass.has(l)) byClass.set(l, []);
    byClass.get(l)!.push(i);
  }
  const fit: number[] = [];
  const held: number[] = [];
  for (const [, idx] of [...byClass.entries()].sort((x, y) => x[0] - y[0])) {
    for (let i = idx.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [idx[i], idx[j]] = [idx[j]!, idx[i]!];
    }
    const h = Math.round(idx.length * holdout);
    held.push(...idx.slice(0, h));
    fit.push(...idx.slice(h));
  }
  return { fit: fit.sort((x, y) => x - y), held: held.sort((x, y) => x - y) };
}

/** Scores (max-prob with temperature) and correctness of `rows` at every exit. */
export function scoreObservations(obs: Observations, rows: readonly number[], temperatures: readonly number[], metric: 'max-prob' = 'max-prob'): SearchData {
  const C = obs.classes;
  const probs = new Float64Array(C);
  const info = EXIT_POLICIES[metric];
  const scores: Float64Array[] = [];
  const correct: Uint8Array[] = [];
  obs.logits.forEach((lg, k) => {
    const s = new Float64Array(rows.length);
    const c = new Uint8Array(rows.length);
    rows.forEach((i, r) => {
      const arg = softmaxInto(lg, i * C, C, temperatures[k]!, probs);
      s[r] = info.score(probs);
      c[r] = arg === obs.labels[i] ? 1 : 0;
    });
    scores.push(s);
    correct.push(c);
  });
  return { scores, correct, direction: info.exitWhen, range: info.range };
}

function subset(obs: Observations, rows: readonly number[], k: number): { logits: Float32Array; labels: Int32Array } {
  const C = obs.classes;
  const out = new Float32Array(rows.length * C);
  rows.forEach((i, r) => out.set(obs.logits[k]!.subarray(i * C, (i + 1) * C), r * C));
  return { logits: out, labels: Int32Array.from(rows, (i) => obs.labels[i]!) };
}

export interface CalibrateOptions {
  bundle: string;
  data: string;
  target: SearchTarget;
  /**
   * 'measure', 'model', or a latency profile file. Default: 'measure' when this host can stand in
   * for the bundle's device (hostMatchesDevice), else 'model' (the device's cost model).
   */
  latencySource?: string;
  /**
   * A latency profile already built (the fleet's, src/fleet/fleet-latency.ts): used instead of
   * `latencySource`, which the calibration layer cannot resolve (the fleet store sits above it).
   */
  latencyProfile?: { profile: LatencyProfile; label: string; why: string };
  /** Device profile for 'model' (default: the bundle's target). */
  device?: string;
  holdout?: number;
  /**
   * --max-accuracy-drop only: aim this many standard errors (paired, on the fit images) under the
   * budget, so the loss holds on images the search never saw (default 1; 0 aims at the budget).
   */
  margin?: number;
  /** Private key to re-sign the manifest with. */
  key?: string;
  /** Report folder (default: <bundle>-calibration). */
  out?: string;
  /** Use at most this many images (spread over the classes). */
  limit?: number;
  batch?: number;
  /** Timed runs per stage for 'measure' (default 200). */
  runs?: number;
  seed?: number;
  /**
   * Write the thresholds even when the held-out check misses the target. Without it a miss leaves
   * the bundle as it was (the report is still written and says so).
   */
  allowMiss?: boolean;
  onProgress?: (line: string) => void;
  /** Things the user must see (a miss, timings from another machine); default: onProgress. */
  onWarning?: (line: string) => void;
}

export interface CalibrationReport {
  bundle: string;
  data: string;
  images: { fit: number; heldOut: number };
  latency: { source: string; description: string; batch: number; stat: string; stageMs: number[]; cumulativeMs: number[]; /** Why this source. */ why: string };
  target: SearchTarget;
  temperatures: number[];
  thresholds: number[];
  predicted: PolicyPoint;
  achieved: PolicyPoint;
  noExit: SearchResult['noExit'];
  oracle: SearchResult['oracle'];
  frontier: SearchResult['frontier'];
  search: { strategy: string; evaluated: number; ms: number };
  /** cbnet bundles: the run order chosen as the default, and both candidates on the fit split. */
  policy?: { chosen: 'cbnet' | 'hybrid'; cbnet: { accuracy: number; meanMs: number }; hybrid: { accuracy: number; meanMs: number } };
  /** --max-accuracy-drop: the budget the search aimed at after the safety margin. */
  aimedDropPp?: { budgetPp: number; marginStderrs: number; stderrPp: number; aimedPp: number };
  signature: 'resigned' | 'unsigned';
  /** How the held-out result misses the target; absent when it meets it. */
  miss?: string;
  /** False when a miss (without allowMiss) left the bundle as it was. */
  bundleUpdated: boolean;
  /** Every warning given on the console, repeated in the report. */
  warnings: string[];
  files: { markdown: string; json: string; svg: string };
}

/**
 * Which latency source to use and why: the one asked for, else 'measure' when this host can stand
 * in for the bundle's device and 'model' when not. Measuring for another machine is allowed when
 * asked for, with a warning, since thresholds then fit this machine's timings.
 *
 * @example (await chooseLatencySource(undefined, jetsonManifest)).source // 'model' on an x86 laptop
 */
export async function chooseLatencySource(asked: string | undefined, manifest: Manifest): Promise<{ source: string; why: string; warning?: string }> {
  let device: DeviceProfile | undefined;
  try {
    device = await loadDeviceProfile(manifest.target.device);
  } catch {
    device = undefined;
  }
  const m = device ? hostMatchesDevice(device) : undefined;
  if (asked !== undefined) {
    const warning =
      asked === 'measure' && m && !m.same
        ? `warning: --latency-source measure times this host (${m.host}), but the bundle targets ${m.device}: the thresholds will fit this machine's timings, not the device's (fix: --latency-source model for its cost model, or a profile file from \`edgeexit profile\` run on the device)`
        : undefined;
    return { source: asked, why: 'as asked (--latency-source)', ...(warning ? { warning } : {}) };
  }
  if (!m) return { source: 'measure', why: `default: the bundle's device '${manifest.target.device}' has no profile here to compare with or to model` };
  if (m.same) return { source: 'measure', why: `default: this host (${m.host}) matches the bundle's device ${m.device}` };
  return { source: 'model', why: `default: the bundle targets ${m.device}, not this host (${m.host}); --latency-source measure times this host instead, a profile file from the device is best` };
}

async function latencyFor(o: CalibrateOptions & { latencySource: string }, manifest: Manifest, stat: StageStat, batch: number): Promise<{ profile: LatencyProfile; label: string }> {
  const src = o.latencySource;
  if (src === 'measure') return { profile: await measureLatencyProfile(o.bundle, { batches: [batch], runs: o.runs ?? 200 }), label: 'measure' };
  if (src === 'model') return { profile: await modelLatencyProfile(o.bundle, o.device ?? manifest.target.device, [batch]), label: 'model' };
  const p = await readLatencyProfile(src);
  // Stage names and MACs, not the manifest hash: calibrating rewrites the manifest, and a
  // profile measured before that still describes the same stages.
  const same = p.stages.length === manifest.stages.length && p.stages.every((s, k) => s.stage === manifest.stages[k]!.exit && s.macs === manifest.stages[k]!.macs);
  if (!same) throw new InputError(`${src}: its stages (${p.stages.map((s) => s.stage).join(', ')}) are not this bundle's (${manifest.stages.map((s) => s.exit).join(', ')}); profile this bundle with \`edgeexit profile ${o.bundle} --out <file>\``);
  void stat;
  return { profile: p, label: `file ${src}` };
}

/**
 * See the header.
 *
 * @example
 * ```ts
 * import { calibrate } from 'edgeexit/calibration';
 * const report = await calibrate({
 *   bundle: 'bundles/branchy-rpi4', data: 'calibration/fashion-mnist',
 *   target: { kind: 'latency', targetMs: 2, percentile: 95 }, latencySource: 'model',
 * });
 * console.log(report.thresholds, report.achieved.accuracy, report.files.markdown);
 * ```
 */
export async function calibrate(o: CalibrateOptions): Promise<CalibrationReport> {
  const progress = o.onProgress ?? (() => {});
  const holdout = o.holdout ?? 0.3;
  if (!(holdout > 0 && holdout < 1)) throw new InputError(`--holdout: expected a fraction in (0, 1), got ${holdout}`);
  const loaded = await loadBundleFiles(o.bundle);
  const signed = loaded.files.has(SIGNATURE_FILE);
  if (signed && !o.key) {
    throw new InputError(`${o.bundle}: the bundle is signed and calibrating changes its manifest, which would invalidate the signature; pass --key <private key> to re-sign it`);
  }
  const key = o.key ? await loadPrivateKey(o.key) : undefined;

  const batch = o.batch ?? 1;
  if (!Number.isInteger(batch) || batch < 1) throw new InputError(formatProblem({ where: '--batch', expected: 'a positive integer (the batch size the device runs)', got: String(o.batch) }));
  const percentile = o.target.kind === 'latency' ? o.target.percentile : undefined;
  const stat: StageStat = percentile === undefined ? 'mean' : percentile <= 50 ? 50 : percentile <= 90 ? 90 : percentile <= 95 ? 95 : 99;
  const { manifest: current } = await verifyLoadedBundle(loaded);
  const warnings: string[] = [];
  const warn = (line: string): void => {
    warnings.push(line);
    (o.onWarning ?? progress)(line);
  };
  const given = o.latencyProfile;
  const chosen: { source: string; why: string; warning?: string } = given ? { source: given.label, why: given.why } : await chooseLatencySource(o.latencySource, current);
  progress(`latency source ${chosen.source} (${chosen.why})…`);
  if (chosen.warning) warn(chosen.warning);
  const { profile, label } = given ? { profile: given.profile, label: given.label } : await latencyFor({ ...o, latencySource: chosen.source }, current, stat, batch);
  const bundleStageMs = stageLatencyFrom(profile, batch, stat, chosen.source);
  const pipe = current.pipeline;
  // What each exit point adds: a stage (multi-exit), or the classifier and, for the converted
  // image, the converter too (cbnet hybrid).
  const stageMs = pipe
    ? pipe.policies.hybrid.map((pt) =>
        isBackbonePoint(pt) ? bundleStageMs[backboneStageOf(current, pt)]! : bundleStageMs[pipe.classifier.stage]! + (pt === 'classifier<-converter' ? bundleStageMs[pipe.converter.stage]! : 0),
      )
    : bundleStageMs;
  // Fail before the (slow) collection when no policy can meet the target.
  if (o.target.kind === 'latency' && o.target.targetMs < stageMs[0]!) searchThresholds({ scores: stageMs.map(() => [0]), correct: stageMs.map(() => [0]), direction: 'at-least' }, stageMs, o.target);

  progress('collecting every exit on every image…');
  const { manifest, obs } = await collectObservations(o.bundle, o.data, { ...(o.limit !== undefined ? { limit: o.limit } : {}) });
  const n = obs.labels.length;
  const { fit, held } = stratifiedSplit(obs.labels, holdout, o.seed);
  if (fit.length === 0 || held.length === 0) throw new InputError(`${o.data}: ${n} images are too few to split ${Math.round((1 - holdout) * 100)}/${Math.round(holdout * 100)}`);

  const temperatures = obs.logits.map((_, k) => {
    const s = subset(obs, fit, k);
    return fitTemperature(s.logits, s.labels, obs.classes);
  });
  const fitData = scoreObservations(obs, fit, temperatures);
  let res = searchThresholds(fitData, stageMs, o.target);
  let aimed: CalibrationReport['aimedDropPp'];
  const margin = o.margin ?? 1;
  if (!(margin >= 0 && Number.isFinite(margin))) throw new InputError(`--margin: expected a number of standard errors ≥ 0, got ${margin}`);
  if (o.target.kind === 'accuracy-drop' && margin > 0) {
    // The standard error of the policy found at the budget sizes the margin; search once more below it.
    const se = accuracyLossStderrPp(fitData, res.chosen.thresholds);
    const aimedPp = Math.max(0, o.target.maxDropPp - margin * se);
    aimed = { budgetPp: o.target.maxDropPp, marginStderrs: margin, stderrPp: se, aimedPp };
    if (aimedPp < o.target.maxDropPp) res = searchThresholds(fitData, stageMs, { kind: 'accuracy-drop', maxDropPp: aimedPp });
    progress(`accuracy budget ${o.target.maxDropPp} pp, aiming at ${aimedPp.toFixed(2)} pp (${margin} × standard error ${se.toFixed(2)} pp on ${fit.length} fit images)`);
  }
  // Manifests round to 6 decimals; the held-out check applies exactly what is written.
  const thresholds = res.chosen.thresholds.map((t) => Math.min(1, Math.max(0, Math.round(t * 1e6) / 1e6)));
  const temps = temperatures.map((t) => Math.round(t * 1e6) / 1e6);
  const heldData = scoreObservations(obs, held, temps);
  let predicted: PolicyPoint = res.chosen;
  let achieved = evaluatePolicy(heldData, stageMs, thresholds, percentile);

  let policy: CalibrationReport['policy'];
  if (pipe) {
    // The plain cbnet policy: converter then classifier for every image, at a fixed cost.
    const at = pipe.policies.hybrid.indexOf('classifier<-converter');
    const cost = bundleStageMs[pipe.converter.stage]! + bundleStageMs[pipe.classifier.stage]!;
    const accOf = (d: SearchData): number => (at < 0 ? 0 : Array.from(d.correct[at]!).reduce<number>((a, c) => a + (c ? 1 : 0), 0) / d.correct[at]!.length);
    const K = stageMs.length;
    const point = (acc: number): PolicyPoint => ({ thresholds: [], accuracy: acc, meanMs: cost, latencyMs: cost, exitFractions: Array.from({ length: K }, (_, k) => (k === at ? 1 : 0)) });
    const cb = point(accOf(fitData));
    const hy = res.chosen;
    const useCbnet =
      at >= 0 &&
      (o.target.kind === 'latency'
        ? cost <= o.target.targetMs && (cb.accuracy > hy.accuracy || (cb.accuracy === hy.accuracy && cost < hy.latencyMs))
        : // With a backbone the last exit is deeper than the converter's, so plain cbnet must also keep within the budget.
          (res.noExit.accuracy - cb.accuracy) * 100 <= (aimed?.aimedPp ?? o.target.maxDropPp) + 1e-9 && cost < hy.latencyMs);
    policy = { chosen: useCbnet ? 'cbnet' : 'hybrid', cbnet: { accuracy: cb.accuracy, meanMs: cost }, hybrid: { accuracy: hy.accuracy, meanMs: hy.meanMs } };
    if (useCbnet) {
      predicted = cb;
      achieved = point(accOf(heldData));
    }
    progress(`policy ${policy.chosen}: cbnet ${(cb.accuracy * 100).toFixed(2)}% at ${cost.toFixed(3)} ms vs hybrid ${(hy.accuracy * 100).toFixed(2)}% at ${hy.latencyMs.toFixed(3)} ms (fit split)`);
  }

  const miss = missOf(o.target, achieved, heldData);
  const write = !miss || o.allowMiss === true;
  if (miss) {
    warn(
      write
        ? `warning: calibration missed its target on the held-out images: ${miss}; thresholds written anyway (--allow-miss)`
        : `warning: calibration missed its target on the held-out images: ${miss}; the bundle is left as it was (fix: a looser target, more calibration images, --margin for accuracy budgets, or --allow-miss to write these thresholds anyway)`,
    );
  }

  const next: Manifest = validateManifest({
    ...manifest,
    exitPolicy: { metric: 'max-prob', thresholds, temperatures: temps },
    ...(pipe && policy ? { pipeline: { ...manifest.pipeline!, default: policy.chosen } } : {}),
  });
  const manifestBytes = encodeManifest(next);
  const files = [...loaded.files.entries()].filter(([name]) => name !== MANIFEST_FILE && name !== SIGNATURE_FILE).map(([name, data]) => ({ name, data }));
  files.push({ name: MANIFEST_FILE, data: manifestBytes });
  if (key) files.push({ name: SIGNATURE_FILE, data: signManifest(manifestBytes, key) });
  // A packed bundle (`edgeexit pack`) is rewritten as an archive, a folder as a folder.
  if (write && loaded.kind === 'archive') await rewriteArchive(o.bundle, files);
  else if (write) await writeBundleAtomic(o.bundle, files);

  const outDir = o.out ?? `${o.bundle.replace(/[\\/]+$/, '').replace(/\.tar$/, '')}-calibration`;
  await fsp.mkdir(outDir, { recursive: true });
  const report: CalibrationReport = {
    bundle: o.bundle,
    data: o.data,
    images: { fit: fit.length, heldOut: held.length },
    latency: { source: label, description: profile.host.description, batch, stat: String(stat), stageMs, cumulativeMs: res.cumulativeMs, why: chosen.why },
    target: o.target,
    temperatures: temps,
    thresholds,
    predicted,
    achieved,
    ...(policy ? { policy } : {}),
    noExit: res.noExit,
    oracle: res.oracle,
    frontier: res.frontier,
    search: { strategy: res.strategy, evaluated: res.evaluated, ms: res.searchMs },
    ...(aimed ? { aimedDropPp: aimed } : {}),
    signature: key ? 'resigned' : 'unsigned',
    ...(miss ? { miss } : {}),
    bundleUpdated: write,
    warnings,
    files: { markdown: path.join(outDir, 'calibration.md'), json: path.join(outDir, 'calibration.json'), svg: path.join(outDir, 'frontier.svg') },
  };
  const latencyWord = percentile === undefined ? 'mean latency' : `p${percentile} latency`;
  await writeFileAtomic(
    report.files.svg,
    frontierSvg({
      frontier: res.frontier.map((f) => ({ x: f.latencyMs, y: f.accuracy })),
      chosen: { x: res.chosen.latencyMs, y: res.chosen.accuracy },
      noExit: { x: res.noExit.latencyMs, y: res.noExit.accuracy },
      oracle: { x: res.oracle.meanMs, y: res.oracle.accuracy },
      target: o.target.kind === 'latency' ? o.target.targetMs : undefined,
      xLabel: `${latencyWord} (ms, ${label})`,
      yLabel: 'accuracy (fit split)',
      title: `${manifest.model.name}: accuracy vs latency`,
    }),
  );
  await writeFileAtomic(report.files.json, JSON.stringify(report, null, 2) + '\n');
  await writeFileAtomic(report.files.markdown, renderMarkdown(report));
  return report;
}

/**
 * How the held-out result misses the target, or undefined when it meets it: the constrained
 * latency above the budget, or an accuracy loss against the last exit (on the same held-out
 * images) above the allowed drop.
 *
 * @example missOf({ kind: 'latency', targetMs: 0.08, percentile: 95 }, achieved, held) // 'held-out p95 latency 0.096 ms > target 0.08 ms'
 */
export function missOf(target: SearchTarget, achieved: PolicyPoint, held: SearchData): string | undefined {
  if (target.kind === 'latency') {
    const stat = target.percentile === undefined ? 'mean' : `p${target.percentile}`;
    return achieved.latencyMs > target.targetMs * (1 + 1e-9) ? `held-out ${stat} latency ${achieved.latencyMs.toFixed(3)} ms > target ${target.targetMs} ms` : undefined;
  }
  const last = held.correct[held.correct.length - 1]!;
  let right = 0;
  for (let i = 0; i < last.length; i++) right += last[i] ? 1 : 0;
  const lastAcc = right / Math.max(1, last.length);
  const dropPp = (lastAcc - achieved.accuracy) * 100;
  return dropPp > target.maxDropPp + 1e-9 ? `held-out accuracy ${p2(achieved.accuracy)} is ${dropPp.toFixed(2)} pp under the last exit's ${p2(lastAcc)} > allowed ${target.maxDropPp} pp` : undefined;
}

const p2 = (x: number): string => `${(x * 100).toFixed(2)}%`;
const m3 = (x: number): string => `${x.toFixed(3)} ms`;

/**
 * The calibration report as markdown (what `edgeexit calibrate` writes next to the JSON and SVG).
 *
 * @example
 * ```ts
 * import { calibrate, renderMarkdown } from 'edgeexit/calibration';
 * console.log(renderMarkdown(await calibrate(options)));
 * ```
 */
export function renderMarkdown(r: CalibrationReport): string {
  const tgt = r.target.kind === 'latency' ? `${r.target.percentile === undefined ? 'mean' : `p${r.target.percentile}`} latency ≤ ${r.target.targetMs} ms` : `accuracy within ${r.target.maxDropPp} pp of the last exit`;
  return [
    `# Calibration of ${r.bundle}`,
    '',
    ...(r.miss ? [`**MISSED the target on the held-out images: ${r.miss}.** ${r.bundleUpdated ? 'Thresholds written anyway (--allow-miss).' : 'The bundle was left as it was.'}`, ''] : []),
    ...r.warnings.filter((w) => !/missed its target/.test(w)).map((w) => `> ${w}\n`),
    `- target: ${tgt}`,
    `- latency source: **${r.latency.source}** — ${r.latency.description} (batch ${r.latency.batch}, per-stage ${r.latency.stat}); ${r.latency.why}`,
    `- per-stage latency: ${r.latency.stageMs.map(m3).join(', ')}`,
    `- images: ${r.images.fit} fit, ${r.images.heldOut} held out (${r.data})`,
    `- temperatures: ${r.temperatures.join(', ')}`,
    `- thresholds (max-prob): ${r.thresholds.join(', ')}`,
    ...(r.policy
      ? [`- policy: **${r.policy.chosen}** (cbnet ${p2(r.policy.cbnet.accuracy)} at ${m3(r.policy.cbnet.meanMs)}; hybrid ${p2(r.policy.hybrid.accuracy)} at ${m3(r.policy.hybrid.meanMs)}, fit split)`]
      : []),
    ...(r.aimedDropPp
      ? [`- accuracy budget ${r.aimedDropPp.budgetPp} pp; aimed at ${r.aimedDropPp.aimedPp.toFixed(2)} pp on the fit split (${r.aimedDropPp.marginStderrs} × paired standard error ${r.aimedDropPp.stderrPp.toFixed(2)} pp; --margin 0 aims at the budget)`]
      : []),
    `- signature: ${r.signature}`,
    '',
    '| | accuracy | mean latency | target latency | exits |',
    '|---|---|---|---|---|',
    `| predicted (fit) | ${p2(r.predicted.accuracy)} | ${m3(r.predicted.meanMs)} | ${m3(r.predicted.latencyMs)} | ${r.predicted.exitFractions.map(p2).join(' / ')} |`,
    `| achieved (held out) | ${p2(r.achieved.accuracy)} | ${m3(r.achieved.meanMs)} | ${m3(r.achieved.latencyMs)} | ${r.achieved.exitFractions.map(p2).join(' / ')} |`,
    `| no exit (fit) | ${p2(r.noExit.accuracy)} | ${m3(r.noExit.meanMs)} | ${m3(r.noExit.latencyMs)} | |`,
    `| oracle bound (fit) | ${p2(r.oracle.accuracy)} | ${m3(r.oracle.meanMs)} | | |`,
    '',
    `Search: ${r.search.strategy}, ${r.search.evaluated} policies in ${r.search.ms.toFixed(1)} ms. Frontier plot: ${path.basename(r.files.svg)}.`,
    '',
  ].join('\n');
}

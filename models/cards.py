"""Write each zoo model's card (models/<name>/README.md) from the results.json its training run
produced, so that every figure on a card is one a command measured.

    /usr/bin/python3 models/cards.py
    /usr/bin/python3 models/cards.py --latency .bench/bench.json   # also record the CBNet's measured
                                                                  # cost per exit point from `npm run bench`
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def pct(x):
    return f"{100 * x:.2f}%"


def load(name):
    with open(os.path.join(HERE, name, "results.json")) as f:
        return json.load(f)


def branchy_card(r):
    name = r["model"]
    w = r.get("width", 64)
    m = r["macsByLayer"]
    stem = m["stage1.features.0.0"]
    s2 = m["stage2.0.0"] + m["stage2.1.0"]
    s3 = m["stage3.0.0"] + m["stage3.1.0"]
    conv_head = r.get("exit0Head") == "conv"
    h0 = m["stage1.head.0"] + m["stage1.head.4"] if conv_head else m["stage1.head"]
    h = [h0, m["head2"], m["head3.1"] + m["head3.4"]]
    backbone = [stem, s2, s3]
    stage = [backbone[k] + h[k] for k in range(3)]
    cum = [sum(stage[:k + 1]) for k in range(3)]
    rows = "\n".join(
        f"| {k} | `exit_{k}` | {backbone[k]:,} | {h[k]:,} | {stage[k]:,} | {cum[k]:,} | {cum[k] / cum[0]:.1f}x | "
        f"{pct(r['testAccuracy'][k])} | {pct(r['calibAccuracy'][k])} |"
        for k in range(3))
    oracle = "\n".join(f"| {k} | {pct(s)} |" for k, s in enumerate(r["oracleShares"]))
    if w != 64:
        base = load("fmnist-branchy")["macsByLayer"]
        base_last = base["stage3.0.0"] + base["stage3.1.0"] + base["head3.1"] + base["head3.4"]
    wide = "" if w == 64 else f"""
The same network as `fmnist-branchy` with stage 2 widened from 64 to {w} channels, trained on
its own: exits 0 and 1 have the same shape and cost as fmnist-branchy's first version (exit 0 is
the linear head fmnist-branchy had before its exit-0 head was retrained), the last stage costs {stage[2] / base_last:.1f}x as much
({stage[2]:,} MACs instead of {base_last:,}). It is
there to show early exit on a backbone whose deep layers hold most of the work, as in real edge
models: on the 2-vCPU x86 build host fmnist-branchy's whole forward pass costs only about four
times its exit 0, whose time is mostly onnxruntime's fixed cost per session call, and that caps
its early-exit speed-up (docs/benchmarks.md).
"""
    head0 = ("Conv3x3 16→32 stride 2 + BN + ReLU (→32x7x7), Flatten, Linear 1568→10" if conv_head
             else "Flatten, Linear 3136→10")
    retrained = "" if not conv_head else head_note(r)
    return f"""# {name}

A BranchyNet-style multi-exit CNN for Fashion-MNIST (28x28 grey, 10 classes) with three exits.
File: `{name}.onnx` (opset 13, input `image` `[batch,1,28,28]`, outputs `exit_0`,
`exit_1`, `exit_2` — logits, one per exit, batch dimension dynamic). Preprocessing and labels
are in the file's `metadata_props` (`edgeexit.preprocess`, `edgeexit.labels`).
{wide}{retrained}
## Architecture

| stage | layers | exit head |
|---|---|---|
| 0 | Conv3x3 1→16 + BN + ReLU, MaxPool 2 (→16x14x14) | {head0} |
| 1 | Conv3x3 16→32, Conv3x3 32→32 (+BN, ReLU), MaxPool 2 (→32x7x7) | Flatten, Linear 1568→10 |
| 2 | Conv3x3 32→{w}, Conv3x3 {w}→{w} (+BN, ReLU), MaxPool 2 (→{w}x3x3) | Linear {w * 9}→128, ReLU, Dropout 0.3, Linear 128→10 |

BatchNorm is folded into the convolutions by the ONNX export (eval mode). Parameters:
{r['params']:,}.

## MACs and accuracy per exit

MACs for one image. "Stage MACs" match `edgeexit inspect`'s per-exit stage figure; "cumulative"
is what a cascade that stops at that exit has computed, earlier heads included (`inspect`'s
cumulative column counts only what the exit depends on, so it leaves the earlier heads out). Test = the full Fashion-MNIST test set (10,000 images from Debian's
`dataset-fashion-mnist`); calibration = the 3,000 held-out training images in
`calibration/fashion-mnist/`.

| exit | output | backbone MACs | head MACs | stage MACs | cumulative MACs | vs exit 0 | test top-1 | calibration top-1 |
|---|---|---:|---:|---:|---:|---:|---:|---:|
{rows}

Reproduce: `npx edgeexit eval models/{name}/{name}.onnx --data test`.

## Oracle exit distribution (test set)

Share of test images whose *cheapest correct* exit is k — the bound no threshold policy can beat.

| cheapest correct exit | share |
|---:|---:|
{oracle}
| none correct | {pct(r['oracleNone'])} |

## Training

`/usr/bin/python3 models/train.py branchy --epochs {r['epochs']}{'' if w == 64 else f' --width {w} --tag {name}'}` — {r['trainImages']:,} training images
(the 3,000 calibration images are held out), horizontal flips, batch {r['batch']}, Adam with a
one-cycle schedule (peak 3e-3), loss = 0.6·CE(exit 0) + 0.8·CE(exit 1) + 1.0·CE(exit 2)
(BranchyNet's weighted sum of the exits' losses). {r['trainSeconds']} s on the 2-core x86-64 build
machine, torch {r['torch']} ({r['threads']} threads), seed fixed.{head_training(r)} Training is a one-off; the ONNX
file and `{name}.pt` are committed.
"""


def head_note(r):
    p = r["previousExit0"]
    return f"""
**Exit 0 retrained (v1.1.0).** The first exit-0 head (Flatten, Linear 3136→10, {p['macs']:,} MACs,
{pct(p['testAccuracy'])} test / {pct(p['calibAccuracy'])} calibration) was replaced by a stronger one
trained with everything else frozen (weights, and BatchNorm statistics in eval mode): exits 1 and
2 compute exactly what they did (`train.py` asserts their logits are equal). Exit 0 now reaches
{pct(r['testAccuracy'][0])} test / {pct(r['calibAccuracy'][0])} calibration for
{r['macsByLayer']['stage1.head.0'] + r['macsByLayer']['stage1.head.4']:,} head MACs. On the x86 build host a stage-0 call is mostly
onnxruntime's fixed cost per session call, so the extra MACs cost little time there
(docs/benchmarks.md measures it).
"""


def head_training(r):
    if r.get("exit0Head") != "conv":
        return ""
    hd = r["head"]
    return (f" Then `/usr/bin/python3 models/train.py branchy-head --epochs {hd['epochs']}`: the exit-0 head"
            f" alone, CE + {hd['distill']} × distillation of exit 2 (temperature 4), same flips, Adam one-cycle;"
            f" {hd['trainSeconds']} s ({hd['threads']} threads).")


# Each CBNet folder with the backbone its converter is sized for (`--backbone` in the bench).
CBNETS = {"fmnist-cbnet": "fmnist-branchy-wide", "fmnist-cbnet-lite": "fmnist-branchy"}
CLASSIFIER = {
    "fmnist-cbnet": "`fmnist-branchy` v1.0.0's stage 0 and its first, linear exit 0",
    "fmnist-cbnet-lite": "`fmnist-branchy`'s stage 0 and exit 0 (v1.1.0, the conv exit-0 head)",
}


def backbone_full_macs(b):
    m = b["macsByLayer"]
    return sum(v for k, v in m.items() if not k.startswith(("stage1.head", "head2")))


def cbnet_card(r, b, name, backbone):
    mc = r["macs"]
    full_b = backbone_full_macs(b)
    share = mc["pair"] / full_b
    tried = ""
    ablation = os.path.join(HERE, "fmnist-cbnet", "ablations.json")
    if os.path.exists(ablation):
        with open(ablation) as f:
            rows = json.load(f)
        tried = "\n".join(
            f"| {a['what']} | {pct(a['calibPair'])} | {pct(a['testPair'])} |" for a in rows)
        tried = ("\n| variant | calibration top-1 (pair) | test top-1 (pair) |\n|---|---:|---:|\n" + tried + "\n")
    light, pair, final = r["testAccuracy"]["light"], r["testAccuracy"]["pair"], b["testAccuracy"][-1]
    gain = 100 * (pair - light)
    gap = 100 * (final - pair)
    flags = (f"--converter {r.get('converter', 'full')}" + ("" if name == "fmnist-cbnet" else f" --tag {name}"))
    return f"""# {name}

CBNet (Mahmud et al., "CBNet: A Plug-and-Play Network to Accelerate Deep Neural Networks",
arXiv 2403.07036) for Fashion-MNIST: a *converting autoencoder* turns any image into an "easy"
image of its class, and a *lightweight classifier* — {CLASSIFIER[name]},
frozen — classifies the converted image. Sized for, and benchmarked with, `--backbone
{backbone}.onnx` ({full_b:,} MACs without side heads).

Files (opset 13, batch dimension dynamic, each with `edgeexit.preprocess`/`edgeexit.labels`
metadata and an `edgeexit.role`):

| file | input → output | MACs |
|---|---|---:|
| `converter.onnx` | `image` [b,1,28,28] → `converted` [b,1,28,28] (already normalised) | {mc['converter']:,} |
| `classifier.onnx` | `image` → `exit_0` logits ({CLASSIFIER[name].split(" (")[0].replace("`fmnist-branchy`'s stage 0 and exit 0", "fmnist-branchy's exit 0")}) | {mc['classifier']:,} |
| `pipeline.onnx` | `image` → `cbnet` logits (converter then classifier, one graph) | {mc['pair']:,} |

The pair costs {mc['pair']:,} MACs = **{pct(share)}** of the full {backbone}
({full_b:,} MACs). Parameters: converter {r['params']['converter']:,}, classifier
{r['params']['classifier']:,}.

## Converter

{converter_text(r, name)}
{cost_section(r, b, name, backbone)}
## Accuracy (top-1)

| | test (10,000) | calibration (3,000) |
|---|---:|---:|
| lightweight classifier alone | {pct(light)} | {pct(r['calibAccuracy']['light'])} |
| CBNet pair (converter → classifier) | {pct(pair)} | {pct(r['calibAccuracy']['pair'])} |
| {backbone} final exit (reference) | {pct(final)} | {pct(b['calibAccuracy'][-1])} |

The pair gains **{gain:+.2f} pp** over the classifier alone and is
**{gap:.2f} pp** below its backbone's final exit (issue 17's target: ≤ 1 pp), at {pct(share)} of its MACs. A hybrid that is right when either the classifier on the raw image or the pair is
right would reach {pct(r['hybridOracle']['eitherCorrect'])} (an oracle bound for the runtime's hybrid policy).

Reproduce: `npx edgeexit eval models/{name}/pipeline.onnx --data test` and
`npx edgeexit eval models/{name}/classifier.onnx --data test`.

## How the "easy" targets were chosen

CBNet trains the converter to map a hard image to an easy image of the same class, where "easy"
means one that an early exit classifies confidently. Here: for each class, the {r['easyK']} training
images that the lightweight classifier gets right with the highest max-softmax, averaged into one
target image per class (averaging a few smooths one image's quirks). The ten targets, in label
order (`easy-targets.png`, from `easy-targets.npy`):

![easy targets](easy-targets.png)
 Loss = MSE(converter(x), easy target of x's class) + {r['ceWeight']} × CE(classifier(converter(x)), y)
with the classifier frozen — the cross-entropy term keeps the converted images on the side of the
classifier's decision boundary that the label wants, which MSE to a prototype alone does not
guarantee. A third term distils the branchy final exit's softened predictions (weight
{r.get('distill', 0)}, temperature 4) into the pair, so the converter learns which classes look alike.

What was tried: a ConvTranspose decoder first (same job; torch's CPU backward for it was 2.5x
slower here, so it became nearest-upsample + conv before a full run); the committed model is the
run with MSE + CE + distillation. An MSE-only ablation was not run to completion in this session.
{tried}
## Training

`/usr/bin/python3 models/train.py cbnet --epochs {r['epochs']} {flags} --easy-k {r['easyK']} --ce-weight {r['ceWeight']} --distill {r.get('distill', 0)}`
(after `train.py branchy`{'' if name == 'fmnist-cbnet' else ' and `train.py branchy-head`'}, whose stage 0 + exit 0 it reuses, frozen{'; it was trained against fmnist-branchy v1.0.0, so re-running it now would train against v1.1.0 exit 0: check out v1.0.0 `fmnist-branchy.pt` and `results.json` first' if name == 'fmnist-cbnet' else ''}). Same {57000:,} training images
and flips as fmnist-branchy, batch {r['batch']}, Adam one-cycle (peak 3e-3). {r['trainSeconds']} s on the
2-core x86-64 build machine, torch {r['torch']} ({r['threads']} threads).
"""


FULL_CONVERTER = ("Encoder: Conv3x3 1→16 + BN + ReLU + MaxPool, Conv3x3 16→32 + BN + ReLU + MaxPool, Conv3x3 "
                  "32→24 + BN + ReLU, Linear 1176→{latent} + ReLU. Decoder: Linear {latent}→1568 + ReLU, nearest "
                  "Upsample ×2 + Conv3x3 32→8 + ReLU, nearest Upsample ×2 + Conv3x3 8→1 + Sigmoid (ConvTranspose did "
                  "the same job but trained 2.5x slower on this CPU), then the classifier's normalisation "
                  "((x − mean)/std) so the pair chains directly.")
LITE_CONVERTER = ("Encoder: Conv3x3 1→16 stride 2 + BN + ReLU (→16x14x14), Conv3x3 16→32 stride 2 + BN + ReLU "
                  "(→32x7x7), Conv3x3 32→32 + BN + ReLU, Linear 1568→{latent} + ReLU. Decoder: Linear {latent}→784 + "
                  "Sigmoid, reshaped to 1x28x28 — no upsampling convolutions: the targets are one prototype image "
                  "per class, which a linear map from the code can draw. Then the classifier's normalisation "
                  "((x − mean)/std) so the pair chains directly (`--converter lite`, models/zoo/cbnet.py "
                  "`LiteConverter`).")


def converter_text(r, name):
    kind = r.get("converter", "full")
    text = (LITE_CONVERTER if kind == "lite" else FULL_CONVERTER).format(latent=r["latent"])
    if kind == "full":
        text += ("\n\nThis converter is sized for fmnist-branchy-wide: in front of the 5.65M-MAC fmnist-branchy "
                 "(its first pairing) the pair was slower than the full model it stands in for "
                 "(docs/benchmarks.md). `fmnist-cbnet-lite` is the converter sized for fmnist-branchy.")
    prev = r.get("previousConverter")
    if prev:
        text += (f"\n\nIt replaces the first converter (`--converter full`, `Converter` in models/zoo/cbnet.py: "
                 f"conv + max-pool encoder, a decoder of two nearest-upsampling convolutions at 14x14 and 28x28), which cost {prev['macs']:,} MACs and "
                 f"{prev['params']:,} parameters for a pair at {pct(prev['testPair'])} test / {pct(prev['calibPair'])} calibration: "
                 f"next to the 5.65M-MAC fmnist-branchy that pair was slower than the full model it stands in for "
                 f"(docs/benchmarks.md). This one is sized for that backbone: {r['macs']['converter']:,} MACs, "
                 f"{r['params']['converter']:,} parameters.")
    return text


def cost_section(r, b, name, backbone):
    """Cost of each exit point in the order the hybrid tries them: MACs and parameters a sample
    leaving there has paid for, and (when recorded) the latency `npm run bench` measured."""
    mc, pr, m = r["macs"], r["params"], b["macsByLayer"]
    exit1 = m["stage1.features.0.0"] + m["stage2.0.0"] + m["stage2.1.0"] + m["head2"]
    exit2 = m["stage3.0.0"] + m["stage3.1.0"] + m["head3.1"] + m["head3.4"]
    full = backbone_full_macs(b)
    stage_macs = [mc["classifier"], mc["pair"], exit1, exit2]
    bparams = b["params"]
    stage_params = [pr["classifier"], pr["converter"], None, None]
    lat = None
    path = os.path.join(HERE, name, "latency.json")
    if os.path.exists(path):
        with open(path) as f:
            lat = json.load(f)
    names = ["classifier on the image", "converter → classifier (the CBNet pair)",
             "backbone exit_1 (from the image)", "backbone exit_2"]
    rows = []
    cum = 0
    for k, n in enumerate(names):
        cum += stage_macs[k]
        p = f"{stage_params[k]:,}" if stage_params[k] is not None else "—"
        ms = ""
        if lat:
            f32, q8 = lat["stageMs"]["fp32"], lat["stageMs"].get("int8")
            ms = f" | {f32[k]:.3f} | {sum(f32[:k + 1]):.3f}"
            if q8:
                ms += f" | {q8[k]:.3f} | {sum(q8[:k + 1]):.3f}"
        rows.append(f"| {k} | {n} | {stage_macs[k]:,} | {cum:,} | {cum / full:.2f} | {p}{ms} |")
    head = "| point | what runs | MACs | cumulative MACs | vs full backbone | params"
    sep = "|---:|---|---:|---:|---:|---:"
    if lat:
        head += " | fp32 ms | fp32 cumulative ms"
        sep += "|---:|---:"
        if lat["stageMs"].get("int8"):
            head += " | int8 ms | int8 cumulative ms"
            sep += "|---:|---:"
    table = "\n".join([head + " |", sep + "|"] + rows)
    note = ""
    if lat:
        v = lat["variants"]
        fmt = lambda n: f"{n} {v[n]['meanMs']:.3f} ms ({v[n]['speedup']:.2f}x, {v[n]['deltaPp']:+.2f} pp)"
        base = lat["baseline"]
        note = (f"\n\nMeasured by `{lat['command']}` ({lat['date']}, {lat['cpu']}, onnxruntime-node, one thread, "
                f"batch 1; load average {lat['load']}): per-point ms are the stage latencies the hybrid's "
                f"calibration measured (`calibration.{lat['keys']}.stageMs` in the bench JSON; 100 calls per point, so "
                f"one busy moment shows: they are noisier than the test-set means that follow). Model-only mean on "
                f"the 10,000 test images against the full {backbone} float ({v[base]['meanMs']:.3f} ms): "
                + ", ".join(fmt(n) for n in v if n != base)
                + ". One shared 2-core VM under other jobs' load: compare ratios, not milliseconds.")
    return f"""
## Cost per exit point (with `--backbone {backbone}.onnx`)

The hybrid tries these in order; a sample that leaves at point k has paid for every row up to k.
The full backbone (`--exits exit_2`, no side heads) is {full:,} MACs; {backbone} has
{bparams:,} parameters in all (the backbone rows' parameters are its own, not the pair's).

{table}{note}
"""


def record_latency(bench_json):
    """Copy the CBNet's measured cost per exit point out of `npm run bench`'s JSON."""
    with open(bench_json) as f:
        j = json.load(f)
    rows = {x["variant"]: x for x in j["rows"] if x["kind"] == "model-only" and x["batch"] == 1}
    loads = [l["loadavg"][0] for l in j["loads"]]
    setups = {
        "fmnist-cbnet-lite": ("full float", ["CBNet float", "CBNet int8", "hybrid float", "hybrid int8"], "cbnetF", "cbnetQ"),
        "fmnist-cbnet": ("wide: full float", ["wide: CBNet float", "wide: hybrid float"], "cbnetWF", None),
    }
    for name, (base, keep, kf, kq) in setups.items():
        out = {
            "command": j["command"], "date": j["date"][:16].replace("T", " ") + " UTC", "cpu": j["cpu"],
            "load": f"{min(loads):.1f}–{max(loads):.1f}", "baseline": base, "keys": "/".join(k for k in (kf, kq) if k),
            "stageMs": {"fp32": j["calibration"][kf]["stageMs"], **({"int8": j["calibration"][kq]["stageMs"]} if kq else {})},
            "variants": {k: {"meanMs": rows[k]["latencyMs"]["mean"], "speedup": rows[k]["speedup"],
                             "deltaPp": rows[k]["deltaPp"], "accuracy": rows[k]["accuracy"]} for k in [base] + keep},
        }
        with open(os.path.join(HERE, name, "latency.json"), "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


def write_grey_png(path, pixels):
    """An 8-bit greyscale PNG from a [h, w] uint8 array, with zlib alone (no Pillow needed)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))  # filter type 0 per row
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def easy_png(folder):
    import numpy as np
    t = np.load(os.path.join(folder, "easy-targets.npy"))[:, 0]  # [10, 28, 28] in [0, 1]
    strip = np.concatenate([np.pad(x, 2, constant_values=1.0) for x in t], axis=1)
    img = (np.clip(strip, 0, 1) * 255).round().astype(np.uint8)
    write_grey_png(os.path.join(folder, "easy-targets.png"), img.repeat(3, axis=0).repeat(3, axis=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", help="npm run bench's JSON: record the CBNet's measured cost per exit point first")
    args = ap.parse_args()
    if args.latency:
        record_latency(args.latency)
    b = load("fmnist-branchy")
    with open(os.path.join(HERE, "fmnist-branchy", "README.md"), "w") as f:
        f.write(branchy_card(b))
    if os.path.exists(os.path.join(HERE, "fmnist-branchy-wide", "results.json")):
        with open(os.path.join(HERE, "fmnist-branchy-wide", "README.md"), "w") as f:
            f.write(branchy_card(load("fmnist-branchy-wide")))
    for name, backbone in CBNETS.items():
        if os.path.exists(os.path.join(HERE, name, "results.json")):
            with open(os.path.join(HERE, name, "README.md"), "w") as f:
                f.write(cbnet_card(load(name), load(backbone), name, backbone))
            easy_png(os.path.join(HERE, name))
    print("cards written")


if __name__ == "__main__":
    main()

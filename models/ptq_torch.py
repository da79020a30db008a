"""PyTorch's own post-training static int8 quantisation of fmnist-branchy, for comparison with
edgeexit's int8 QDQ compiler (docs/benchmarks.md). No training.

    /usr/bin/python3 models/ptq_torch.py [--runs 200] [--json models/fmnist-branchy/ptq-torch.json]

FX graph mode (torch.ao.quantization.quantize_fx.prepare_fx / convert_fx, which fuses
conv+bn+relu itself) with each backend's default QConfigMapping, calibrated on the SAME 3,000
held-out calibration images the compiler uses (common.training_data()'s xcal), evaluated per exit
(top-1) on the full 10,000-image test set. Size: bytes of torch.jit.save of the scripted model
(float and quantised alike) and of torch.save(state_dict). Latency: batch 1, one thread, median of
--runs runs, variants interleaved run by run (as scripts/quant-bench.ts does), whole network
(all three exits), for context only.

Backends: Debian's torch 1.13 is built WITHOUT FBGEMM (supported engines: qnnpack, onednn), so
  - "qnnpack": qnnpack qconfig (per-tensor symmetric int8 weights, HistogramObserver uint8
    activations, full range) run on the qnnpack engine: what a Raspberry Pi would use;
  - "onednn": x86 qconfig for oneDNN (per-channel int8 weights, HistogramObserver, full range)
    run on the onednn engine;
  - "fbgemm-qconfig": fbgemm's qconfig (per-channel weights, HistogramObserver with
    reduce_range=True, i.e. 7-bit activations) run on onednn kernels, since the fbgemm engine is
    not in this build: its ranges are fbgemm's, its integer arithmetic and latency oneDNN's;
  - ablations: "qnnpack-perchannel" (qnnpack with per-channel weights, as edgeexit does) and
    "onednn-minmax" (MinMax activation ranges instead of HistogramObserver).

Run with Debian's /usr/bin/python3 (python3-torch 1.13), never the pyenv python.
"""
import argparse
import copy
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings

import torch
from torch.ao.quantization import (HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver, QConfig,
                                   QConfigMapping,
                                   get_default_qconfig_mapping)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo import common  # noqa: E402
from zoo.branchy import BranchyNet  # noqa: E402

MODEL_DIR = os.path.join(common.ROOT, "models", "fmnist-branchy")
warnings.filterwarnings("ignore")

# name, qconfig mapping backend, engine that runs it, global qconfig override (None: the default)
VARIANTS = [
    ("qnnpack", "qnnpack", "qnnpack", None),
    ("onednn", "onednn", "onednn", None),
    ("fbgemm-qconfig", "fbgemm", "onednn", None),
    # Ablations, to say why results differ from edgeexit's (per-channel int8 weights everywhere,
    # MinMax/Percentile/Entropy activation ranges, no reduce_range):
    ("qnnpack-perchannel", "qnnpack", "qnnpack",
     QConfig(activation=HistogramObserver.with_args(reduce_range=False),
             weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric))),
    ("onednn-minmax", "onednn", "onednn",
     QConfig(activation=MinMaxObserver.with_args(reduce_range=False),
             weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric))),
]


@torch.no_grad()
def top1(model, x, y, bs=1000):
    correct = None
    for i in range(0, x.shape[0], bs):
        outs = model(x[i:i + bs])
        c = [(o.argmax(1) == y[i:i + bs]).sum().item() for o in outs]
        correct = c if correct is None else [a + b for a, b in zip(correct, c)]
    return [c / x.shape[0] for c in correct]


def scripted_bytes(model):
    try:
        sm = torch.jit.script(model)
        how = "script"
    except Exception:  # pragma: no cover - fall back to tracing
        sm = torch.jit.trace(model, torch.zeros(1, 1, 28, 28))
        how = "trace"
    buf = io.BytesIO()
    torch.jit.save(sm, buf)
    sd = io.BytesIO()
    torch.save(model.state_dict(), sd)
    return sm, len(buf.getvalue()), len(sd.getvalue()), how


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--json", default=os.path.join(MODEL_DIR, "ptq-torch.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(common.SEED)
    engines = torch.backends.quantized.supported_engines

    _, _, xcal, ycal = common.training_data()
    xte, yte = common.test_data()
    example = (torch.zeros(1, 1, 28, 28),)

    # The exit-0 head the committed weights have (models/train.py branchy-head retrained it).
    with open(os.path.join(MODEL_DIR, "results.json")) as f:
        float_model = BranchyNet(exit0=json.load(f).get("exit0Head", "linear"))
    float_model.load_state_dict(torch.load(os.path.join(MODEL_DIR, "fmnist-branchy.pt")))
    float_model.eval()

    rows = []
    fsm, fbytes, fsd, how = scripted_bytes(float_model)
    rows.append({"name": "fp32", "engine": None, "qconfig": None, "model": float_model, "scripted": fsm,
                 "top1": top1(float_model, xte, yte), "calibTop1": top1(float_model, xcal, ycal),
                 "torchscriptBytes": fbytes, "stateDictBytes": fsd, "serialised": how})
    skipped = []
    for name, qbackend, engine, override in VARIANTS:
        if engine not in engines:
            skipped.append({"name": name, "why": f"engine {engine} not in {engines}"})
            continue
        torch.backends.quantized.engine = engine
        t0 = time.time()
        # The default mappings set Conv/Linear by object type to the same qconfig as the global
        # one; an override therefore replaces the whole mapping.
        qmap = get_default_qconfig_mapping(qbackend) if override is None else QConfigMapping().set_global(override)
        prepared = prepare_fx(copy.deepcopy(float_model), qmap, example)
        with torch.no_grad():
            for i in range(0, xcal.shape[0], 500):
                prepared(xcal[i:i + 500])
        q = convert_fx(prepared)
        q.eval()
        secs = time.time() - t0
        qc = qmap.global_qconfig
        sm, qbytes, qsd, how = scripted_bytes(q)
        rows.append({"name": name, "engine": engine, "qconfig": qbackend,
                     "activationObserver": repr(qc.activation), "weightObserver": repr(qc.weight),
                     "model": q, "scripted": sm, "prepareCalibrateConvertSeconds": round(secs, 1),
                     "top1": top1(q, xte, yte), "calibTop1": top1(q, xcal, ycal),
                     "torchscriptBytes": qbytes, "stateDictBytes": qsd, "serialised": how})
        print(f"{name}: quantised on {engine} in {secs:.1f} s", file=sys.stderr, flush=True)

    # Latency: batch 1, one thread, scripted models, interleaved run by run.
    torch.set_num_threads(1)
    x1 = xte[:1]
    times = {r["name"]: [] for r in rows}
    with torch.no_grad():
        for r in rows:
            if r["engine"]:
                torch.backends.quantized.engine = r["engine"]
            for _ in range(20):
                r["scripted"](x1)
        for _ in range(args.runs):
            for r in rows:
                if r["engine"]:
                    torch.backends.quantized.engine = r["engine"]
                t0 = time.perf_counter_ns()
                r["scripted"](x1)
                times[r["name"]].append((time.perf_counter_ns() - t0) / 1e6)
    for r in rows:
        r["medianMs"] = statistics.median(times[r["name"]])

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    print(f"fmnist-branchy, torch {torch.__version__} PTQ (FX graph mode), engines {engines}; "
          f"calibration {xcal.shape[0]} images, test {xte.shape[0]} images; latency: median of {args.runs} "
          f"runs at batch 1, 1 thread, whole network (3 exits), {cpu}")
    print()
    hdr = ["variant".ljust(18), "engine".ljust(8)] + [f"exit {k} top-1".rjust(13) for k in range(3)] + \
          ["TorchScript".rjust(12), "ratio".rjust(6), "state_dict".rjust(11), "ratio".rjust(6), "median ms".rjust(10)]
    print("  ".join(hdr))
    for r in rows:
        print("  ".join([r["name"].ljust(18), (r["engine"] or "-").ljust(8)] +
                        [f"{t * 100:.2f}%".rjust(13) for t in r["top1"]] +
                        [f"{r['torchscriptBytes'] / 1024:.1f} KiB".rjust(12),
                         f"{r['torchscriptBytes'] / fbytes:.3f}".rjust(6),
                         f"{r['stateDictBytes'] / 1024:.1f} KiB".rjust(11),
                         f"{r['stateDictBytes'] / fsd:.3f}".rjust(6),
                         f"{r['medianMs']:.4f}".rjust(10)]))
    for s in skipped:
        print(f"skipped {s['name']}: {s['why']}")

    out = {"model": "fmnist-branchy", "torch": torch.__version__, "mode": "fx", "engines": engines,
           "runs": args.runs, "cpu": cpu, "latencyThreads": 1, "evalThreads": 2,
           "calibrationImages": int(xcal.shape[0]), "testImages": int(xte.shape[0]),
           "command": "/usr/bin/python3 models/ptq_torch.py --runs %d" % args.runs,
           "measuredAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "results": [{k: v for k, v in r.items() if k not in ("model", "scripted")} for r in rows],
           "skipped": skipped}
    common.write_json(args.json, out)
    print(f"\nwrote {os.path.relpath(args.json, common.ROOT)}")


if __name__ == "__main__":
    main()

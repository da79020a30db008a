"""Train and export the edgeexit reference zoo (one-off; outputs are committed).

    /usr/bin/python3 models/train.py all          # branchy, cbnet (full), branchy-head, cbnet (lite), calibration PNGs
    /usr/bin/python3 models/train.py branchy --epochs 14
    /usr/bin/python3 models/train.py branchy --width 128 --epochs 8 --tag fmnist-branchy-wide
    /usr/bin/python3 models/train.py branchy-head --epochs 4   # stronger exit-0 head, trunk frozen
    /usr/bin/python3 models/train.py cbnet --converter full --epochs 12   # fmnist-cbnet (against branchy v1.0.0)
    /usr/bin/python3 models/train.py cbnet --converter lite --epochs 6    # fmnist-cbnet-lite
        [--ce-weight 1.0] [--distill 0.5] [--tag name]
    /usr/bin/python3 models/train.py calib        # write calibration/fashion-mnist/<class>/*.png

Needs Debian's python3-torch, python3-onnx and dataset-fashion-mnist (use /usr/bin/python3,
not a pyenv python). Deterministic seeds; the 3,000 calibration images are held out of training.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo import common  # noqa: E402
from zoo.branchy import BranchyNet, LightClassifier, loss_fn  # noqa: E402
from zoo.cbnet import CONVERTERS, Pipeline  # noqa: E402

MODELS = os.path.join(common.ROOT, "models")


def batches(n, bs, shuffle, gen=None):
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for i in range(0, n, bs):
        yield order[i:i + bs]


def augment(x, gen):
    # Horizontal flip only: Fashion-MNIST garments are left/right symmetric in class.
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


@torch.no_grad()
def predict(fn, x, bs=1000):
    outs = None
    for i in range(0, x.shape[0], bs):
        o = fn(x[i:i + bs])
        o = o if isinstance(o, (tuple, list)) else (o,)
        if outs is None:
            outs = [[] for _ in o]
        for k, t in enumerate(o):
            outs[k].append(t)
    return [torch.cat(t) for t in outs]


def oracle(correct):
    """correct: [exits, n] bool. Share of samples whose cheapest correct exit is k, and none."""
    n = correct.shape[1]
    taken = torch.zeros(n, dtype=torch.bool)
    shares = []
    for k in range(correct.shape[0]):
        first = correct[k] & ~taken
        shares.append(first.sum().item() / n)
        taken |= correct[k]
    return shares, (~taken).sum().item() / n


def train_branchy(args):
    torch.manual_seed(common.SEED)
    gen = torch.Generator().manual_seed(common.SEED)
    xtr, ytr, xcal, ycal = common.training_data()
    xte, yte = common.test_data()
    model = BranchyNet(args.width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = args.epochs * ((xtr.shape[0] + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    timer = common.Timer()
    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for idx in batches(xtr.shape[0], args.batch, True, gen):
            x = augment(xtr[idx], gen)
            loss = loss_fn(model(x), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        model.eval()
        accs = [(o.argmax(1) == ycal).float().mean().item() for o in predict(model, xcal)]
        print(f"epoch {epoch + 1}/{args.epochs} loss {total / xtr.shape[0]:.4f} "
              f"calib acc {' '.join(f'{a:.4f}' for a in accs)} ({timer.seconds():.0f}s)", flush=True)
    train_s = timer.seconds()
    model.eval()
    tag = args.tag or "fmnist-branchy"
    out_dir = os.path.join(MODELS, tag)
    os.makedirs(out_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(out_dir, f"{tag}.pt"))
    names = ["exit_0", "exit_1", "exit_2"]
    common.export_onnx(model, os.path.join(out_dir, f"{tag}.onnx"), names,
                       {"edgeexit.model": tag, "edgeexit.version": "1.0.0"})
    outs = predict(model, xte)
    correct = torch.stack([o.argmax(1) == yte for o in outs])
    shares, none = oracle(correct)
    macs = common.count_macs(model, torch.zeros(1, 1, 28, 28))
    res = {
        "model": tag, "width": args.width, "exits": names,
        "testAccuracy": [c.float().mean().item() for c in correct],
        "calibAccuracy": [(o.argmax(1) == ycal).float().mean().item() for o in predict(model, xcal)],
        "oracleShares": shares, "oracleNone": none,
        "macsByLayer": macs, "params": sum(p.numel() for p in model.parameters()),
        "epochs": args.epochs, "batch": args.batch, "trainSeconds": round(train_s),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "trainImages": int(xtr.shape[0]),
    }
    common.write_json(os.path.join(out_dir, "results.json"), res)
    print(res)


def load_branchy(tag="fmnist-branchy"):
    """The committed model, whichever exit-0 head its results.json names."""
    with open(os.path.join(MODELS, tag, "results.json")) as f:
        r = json.load(f)
    model = BranchyNet(r.get("width", 64), r.get("exit0Head", "linear"))
    model.load_state_dict(torch.load(os.path.join(MODELS, tag, f"{tag}.pt")))
    return model.eval(), r


def train_branchy_head(args):
    """Replace fmnist-branchy's exit-0 head (Linear on the pooled stem) by conv_head, training
    only the head: stem, stages 1-2 and their heads keep their weights, and BatchNorm in the
    frozen trunk stays in eval mode, so exits 1 and 2 compute exactly what they did. Loss:
    CE(exit 0) + distillation of exit 2's softened predictions (computed once, for each image
    and its flip)."""
    torch.manual_seed(common.SEED + 2)
    gen = torch.Generator().manual_seed(common.SEED + 2)
    xtr, ytr, xcal, ycal = common.training_data()
    xte, yte = common.test_data()
    old, rec = load_branchy()
    model = BranchyNet(rec.get("width", 64), "conv")
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("stage1.head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert all(k.startswith("stage1.head.") for k in missing) and not unexpected, (missing, unexpected)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("stage1.head."))
    model.eval()
    T = 4.0
    teacher = predict(lambda t: old(t)[2], xtr)[0]
    teacher_flip = predict(lambda t: old(t.flip(-1))[2], xtr)[0]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    steps = args.epochs * ((xtr.shape[0] + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    timer = common.Timer()
    for epoch in range(args.epochs):
        model.stage1.head.train()
        total = 0.0
        for idx in batches(xtr.shape[0], args.batch, True, gen):
            flip = torch.rand(idx.numel(), generator=gen) < 0.5
            x = xtr[idx].clone()
            x[flip] = x[flip].flip(-1)
            soft = torch.where(flip[:, None], teacher_flip[idx], teacher[idx])
            with torch.no_grad():
                h = model.stage1.features(x)
            logits = model.stage1.head(h)
            loss = F.cross_entropy(logits, ytr[idx]) + args.distill * T * T * F.kl_div(
                F.log_softmax(logits / T, dim=1), F.softmax(soft / T, dim=1), reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        model.eval()
        acc = (predict(lambda t: model(t)[0], xcal)[0].argmax(1) == ycal).float().mean().item()
        print(f"epoch {epoch + 1}/{args.epochs} loss {total / xtr.shape[0]:.4f} calib exit-0 acc {acc:.4f} "
              f"({timer.seconds():.0f}s)", flush=True)
    train_s = timer.seconds()
    model.eval()
    with torch.no_grad():
        a, b = old(xte[:2000]), model(xte[:2000])
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]), "exits 1 and 2 changed"
    tag = "fmnist-branchy"
    out_dir = os.path.join(MODELS, tag)
    torch.save(model.state_dict(), os.path.join(out_dir, f"{tag}.pt"))
    names = ["exit_0", "exit_1", "exit_2"]
    common.export_onnx(model, os.path.join(out_dir, f"{tag}.onnx"), names,
                       {"edgeexit.model": tag, "edgeexit.version": "1.1.0"})
    outs = predict(model, xte)
    correct = torch.stack([o.argmax(1) == yte for o in outs])
    shares, none = oracle(correct)
    res = dict(rec)
    res.update({
        "exit0Head": "conv",
        # What the linear head measured (kept when the head is retrained again).
        "previousExit0": rec.get("previousExit0") or {
            "head": "linear", "testAccuracy": rec["testAccuracy"][0],
            "calibAccuracy": rec["calibAccuracy"][0], "macs": rec["macsByLayer"]["stage1.head"]},
        "testAccuracy": [c.float().mean().item() for c in correct],
        "calibAccuracy": [(o.argmax(1) == ycal).float().mean().item() for o in predict(model, xcal)],
        "oracleShares": shares, "oracleNone": none,
        "macsByLayer": common.count_macs(model, torch.zeros(1, 1, 28, 28)),
        "params": sum(p.numel() for p in model.parameters()),
        "head": {"epochs": args.epochs, "distill": args.distill, "trainSeconds": round(train_s),
                 "threads": torch.get_num_threads()},
    })
    common.write_json(os.path.join(out_dir, "results.json"), res)
    print(res)


def previous_converter(path, kind):
    """What the committed converter of another kind measured, kept for the model card."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        old = json.load(f)
    if old.get("converter", "full") == kind:
        return old.get("previousConverter")
    return {"converter": old.get("converter", "full"), "macs": old["macs"]["converter"],
            "params": old["params"]["converter"], "testPair": old["testAccuracy"]["pair"],
            "calibPair": old["calibAccuracy"]["pair"], "epochs": old["epochs"], "trainSeconds": old["trainSeconds"]}


def easy_targets(light, x, y, k):
    """Per class, the mean of the k training images that the light classifier gets right with
    the highest confidence: CBNet's "easy" images (Mahmud et al. pick easy images by early-exit
    confidence; averaging a few smooths out one image's quirks)."""
    probs = F.softmax(predict(light, x)[0], dim=1)
    conf, pred = probs.max(1)
    targets = []
    chosen = []
    for c in range(10):
        idx = torch.nonzero((y == c) & (pred == c)).flatten()
        top = idx[conf[idx].argsort(descending=True)[:k]]
        chosen.append(top.tolist())
        targets.append(x[top].mean(0))
    return torch.stack(targets), chosen


def train_cbnet(args):
    torch.manual_seed(common.SEED)
    gen = torch.Generator().manual_seed(common.SEED + 1)
    xtr, ytr, xcal, ycal = common.training_data()
    xte, yte = common.test_data()
    branchy, _ = load_branchy()
    light = LightClassifier(branchy.stage1).eval()
    for p in light.parameters():
        p.requires_grad_(False)
    targets, chosen = easy_targets(light, xtr, ytr, args.easy_k)
    # Knowledge distillation from the branchy final exit (computed once; flips change little).
    teacher = predict(branchy, xtr)[2] if args.distill > 0 else None
    T = 4.0
    conv = CONVERTERS[args.converter](args.latent)
    opt = torch.optim.Adam(conv.parameters(), lr=1e-3)
    steps = args.epochs * ((xtr.shape[0] + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    timer = common.Timer()
    for epoch in range(args.epochs):
        conv.train()
        total = 0.0
        for idx in batches(xtr.shape[0], args.batch, True, gen):
            x, y = augment(xtr[idx], gen), ytr[idx]
            out = conv(x)
            loss = F.mse_loss(out, targets[y])
            logits = light(out)
            if args.ce_weight > 0:
                loss = loss + args.ce_weight * F.cross_entropy(logits, y)
            if teacher is not None:
                soft = F.softmax(teacher[idx] / T, dim=1)
                loss = loss + args.distill * T * T * F.kl_div(F.log_softmax(logits / T, dim=1), soft, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        conv.eval()
        acc = (predict(lambda t: light(conv(t)), xcal)[0].argmax(1) == ycal).float().mean().item()
        print(f"epoch {epoch + 1}/{args.epochs} loss {total / xtr.shape[0]:.4f} calib pair acc {acc:.4f} "
              f"({timer.seconds():.0f}s)", flush=True)
    train_s = timer.seconds()
    conv.eval()
    tag = args.tag or ("fmnist-cbnet-lite" if args.converter == "lite" else "fmnist-cbnet")
    out_dir = os.path.join(MODELS, tag)
    os.makedirs(out_dir, exist_ok=True)
    torch.save(conv.state_dict(), os.path.join(out_dir, "converter.pt"))
    meta = {"edgeexit.model": tag, "edgeexit.version": "1.0.0"}
    common.export_onnx(conv, os.path.join(out_dir, "converter.onnx"), ["converted"],
                       dict(meta, **{"edgeexit.role": "cbnet-converter"}))
    common.export_onnx(light, os.path.join(out_dir, "classifier.onnx"), ["exit_0"],
                       dict(meta, **{"edgeexit.role": "cbnet-classifier"}))
    pipe = Pipeline(conv, light).eval()
    common.export_onnx(pipe, os.path.join(out_dir, "pipeline.onnx"), ["cbnet"],
                       dict(meta, **{"edgeexit.role": "cbnet-pipeline"}))
    light_te = predict(light, xte)[0].argmax(1) == yte
    pair_te = predict(pipe, xte)[0].argmax(1) == yte
    conv_macs = sum(common.count_macs(conv, torch.zeros(1, 1, 28, 28)).values())
    light_macs = sum(common.count_macs(light, torch.zeros(1, 1, 28, 28)).values())
    # The full model as deployed without early exit: the exit_2 path, no side heads.
    full_macs = sum(v for k, v in common.count_macs(branchy, torch.zeros(1, 1, 28, 28)).items()
                    if not k.startswith(("stage1.head", "head2")))
    res = {
        "model": tag, "converter": args.converter, "easyK": args.easy_k, "ceWeight": args.ce_weight, "distill": args.distill, "latent": args.latent,
        "easyTrainIndices": chosen,
        "testAccuracy": {"light": light_te.float().mean().item(), "pair": pair_te.float().mean().item()},
        "calibAccuracy": {
            "light": (predict(light, xcal)[0].argmax(1) == ycal).float().mean().item(),
            "pair": (predict(pipe, xcal)[0].argmax(1) == ycal).float().mean().item()},
        "macs": {"converter": conv_macs, "classifier": light_macs, "pair": conv_macs + light_macs,
                 "branchyFull": full_macs, "pairShareOfFull": (conv_macs + light_macs) / full_macs},
        "params": {"converter": sum(p.numel() for p in conv.parameters()),
                   "classifier": sum(p.numel() for p in light.parameters())},
        "hybridOracle": {"lightOnly": light_te.float().mean().item(),
                         "eitherCorrect": (light_te | pair_te).float().mean().item()},
        "epochs": args.epochs, "batch": args.batch, "trainSeconds": round(train_s),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    res["previousConverter"] = previous_converter(os.path.join(out_dir, "results.json"), args.converter)
    if res["previousConverter"] is None:
        del res["previousConverter"]
    common.write_json(os.path.join(out_dir, "results.json"), res)
    # The converted "easy" targets, for the model card.
    np.save(os.path.join(out_dir, "easy-targets.npy"), (targets.numpy() * common.STD + common.MEAN))
    print({k: v for k, v in res.items() if k != "easyTrainIndices"})


def write_calibration(_args):
    from PIL import Image
    x, y = common.load_split("train")
    held = common.calibration_indices(y)
    for c in common.LABELS:
        os.makedirs(os.path.join(common.CALIB_DIR, c), exist_ok=True)
    for i in held:
        path = os.path.join(common.CALIB_DIR, common.LABELS[y[i]], f"train-{i:05d}.png")
        Image.fromarray(x[i], mode="L").save(path, optimize=True)
    print(f"wrote {len(held)} PNGs under {common.CALIB_DIR}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["branchy", "branchy-head", "cbnet", "calib", "all"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ce-weight", type=float, default=1.0)
    p.add_argument("--easy-k", type=int, default=8)
    p.add_argument("--distill", type=float, default=0.5, help="weight of distillation from the branchy final exit (0: off)")
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--converter", choices=sorted(CONVERTERS), default="lite",
                   help="cbnet: lite (stride-2 encoder, linear decoder) or full (the first, 2.04M-MAC converter)")
    p.add_argument("--tag", default=None, help="output folder and model name under models/ (default fmnist-branchy / fmnist-cbnet)")
    p.add_argument("--width", type=int, default=64, help="branchy: stage 3 channels (fmnist-branchy-wide: 128)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "all":
        # The committed order: fmnist-cbnet was trained against fmnist-branchy v1.0.0 (linear exit 0),
        # fmnist-cbnet-lite against v1.1.0 (after branchy-head).
        for what, epochs, converter in (("branchy", 14, None), ("cbnet", 12, "full"), ("branchy-head", 4, None),
                                        ("cbnet", 6, "lite")):
            args.epochs, args.converter = epochs, converter or args.converter
            {"branchy": train_branchy, "cbnet": train_cbnet, "branchy-head": train_branchy_head}[what](args)
    if args.what == "branchy":
        args.epochs = args.epochs or 14
        train_branchy(args)
    if args.what == "branchy-head":
        args.epochs = args.epochs or 4
        train_branchy_head(args)
    if args.what == "cbnet":
        args.epochs = args.epochs or (6 if args.converter == "lite" else 12)
        train_cbnet(args)
    if args.what in ("calib", "all"):
        write_calibration(args)


if __name__ == "__main__":
    main()

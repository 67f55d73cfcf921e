"""GPU check (issue 19): edgekd's distillation on a CUDA device, against fp32 and against a hand-written loop.

    python benchmarks/gpu_check.py [--device cuda] [--tiny] [--out DIR] [--compile] [--skip quickstart|throughput]
    python benchmarks/gpu_check.py --carry-list      # edgekd's dependencies a PyTorch image lacks, pinned

Two measurements, sized for under 8 minutes on one H200 (not yet run on one; ``--tiny --device cpu`` is a smoke
run of the same code: 4.5 min on a 2-core CPU, most of it bf16, which that CPU emulates):

a. **Quickstart, fp32 vs bf16.** ``recipes/quickstart.yaml`` (30k Fashion-MNIST images, 4 epochs) is pruned
   once on the CPU, then the same pruned student is distilled twice on the device through
   :func:`edgekd.distill.train_student`, at ``distill.precision: fp32`` and ``bf16``. Each result is scored in
   PyTorch on the 10k test images. Goal: bf16 within 0.3 pt of fp32.
b. **KD-epoch throughput, edgekd vs a hand loop.** A ResNet-50 teacher (torchvision, random init) and a
   ResNet-18 pruned by :func:`edgekd.prune.prune_model` (50% of MACs) train on a generated 224² image folder
   (``image_folder``, 100 classes, JPEG), un-augmented, with the teacher run on every step
   (``distill.teacher_cache_mib: 0``) and CE 0.5 + KD 0.5 (T = 4). edgekd's side is
   :func:`edgekd.distill.train_student` (its loader, objective, trainer); the hand loop is what a careful
   PyTorch user writes for the same steps: uint8 batches pinned and copied without blocking, normalised on
   the GPU, autocast forwards, float32 losses, the same SGD and schedule, one host sync per epoch.
   Images/s per side is the median over epochs 2.. (epoch 1 carries cuDNN's autotuning). Goal: ≥ 0.9×.

Results go to ``$OUT/gpu_check.json`` (the device machine's output folder) or ``--out DIR/gpu_check.json``,
and a summary to stdout. Nothing here claims a number it did not measure: a part that was skipped or failed
is recorded as such.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd import distill, prune  # noqa: E402
from edgekd.engine.device import resolve_device  # noqa: E402
from edgekd.engine.evaluate import evaluate_model  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.recipe.schema import DataConfig, ModelSpec, PruneConfig  # noqa: E402
from edgekd.run import load_recipe, prepare, recipe_from_dict  # noqa: E402
from edgekd.rundir import RunDir  # noqa: E402

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
IMAGE_PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime", "timm")  # what the GPU image brings
PRECISIONS = ("fp32", "bf16")
BF16_GOAL_PT, THROUGHPUT_GOAL = 0.3, 0.9


@dataclasses.dataclass(frozen=True)
class Size:
    """How big each part runs: the full check, or ``--tiny`` (a smoke run that fits a CPU)."""

    quickstart: tuple[str, ...]  # --set overrides of the quickstart recipe
    image_size: int
    classes: int
    train_images: int
    batch: int
    epochs: int


FULL = Size(quickstart=(), image_size=224, classes=100, train_images=4096, batch=128, epochs=4)
TINY = Size(
    quickstart=("data.train_limit=256", "data.eval_limit=128", "distill.epochs=1"),
    image_size=32,
    classes=4,
    train_images=16,
    batch=8,
    epochs=2,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="training device (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes (minutes on a CPU)")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json (default $OUT)")
    parser.add_argument("--compile", action="store_true", help="also time edgekd with distill.compile: true")
    parser.add_argument("--skip", action="append", default=[], choices=["quickstart", "throughput"])
    parser.add_argument("--carry-list", action="store_true", help="print the dependencies to carry as wheels")
    args = parser.parse_args()
    if args.carry_list:
        print("\n".join(carry_list()))
        return
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    device = resolve_device(args.device)  # a missing GPU is one line here, before any work
    size = TINY if args.tiny else FULL
    started = time.perf_counter()
    results: dict = {"environment": environment(device), "tiny": args.tiny}
    with tempfile.TemporaryDirectory(prefix="edgekd-gpu-check-") as tmp:
        if "quickstart" not in args.skip:
            results["quickstart"] = guarded(lambda: quickstart_check(args.device, size, Path(tmp)))
        if "throughput" not in args.skip:
            results["throughput"] = guarded(lambda: throughput_check(args, size, Path(tmp)))
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def guarded(part) -> dict:  # noqa: ANN001
    """Run one part; a failure is recorded (type and first line), and the other part still runs."""
    try:
        return part()
    except Exception as exc:  # noqa: BLE001 - the JSON must say what failed rather than lose both parts
        logging.exception("gpu_check part failed")
        return {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}


def environment(device: torch.device) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "device": str(device),
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }


# -- (a) the quickstart, fp32 vs bf16 ----------------------------------------------------------------------------


def quickstart_check(device: str, size: Size, tmp: Path) -> dict:
    """Prune the quickstart teacher once, distil the same student at each precision, score on the test split."""
    base = load_recipe(QUICKSTART, [f"device={device}", *size.quickstart])
    ctx = prepare(base, RunDir(tmp / "quickstart"))
    student, pruned = prune.prune_model(ctx.teacher, ctx.data, ctx.task, base.prune, base.seed)
    out: dict = {"train_images": len(ctx.data.train), "epochs": base.distill.epochs}
    for precision in PRECISIONS:
        recipe = load_recipe(
            QUICKSTART, [f"device={device}", *size.quickstart, f"distill.precision={precision}"]
        )
        copy_ = copy.deepcopy(student)
        started = time.perf_counter()
        train = distill.train_student(dataclasses.replace(ctx, recipe=recipe), copy_)
        test = evaluate_model(copy_, ctx.data.eval_loader(base.data.eval_batch_size), ctx.task)
        out[precision] = {
            "test_accuracy": test["accuracy"],
            "seconds": round(time.perf_counter() - started, 2),
            "epoch_seconds": [round(h.seconds, 2) for h in train.history],
            "train_loss": [round(h.train_loss, 4) for h in train.history],
        }
    delta = 100 * (out["bf16"]["test_accuracy"] - out["fp32"]["test_accuracy"])
    out["bf16_minus_fp32_pt"] = round(delta, 3)
    out["goal_bf16_within_pt"] = BF16_GOAL_PT
    out["goal_met"] = abs(delta) <= BF16_GOAL_PT
    out["macs_reduction"] = round(pruned.macs_reduction, 4)
    return out


# -- (b) KD-epoch throughput, edgekd vs a hand loop --------------------------------------------------------------


def throughput_check(args: argparse.Namespace, size: Size, tmp: Path) -> dict:
    """Images/s of one KD epoch through edgekd and through a hand loop, per precision (see the docstring)."""
    root = make_image_folder(tmp / "images", size)
    out: dict = {"image_size": size.image_size, "train_images": size.train_images, "batch": size.batch}
    base = prepare(throughput_recipe(args.device, root, size, "fp32"), RunDir(tmp / "kd"))  # data, teacher
    student = pruned_resnet18(base)
    for precision in PRECISIONS:
        ctx = dataclasses.replace(base, recipe=throughput_recipe(args.device, root, size, precision))
        sides = {"edgekd": edgekd_epochs(ctx, student), "hand_loop": hand_loop_epochs(ctx, student, size)}
        if args.compile:
            compiled = dataclasses.replace(
                ctx, recipe=throughput_recipe(args.device, root, size, precision, True)
            )
            sides["edgekd_compiled"] = edgekd_epochs(compiled, student)
        rates = {k: size.train_images / statistics.median(v[1:] or v) for k, v in sides.items()}
        out[precision] = {
            "images_per_s": {k: round(v, 1) for k, v in rates.items()},
            "epoch_seconds": {k: [round(s, 3) for s in v] for k, v in sides.items()},
            "edgekd_over_hand_loop": round(rates["edgekd"] / rates["hand_loop"], 3),
            "goal_met": rates["edgekd"] / rates["hand_loop"] >= THROUGHPUT_GOAL,
        }
    out["goal_ratio"] = THROUGHPUT_GOAL
    return out


def make_image_folder(root: Path, size: Size) -> Path:
    """``root/{train,val}/<class>/*.jpg``: smooth random images (JPEG-friendly, like photos), seeded."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", size.train_images), ("val", max(size.classes, size.batch))):
        for i in range(count):
            folder = root / split / f"c{i % size.classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = torch.rand(1, 3, 8, 8, generator=gen)
            image = F.interpolate(coarse, size=(size.image_size,) * 2, mode="bilinear", align_corners=False)
            pixels = (image[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def throughput_recipe(device: str, root: Path, size: Size, precision: str, compile_: bool = False):  # noqa: ANN201
    """The recipe both sides follow: un-augmented data, the teacher on every step, CE 0.5 + KD 0.5 (T = 4)."""
    data: dict = {
        "name": "image_folder",
        "root": str(root),
        "args": {"size": [size.image_size] * 2, "channels": 3},
        "augment": False,
        "batch_size": size.batch,
    }
    if "val" in DataConfig.model_fields:
        data["val"] = 0  # no validation pass inside the timed epochs
    raw = {
        "task": "classification",
        "device": device,
        "data": data,
        "teacher": {"model": {"name": "torchvision:resnet50"}},
        "distill": {
            "epochs": size.epochs,
            "precision": precision,
            "compile": compile_,
            "teacher_cache_mib": 0,
            "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 4.0}],
        },
    }
    return recipe_from_dict(raw, "gpu_check")


def pruned_resnet18(ctx) -> torch.nn.Module:  # noqa: ANN001
    """torchvision's ResNet-18 for the folder's classes, with half its MACs pruned by edgekd (on the CPU)."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="torchvision:resnet18"), ctx.data.num_classes, 3)
    cfg = PruneConfig(reduction=0.5, iterative_steps=1)
    student, _ = prune.prune_model(model, ctx.data, ctx.task, cfg, 0)
    return student


def edgekd_epochs(ctx, student: torch.nn.Module) -> list[float]:  # noqa: ANN001
    """Seconds of each epoch of edgekd's own distillation of a copy of ``student`` (its training log)."""
    train = distill.train_student(ctx, copy.deepcopy(student))
    return [h.seconds for h in train.history]


def hand_loop_epochs(ctx, student: torch.nn.Module, size: Size) -> list[float]:  # noqa: ANN001
    """Seconds of each epoch of the hand-written KD loop over the same images, models and optimizer settings."""
    device = resolve_device(ctx.recipe.device)
    cfg, precision = ctx.recipe.distill, ctx.recipe.distill.precision
    teacher = copy.deepcopy(ctx.teacher).to(device).eval().requires_grad_(False)
    model = copy.deepcopy(student).to(device).train().requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )
    steps = -(-size.train_images // size.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=size.epochs * steps)
    images, labels = ctx.data.train.images, ctx.data.train.targets
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    pre = ctx.data.preprocessing
    mean = torch.tensor(pre.mean, device=device).view(1, -1, 1, 1) * 255
    std = torch.tensor(pre.std, device=device).view(1, -1, 1, 1) * 255
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    temperature, seconds = 4.0, []
    for epoch in range(size.epochs):
        _sync(device)
        started = time.perf_counter()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch))
        total = torch.zeros((), device=device)
        for batch in order.split(size.batch):
            x = images[batch].to(device, non_blocking=True).float().sub_(mean).div_(std)
            y = labels[batch].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                with torch.no_grad():
                    t_logits = teacher(x)
                s_logits = model(x)
            s_logits, t_logits = s_logits.float(), t_logits.float()
            kd = F.kl_div(
                F.log_softmax(s_logits / temperature, 1),
                F.softmax(t_logits / temperature, 1),
                reduction="batchmean",
            )
            loss = 0.5 * F.cross_entropy(s_logits, y) + 0.5 * kd * temperature**2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        float(total)  # one host sync per epoch
        _sync(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- what to carry to a machine without edgekd's dependencies -----------------------------------------------------


def carry_list() -> list[str]:
    """``name==version`` of every distribution edgekd needs (recursively) that the GPU image does not bring.

    Read from this environment's installed metadata, so the pins are the versions the tests ran with.
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    def closure(roots: list[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            name = todo.pop().lower().replace("_", "-")
            if name in seen:
                continue
            try:
                requires = metadata.distribution(name).requires or []
            except metadata.PackageNotFoundError:
                continue
            seen.add(name)
            for line in requires:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate({"extra": ""}):
                    todo.append(req.name)
        return seen

    needed = closure(["edgekd"]) - closure(list(IMAGE_PACKAGES)) - {"edgekd", *IMAGE_PACKAGES}
    return sorted(f"{name}=={metadata.version(name)}" for name in needed)


if __name__ == "__main__":
    main()

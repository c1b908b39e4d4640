"""How long one experience of a paper preset takes: measured CPU step time, estimated GPU time.

Usage (from the repository root)::

    python benchmarks/step_time.py                      # cifar100 preset, 1 and 2 torch threads
    python benchmarks/step_time.py --threads 1 --repeats 3   # the README's figures
    python benchmarks/step_time.py --preset tinyimagenet --threads 2

What is measured, on random input of the benchmark's shape (3x32x32 for CIFAR-100),
at the preset's batch size, with the preset's backbone as the runner builds it for
MIND (gated ResNet-32, BatchNorm):

* a *teacher step*: forward, cross-entropy, backward, AdamW step;
* a *distillation step*: the teacher's forward (no grad), the student's forward,
  a distillation + cross-entropy loss, backward, AdamW step;
* the floating-point operations of each (``torch.utils.flop_counter``);
* the CPU cost per image of the benchmark's training transform (Avalanche's
  ``SplitCIFAR100`` default: random crop, flip, to-tensor, normalise), which the
  runner's data loader (``num_workers=0``) pays in the training process on any device.

One experience of MIND is ``teacher_epochs`` epochs of teacher steps plus
``train_epochs`` epochs of distillation steps over ``images_per_experience``
images, each image transformed once per epoch. The GPU figure is an *estimate*:
the measured FLOPs divided by an assumed sustained GPU throughput (``--gpu-tflops``,
a range), plus the measured per-image transform cost. No GPU was measured.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from avalanche_mind.models import build_model  # noqa: E402
from avalanche_mind.runner.presets import get_preset  # noqa: E402

#: Images per training experience and input shape of each paper preset's benchmark.
SHAPES = {
    "cifar100": (5000, (3, 32, 32), 100),  # 50,000 train images / 10 experiences; 100 classes
    "tinyimagenet": (10000, (3, 64, 64), 200),  # 100,000 / 10
    "core50": (15000, (3, 64, 64), 50),  # about 120,000 training images / 8 sessions
}


def _median_time(step, repeats: int) -> float:
    step()  # warm-up (allocations, oneDNN kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _transform_seconds_per_image(preset_name: str, n: int = 2000) -> float:
    """CPU seconds per image of the benchmark's default training transform, on PIL images."""
    import numpy as np
    from PIL import Image

    if preset_name == "cifar100":
        from avalanche.benchmarks.classic.ccifar100 import _default_cifar100_train_transform as transform
        size = 32
    elif preset_name == "tinyimagenet":
        from avalanche.benchmarks.classic.ctiny_imagenet import _default_train_transform as transform
        size = 64
    else:  # core50_domain's: Resize(64), then Avalanche's CORe50 training transform
        from torchvision import transforms as T

        transform = T.Compose([T.Resize(64), T.ToTensor(), T.RandomHorizontalFlip(),
                               T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
        size = 128
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(64)]
    for image in images:
        transform(image)
    start = time.perf_counter()
    for i in range(n):
        transform(images[i % len(images)])
    return (time.perf_counter() - start) / n


def measure(preset_name: str, threads: int, repeats: int) -> dict:
    preset = get_preset(preset_name)
    images, shape, classes = SHAPES[preset.benchmark]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = preset.batch_size
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))
    student = build_model(preset.model, classes, shape[0], **preset.model_kwargs)
    teacher = build_model(preset.model, classes, shape[0], **preset.model_kwargs).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=preset.teacher_lr)
    student.train()

    def teacher_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(student(x), y).backward()
        opt.step()

    def distillation_step():
        with torch.no_grad():
            target = teacher(x)
        opt.zero_grad(set_to_none=True)
        out = student(x)
        t = preset.temperature
        kd = F.kl_div(F.log_softmax(out / t, 1), F.softmax(target / t, 1), reduction="batchmean")
        (F.cross_entropy(out, y) + preset.beta * kd).backward()
        opt.step()

    result = {
        "preset": preset_name,
        "threads": threads,
        "batch": batch,
        "shape": list(shape),
        "params": sum(p.numel() for p in student.parameters()),
        "teacher_step_s": _median_time(teacher_step, repeats),
        "distillation_step_s": _median_time(distillation_step, repeats),
        "teacher_step_flops": _flops(teacher_step),
        "distillation_step_flops": _flops(distillation_step),
        "images_per_experience": images,
        "steps_per_epoch": math.ceil(images / batch),
        "teacher_epochs": preset.teacher_epochs,
        "train_epochs": preset.train_epochs,
    }
    return result


def per_experience(r: dict, transform_s: float, gpu_tflops: tuple) -> dict:
    steps = r["steps_per_epoch"]
    teacher_steps, distil_steps = steps * r["teacher_epochs"], steps * r["train_epochs"]
    flops = teacher_steps * r["teacher_step_flops"] + distil_steps * r["distillation_step_flops"]
    transform = transform_s * r["images_per_experience"] * (r["teacher_epochs"] + r["train_epochs"])
    cpu = teacher_steps * r["teacher_step_s"] + distil_steps * r["distillation_step_s"] + transform
    return {
        "flops": flops,
        "transform_s": transform,
        "cpu_s": cpu,
        "gpu_s": [flops / (t * 1e12) + transform for t in gpu_tflops],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cifar100", choices=sorted(SHAPES))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu-tflops", type=float, nargs=2, default=[2.0, 8.0], metavar=("LOW", "HIGH"),
                        help="assumed sustained fp32 TFLOP/s of a GPU on this small network (default: 2 8)")
    args = parser.parse_args(argv)
    transform_s = _transform_seconds_per_image(args.preset)
    print(f"{args.preset}: training transform {1e6 * transform_s:.0f} us per image (1 process)")
    for threads in args.threads:
        r = measure(args.preset, threads, args.repeats)
        e = per_experience(r, transform_s, tuple(args.gpu_tflops))
        print(
            f"{threads} thread(s): batch {r['batch']} x {r['shape']}, {r['params'] / 1e3:.0f}k params; "
            f"teacher step {r['teacher_step_s']:.2f} s ({r['teacher_step_flops'] / 1e9:.1f} GFLOP), "
            f"distillation step {r['distillation_step_s']:.2f} s ({r['distillation_step_flops'] / 1e9:.1f} GFLOP)"
        )
        print(
            f"  one experience ({r['teacher_epochs']} + {r['train_epochs']} epochs x {r['steps_per_epoch']} steps, "
            f"{r['images_per_experience']} images): {e['flops'] / 1e12:.1f} TFLOP, "
            f"CPU {e['cpu_s'] / 60:.0f} min measured-rate, "
            f"GPU estimate {e['gpu_s'][1] / 60:.1f}-{e['gpu_s'][0] / 60:.1f} min at "
            f"{args.gpu_tflops[1]:g}-{args.gpu_tflops[0]:g} TFLOP/s + {e['transform_s']:.0f} s of transforms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

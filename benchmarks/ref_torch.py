"""Time the published PyTorch HAIR (toummHus/HAIR) on this machine's GPU or CPU.

    python benchmarks/ref_torch.py REF_DIR [--dtype bfloat16] [--sizes 512 1024] \
        [--train_batches 4 32] [--train_size 128] [--repeats 3]

REF_DIR is a checkout of toummHus/HAIR (or a folder with its net/HAIR.py and
utils/ResNet.py plus empty __init__.py files); needs torch and einops. Prints
one JSON line per measurement with the same "what" names as
bench_model.py, so rows pair up: inference at batch 1 under torch.no_grad,
and a train step (L1 loss, backward, AdamW with the reference's
hyperparameters). --dtype bfloat16 runs under torch.autocast, the usual
PyTorch mixed precision (parameters stay float32, as ours do). `s` is the
best of --repeats runs after a warm-up; peak_gpu_gb is
torch.cuda.max_memory_allocated since the previous row (reset per row), or
peak_rss_gb (the process's peak so far) on a CPU.

--count_flops times nothing: on PyTorch's meta device (shapes only) it
prints the forward FLOPs per image at the inference sizes and the train
size, as counted by torch.utils.flop_counter.FlopCounterMode: matrix
multiplies and convolutions only (2 FLOPs per multiply-add), no elementwise
work. A train step is estimated as 3x its forward (the backward of a linear
map costs two forwards): FlopCounterMode's count of a depthwise
convolution's backward ignores its groups (one depthwise 3x3 conv over
64 channels, 32x32: forward 1,179,648 FLOPs, its backward counted 64x that
of a dense conv), so a counted backward would be far too large.
BENCHMARKS.md sets these beside XLA's counts of ours.
"""

import argparse
import contextlib
import json
import resource
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref_dir")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--sizes", nargs="*", type=int, default=[512, 1024])
    parser.add_argument("--train_batches", nargs="*", type=int, default=[4, 32])
    parser.add_argument("--train_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count_flops", action="store_true", help="count FLOPs, time nothing")
    args = parser.parse_args()

    import torch  # pylint: disable=g-import-not-at-top

    sys.path.insert(0, args.ref_dir)
    from net.HAIR import HAIR  # pylint: disable=g-import-not-at-top

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    amp = (
        torch.autocast(dev, dtype=torch.bfloat16)
        if args.dtype == "bfloat16"
        else contextlib.nullcontext()
    )

    def best(fn, n):
        fn()  # warm-up (cuDNN autotuning, allocator growth)
        sync()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return round(min(times), 4)

    def emit(what, s, batch):
        if dev == "cuda":
            mem = {"peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
            torch.cuda.reset_peak_memory_stats()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            mem = {"peak_rss_gb": round(peak, 2)}
        device = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
        row = {"peer": "torch-ref", "device": device, "variant": "res_hair", "what": what}
        row.update(dtype=args.dtype, s=s, images_per_s=round(batch / s, 2), **mem)
        print(json.dumps(row), flush=True)

    torch.manual_seed(0)
    if args.count_flops:
        count_flops(torch, HAIR().to("meta").eval(), args)
        return
    net = HAIR().to(dev).eval()
    for hw in args.sizes:
        x = torch.rand(1, 3, hw, hw, device=dev)
        with torch.no_grad(), amp:
            emit(f"infer 1x{hw}x{hw}", best(lambda: net(x), args.repeats), 1)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8)
    for b in args.train_batches:
        hw = args.train_size
        x = torch.rand(b, 3, hw, hw, device=dev)
        y = x * 0.9

        def step():
            opt.zero_grad()
            with amp:
                loss = (net(x).float() - y).abs().mean()
            loss.backward()
            opt.step()

        emit(f"train step {b}x{hw}x{hw}", best(step, max(1, args.repeats - 1)), b)


def count_flops(torch, net, args):
    """Prints FlopCounterMode's forward FLOPs per image (meta tensors: no compute)."""
    from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top

    jobs = [("train", args.train_size)] + [("infer", hw) for hw in args.sizes]
    for what, hw in jobs:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.empty(1, 3, hw, hw, device="meta"))
        forward = counter.get_total_flops()
        flops = 3 * forward if what == "train" else forward
        row = {"peer": "torch-ref", "what": what, "size": hw, "forward_flops": forward}
        print(json.dumps({**row, "flops": flops}), flush=True)


if __name__ == "__main__":
    main()

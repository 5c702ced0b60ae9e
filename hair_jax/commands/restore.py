"""Restore image files with a trained model.

    python -m hair_jax.restore photo.jpg scans/ --checkpoint runs/demo --output restored
    hair-restore big.tif --checkpoint hair3d.ckpt --output out --max_pixels 4000000

INPUTs are files or folders (walked recursively; outputs keep the relative
path). PNG, JPEG, BMP, TIFF and WebP of any size; grayscale, alpha, 16-bit
and EXIF orientation are handled as `hair_jax.io.images` describes. Each
output has the input's name and format (`--format png` writes PNG).

--checkpoint is a training workdir, a model export or the authors' PyTorch
.ckpt (`hair_jax.loading.load_model`).

Sizes and compiles: images are reflect-padded at the bottom/right up to the
next multiple of `--bucket` px (default 64; at least what the model needs:
multiples of 8, >= 32 px for Res-HAIR) and cropped back, so a folder of mixed
sizes compiles once per bucket size rather than once per image. Images of one
bucket run together, up to `--batch_size` and `--max_pixels` pixels per call;
a last, smaller batch is padded to a power of two.

Large images: an image whose padded size exceeds `--max_pixels`, or any image
larger than `--tile` when given, is restored in overlapping tiles (`--tile`,
default the largest that fits `--max_pixels`; `--overlap`) that all use the
GIV of the whole image (see `hair_jax.inference`).

Failures: an unreadable or corrupt file is named on stderr in one line and
skipped; the others are still restored. Exit code 0 when all went well, 1 if
any file failed, 2 for bad arguments or an unusable checkpoint. Outputs are
written under a temporary name in the output folder and renamed; an existing
output is skipped unless `--overwrite`, and an input is never overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import PIL.Image
import tqdm

from hair_jax import inference
from hair_jax.commands import common
from hair_jax.io import images
from hair_jax.io.files import as_if_opened, error_line

PROG = "hair-restore"


@dataclasses.dataclass
class Job:
    """One input file and the output it becomes."""

    source: str
    target: str
    size: tuple[int, int] | None = None  # (H, W), upright


@dataclasses.dataclass
class Options:
    """How to restore (see the command-line flags)."""

    format: str = "same"
    bucket: int = 64
    batch_size: int = 4
    max_pixels: int = inference.DEFAULT_MAX_PIXELS
    tile: int | None = None
    overlap: int = inference.DEFAULT_OVERLAP
    overwrite: bool = False


def _target_name(rel: str, fmt: str) -> str:
    return os.path.splitext(rel)[0] + ".png" if fmt == "png" else rel


def collect_jobs(inputs, out_dir: str, options: Options):
    """Expands INPUTs into jobs.

    Returns:
      (jobs, skipped, errors): jobs to run; outputs that exist already (left
      alone unless `options.overwrite`); (path, message) of bad inputs.
    """
    out_real = os.path.realpath(out_dir)
    found, errors = [], []
    for arg in inputs:
        if os.path.isdir(arg):
            count = len(found)
            for root, dirs, files in os.walk(arg):
                # Hidden entries and the output folder (inside an input) are not inputs.
                dirs[:] = sorted(
                    d
                    for d in dirs
                    if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) != out_real
                )
                for name in sorted(files):
                    if not name.startswith(".") and images.EXTENSIONS.get(_ext(name)):
                        path = os.path.join(root, name)
                        found.append((path, os.path.relpath(path, arg)))
            if len(found) == count:
                errors.append((arg, "no PNG, JPEG, BMP, TIFF or WebP images in this folder"))
        elif os.path.isfile(arg):
            if _ext(arg) in images.EXTENSIONS:
                found.append((arg, os.path.basename(arg)))
            else:
                errors.append((arg, f"unsupported file type; one of {sorted(images.EXTENSIONS)}"))
        else:
            errors.append((arg, "no such file or directory"))
    sources = {os.path.realpath(source) for source, _ in found}
    jobs, skipped, claimed = [], [], {}
    for source, rel in found:
        target = os.path.join(out_dir, _target_name(rel, options.format))
        real = os.path.realpath(target)
        if real in sources:
            errors.append(
                (source, f"its output {target} would overwrite an input; choose another --output")
            )
        elif real in claimed:
            errors.append((source, f"same output name as {claimed[real]}"))
        else:
            claimed[real] = source
            if os.path.exists(target) and not options.overwrite:
                skipped.append(target)
            else:
                jobs.append(Job(source, target))
    return jobs, skipped, errors


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _unreadable(path: str, error: BaseException) -> str:
    """Why a file could not be read, without repeating its path."""
    if isinstance(error, PIL.UnidentifiedImageError):
        return "cannot read image: unknown format or damaged file"
    return f"cannot read image ({error_line(error).replace(repr(path), 'it').replace(path, 'it')})"


class Restorer:
    """Runs jobs through a model: read, bucket, batch or tile, write.

    Attributes:
      restored, skipped, failed: output paths written, outputs left alone
        because they exist, and input paths that failed.
    """

    def __init__(self, predictor: inference.Predictor, options: Options, *, progress=None):
        self.predictor, self.options, self.progress = predictor, options, progress
        self.restored, self.skipped, self.failed = [], [], []
        self._bar = None
        self._compiled = set()  # the shapes restored so far (inference.first_call)

    def fail(self, path: str, message: str) -> None:
        self.failed.append(path)
        tqdm.tqdm.write(f"{PROG}: error: {path}: {message}", file=sys.stderr)

    def run(self, jobs: list[Job]) -> None:
        """Restores every job; failures are reported and skipped."""
        buckets, tiled = self._plan(jobs)
        total = sum(map(len, buckets.values())) + len(tiled)
        disable = True if self.progress is False else None  # None: only on a terminal
        with tqdm.tqdm(total=total, unit="img", disable=disable) as self._bar:
            for size in sorted(buckets):
                self._run_bucket(size, buckets[size])
            for job in tiled:
                self._run_tiled(job)

    def _plan(self, jobs):
        """Bucket size -> jobs restored whole, and jobs restored in tiles."""
        o, buckets, tiled = self.options, {}, []
        for job in jobs:
            try:
                job.size = images.image_size(job.source)
            except Exception as e:  # noqa: BLE001 - any decoder error means a bad file
                self.fail(job.source, _unreadable(job.source, e))
                continue
            p = self.predictor
            size = inference.padded_size(
                *job.size, min_size=p.min_size, bucket=o.bucket, multiple=p.multiple
            )
            too_big = size[0] * size[1] > o.max_pixels
            if (o.tile and max(job.size) > o.tile) or (not o.tile and too_big):
                tiled.append(job)
            else:
                buckets.setdefault(size, []).append(job)
        return buckets, tiled

    def _read(self, job: Job):
        try:
            picture = images.read_image(job.source)
            if picture.pixels.shape[:2] != job.size:
                raise images.ImageError(
                    f"decoded size {picture.pixels.shape[:2]} differs from the header's {job.size}"
                )
        except Exception as e:  # noqa: BLE001 - any decoder error means a bad file
            self.fail(job.source, _unreadable(job.source, e))
            self._bar.update(1)
            return None
        return picture

    def _run_bucket(self, size, jobs: list[Job]) -> None:
        per_call = max(
            1, min(self.options.batch_size, self.options.max_pixels // (size[0] * size[1]))
        )
        for start in range(0, len(jobs), per_call):
            read = [(job, self._read(job)) for job in jobs[start : start + per_call]]
            read = [(job, pic) for job, pic in read if pic is not None]
            if not read:
                continue
            batch = inference.padded_batch(len(read), per_call)
            what = f"{batch} x {size[0]}x{size[1]}"
            try:
                with inference.first_call(self._bar, self._compiled, (size, batch), what):
                    outs = inference.restore_batch(
                        self.predictor, [pic.pixels for _, pic in read], size, batch=batch
                    )
            except Exception as e:  # noqa: BLE001 - e.g. out of device memory
                for job, _ in read:
                    self._model_failed(job, e)
                continue
            for (job, pic), out in zip(read, outs):
                self._write(job, out, pic)

    def _run_tiled(self, job: Job) -> None:
        picture = self._read(job)
        if picture is None:
            return
        o = self.options
        p = self.predictor
        tile = o.tile or inference.auto_tile(o.max_pixels, p.min_size, p.multiple)
        try:
            with inference.first_call(
                self._bar, self._compiled, ("tile", tile), f"{tile} px tiles"
            ):
                out = inference.restore_tiled(
                    p,
                    picture.pixels,
                    tile=tile,
                    overlap=o.overlap,
                    max_pixels=o.max_pixels,
                    bucket=o.bucket,
                )
        except Exception as e:  # noqa: BLE001 - e.g. out of device memory
            self._model_failed(job, e)
            return
        self._write(job, out, picture)

    def _model_failed(self, job: Job, error: Exception) -> None:
        self.fail(
            job.source,
            f"restoration failed ({error_line(error)}); a smaller --max_pixels or --tile may help",
        )
        self._bar.update(1)

    def _write(self, job: Job, restored, picture: images.Picture) -> None:
        """Writes under a temporary name next to the target, then renames."""
        self._bar.update(1)
        if os.path.exists(job.target) and not self.options.overwrite:
            self.skipped.append(job.target)  # appeared while we worked
            return
        directory = os.path.dirname(job.target) or "."
        fmt = images.EXTENSIONS[_ext(job.target)]
        tmp = None
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=_ext(job.target), dir=directory)
            os.close(fd)
            images.write_image(tmp, restored, picture, fmt)
            as_if_opened(tmp)
            os.replace(tmp, job.target)
        except Exception as e:  # noqa: BLE001 - report, keep going with the others
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            self.fail(job.source, f"cannot write {job.target} ({error_line(e)})")
            return
        self.restored.append(job.target)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Restore images (noise, rain, haze, ...) with a HAIR / Res-HAIR model.",
        epilog="Exit codes: 0 success, 1 some files failed, 2 bad arguments or checkpoint.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    common.add_checkpoint_arguments(parser)
    parser.add_argument("--output", required=True, help="output folder (created if needed)")
    parser.add_argument("--format", choices=("same", "png"), default="same", help="output format")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--batch_size", type=int, default=4, help="images per model call (max)")
    parser.add_argument(
        "--bucket", type=int, default=64, help="pad sizes up to multiples of this (multiple of 8)"
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=inference.DEFAULT_MAX_PIXELS,
        help="memory budget: pixels per model call; larger images are tiled (default 1024*1024)",
    )
    parser.add_argument(
        "--tile", type=int, help="tile side in px (multiple of 8); default: automatic"
    )
    parser.add_argument(
        "--overlap", type=int, default=inference.DEFAULT_OVERLAP, help="tile overlap in px"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    if args.bucket < 8 or args.bucket % 8:
        parser.error("--bucket must be a positive multiple of 8")
    if args.max_pixels < 32 * 32:
        parser.error("--max_pixels must be >= 1024")
    try:
        inference.check_tiling(args.tile or inference.auto_tile(args.max_pixels), args.overlap)
    except ValueError as e:
        parser.error(f"--tile/--overlap: {e}")
    return args


def main(argv=None) -> int:
    """The command line; returns the exit code."""
    args = parse_args(argv)
    loaded = common.load_checkpoint(PROG, args)  # after the flags: loading takes seconds
    if loaded is None:
        return 2
    options = Options(
        format=args.format,
        bucket=args.bucket,
        batch_size=args.batch_size,
        max_pixels=args.max_pixels,
        tile=args.tile,
        overlap=args.overlap,
        overwrite=args.overwrite,
    )
    return restore_paths(loaded.model, args.inputs, args.output, options, progress=not args.quiet)


def restore_paths(model, inputs, out_dir: str, options: Options, *, progress=None) -> int:
    """Restores files and folders `inputs` into `out_dir`; returns the exit code.

    `model`: an NNX model, a `Predictor` or a standalone artifact.
    """
    start = time.perf_counter()
    jobs, skipped, errors = collect_jobs(inputs, out_dir, options)
    restorer = Restorer(inference.as_predictor(model), options, progress=progress)
    for path, message in errors:
        restorer.fail(path, message)
    for target in skipped:
        print(f"{PROG}: skipped {target}: exists (--overwrite replaces it)", file=sys.stderr)
    restorer.run(jobs)
    skipped = skipped + restorer.skipped
    print(
        f"Restored {len(restorer.restored)} image(s) into {out_dir} in "
        f"{time.perf_counter() - start:.1f} s ({restorer.predictor.traces} compile(s))"
        + (f"; {len(skipped)} skipped (output exists)" if skipped else "")
        + (f"; {len(restorer.failed)} failed" if restorer.failed else "")
    )
    return 1 if restorer.failed else 0


if __name__ == "__main__":
    sys.exit(main())

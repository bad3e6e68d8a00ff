"""Data-free mode (``engine.type: data_free``): calibration on synthetic images, no dataset.

The 2022.x original POT (``DataFreeEngine``, ``SyntheticImageLoader``) drew FractalDB-style
fractals (Kataoka et al., "Pre-training without Natural Images", ACCV 2020: random affine
iterated function systems, IFS), coloured them with a colourization network, flipped, blurred
and rotated them, saved them as PNG files in ``data_source`` (reused when the folder already held
images) and ran DefaultQuantization through the simplified engine on them.

Ours follows that recipe with NumPy and OpenCV only (no colourization network):

- a background of smooth random colour (bicubic upsampling of a 2x2..8x8 grid of random colours),
  plus a linear brightness ramp;
- 1-3 IFS fractals (2-4 contractive affine maps, chosen with probability proportional to
  ``|det|``, as FractalDB), rasterised as a point density at a random position and scale, and
  blended in with a two-colour gradient over the density;
- 2-6 random geometric shapes (filled or outlined circles, ellipses, rectangles, polygons, lines)
  in random colours;
- augmentation as the original: random horizontal/vertical flips, a rotation of -30..30 degrees,
  a Gaussian blur with a random odd kernel (1..15 px at 512 px, scaled with the image), then
  mild sensor noise.

Images are BGR ``uint8`` 0..255 (the shared IRs carry their own normalization), one channel for
grayscale inputs, exactly the model's ``H x W``, written as ``000000.png``, ``000001.png`` ...
Image ``i`` comes from ``numpy.random.default_rng([seed, i])``: the same seed and size give the
same pixels, whatever the number of images.

The cache: a folder gets a hidden manifest ``.data_free.json`` (generator version, seed, size,
channels, count). It is reused when it holds our images of the same size and at least as many as
needed; our own stale cache is replaced; a folder holding someone else's images is used as it is
(as the original). Generation writes into a hidden sibling folder that is renamed into place when
complete: a failure or Ctrl-C leaves no half-written cache.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pot_cli.engines.image_io import IMAGE_EXTENSIONS
from pot_cli.errors import ConfigError, DatasetError, OutputError

log = logging.getLogger("pot")

#: Bumped whenever the pixels a seed gives change (a cache of another version is regenerated).
GENERATOR_VERSION = 1
MANIFEST = ".data_free.json"
DEFAULT_SEED = 0
#: Default ``stat_subset_size`` and so the default number of generated images (the original's).
DEFAULT_SUBSET_SIZE = 300


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    :param height: image height in pixels (>= 8).
    :param width: image width in pixels (>= 8).
    :param channels: 1 (grayscale) or 3 (BGR).
    :param seed: base seed; image ``i`` uses ``numpy.random.default_rng([seed, i])``.
    """

    height: int
    width: int
    channels: int = 3
    seed: int = DEFAULT_SEED

    def manifest(self, count: int) -> dict:
        return {"generator": "pot data_free", "version": GENERATOR_VERSION, "seed": self.seed,
                "height": self.height, "width": self.width, "channels": self.channels, "count": count,
                "files": [image_name(i) for i in range(count)]}


def image_name(index: int) -> str:
    """File name of generated image ``index`` (as the original: ``{:06d}.png``)."""
    return f"{index:06d}.png"


# -- the generator -------------------------------------------------------------------------------

def _ifs_params(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """2-4 contractive affine maps ``[[a, b], [c, d]] x + [e, f]`` and their probabilities
    (proportional to ``|ad - bc|``, FractalDB). Maps whose largest singular value exceeds 0.95
    are scaled down to 0.95 so that every point sequence stays bounded."""
    k = int(rng.integers(2, 5))
    mats = rng.uniform(-1.0, 1.0, (k, 2, 2))
    for m in mats:
        s = np.linalg.svd(m, compute_uv=False)[0]
        if s > 0.95:
            m *= 0.95 / s
    shifts = rng.uniform(-1.0, 1.0, (k, 2))
    p = np.abs(np.linalg.det(mats)) + 1e-3
    return np.concatenate([mats.reshape(k, 4), shifts], axis=1), p / p.sum()


def _ifs_points(rng: np.random.Generator, n_points: int) -> np.ndarray:
    """Points of one random IFS attractor ("chaos game"), normalized to [0, 1]^2.

    Runs 64-1024 chains in parallel; the first 12 steps of each are dropped (burn-in). A degenerate
    attractor (covering under 4% of a 48x48 grid of its bounding box) is redrawn, up to 8 times.

    :return: float64 ``(N, 2)`` array of ``(x, y)``.
    """
    chains = int(np.clip(n_points // 32, 64, 1024))
    steps = max(16, n_points // chains) + 12
    best, best_fill = None, -1.0
    for _ in range(8):
        params, p = _ifs_params(rng)
        choice = np.minimum(np.searchsorted(np.cumsum(p), rng.random((steps, chains))), len(p) - 1)
        xy = rng.uniform(-1.0, 1.0, (chains, 2))
        out = np.empty((steps - 12, chains, 2))
        for t in range(steps):
            q = params[choice[t]]
            x = q[:, 0] * xy[:, 0] + q[:, 1] * xy[:, 1] + q[:, 4]
            y = q[:, 2] * xy[:, 0] + q[:, 3] * xy[:, 1] + q[:, 5]
            xy = np.stack([x, y], axis=1)
            if t >= 12:
                out[t - 12] = xy
        pts = out.reshape(-1, 2)
        sub = pts[::7]
        lo, hi = np.percentile(sub, 0.5, axis=0), np.percentile(sub, 99.5, axis=0)
        span = np.maximum(hi - lo, 1e-9)
        pts = np.clip((pts - lo) / span, 0.0, 1.0)
        grid = np.zeros((48, 48), bool)
        grid[(pts[:, 1] * 47).astype(int), (pts[:, 0] * 47).astype(int)] = True
        fill = float(grid.mean())
        if fill > best_fill:
            best, best_fill = pts, fill
        if fill >= 0.04:
            break
    return best


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    gh, gw = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    grid = rng.uniform(0, 255, (gh, gw, 3)).astype(np.float32)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    img += (rng.uniform(-60, 60) * (ramp - ramp.mean()))[..., None]
    return img


def _draw_fractal(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    side = rng.uniform(0.3, 1.0) * min(h, w)
    bw, bh = side * rng.uniform(0.7, 1.4), side * rng.uniform(0.7, 1.4)
    x0, y0 = rng.uniform(-0.2 * bw, w - 0.8 * bw), rng.uniform(-0.2 * bh, h - 0.8 * bh)
    pts = _ifs_points(rng, int(min(80_000, max(4_096, 0.4 * h * w))))
    # rasterise inside the fractal's box only (clipped to the image)
    bx0, by0 = max(0, int(x0)), max(0, int(y0))
    bx1, by1 = min(w, int(x0 + bw) + 1), min(h, int(y0 + bh) + 1)
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        return
    bwid = bx1 - bx0
    xs = (x0 + pts[:, 0] * bw).astype(np.int64) - bx0
    ys = (y0 + pts[:, 1] * bh).astype(np.int64) - by0
    keep = (xs >= 0) & (xs < bwid) & (ys >= 0) & (ys < by1 - by0)
    density = np.bincount(ys[keep] * bwid + xs[keep], minlength=bwid * (by1 - by0))
    density = density.reshape(by1 - by0, bwid).astype(np.float32)
    if density.max() <= 0:
        return
    density = cv2.GaussianBlur(density, (3, 3), 0)
    level = np.log1p(density) / np.log1p(density.max())
    alpha = np.clip(level * rng.uniform(1.5, 4.0), 0.0, 1.0)[..., None]
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    colour = c0 + (c1 - c0) * level[..., None]
    region = img[by0:by1, bx0:bx1]
    region *= 1.0 - alpha
    region += alpha * colour


def _draw_shapes(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    s = min(h, w)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        thick = -1 if rng.random() < 0.6 else max(1, int(rng.uniform(0.005, 0.04) * s))
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        r = max(2, int(rng.uniform(0.04, 0.3) * s))
        kind = int(rng.integers(0, 5))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, colour, thick, cv2.LINE_AA)
        elif kind == 1:
            cv2.ellipse(img, (cx, cy), (r, max(1, int(r * rng.uniform(0.2, 1.0)))), float(rng.uniform(0, 180)),
                        0, 360, colour, thick, cv2.LINE_AA)
        elif kind == 2:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, thick, cv2.LINE_AA)
        elif kind == 3:
            n = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.4, 1.0, n)
            poly = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            if thick < 0:
                cv2.fillPoly(img, [poly], colour, cv2.LINE_AA)
            else:
                cv2.polylines(img, [poly], True, colour, thick, cv2.LINE_AA)
        else:
            end = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.line(img, (cx, cy), end, colour, max(1, abs(thick)), cv2.LINE_AA)


def _augment(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Flips, a rotation of -30..30 degrees and a Gaussian blur, as the original's ``_augment``."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        img = cv2.flip(img, 1)
    if rng.random() < 0.5:
        img = cv2.flip(img, 0)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-30, 30)), 1.0)
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    kmax = max(1, int(round(15 * min(h, w) / 512)))
    k = 2 * int(rng.integers(0, kmax // 2 + 1)) + 1
    if k > 1:
        img = cv2.GaussianBlur(img, (k, k), 0)
    img += rng.normal(0.0, rng.uniform(0.0, 6.0), img.shape).astype(np.float32)
    return img


def generate_image(spec: SyntheticSpec, index: int) -> np.ndarray:
    """Synthetic image ``index`` of ``spec``: fractals and shapes on a smooth background.

    :param spec: size, channels and seed.
    :param index: image number (>= 0); seeds ``numpy.random.default_rng([spec.seed, index])``.
    :return: ``uint8`` array ``(H, W, 3)`` BGR, or ``(H, W)`` for ``channels == 1``; values 0..255.
    :raises ValueError: a size under 8 px or channels other than 1 or 3.
    """
    if spec.height < 8 or spec.width < 8:
        raise ValueError(f"synthetic images need at least 8x8 pixels, got {spec.height}x{spec.width}")
    if spec.channels not in (1, 3):
        raise ValueError(f"synthetic images have 1 or 3 channels, got {spec.channels}")
    rng = np.random.default_rng([spec.seed, index])
    img = _background(rng, spec.height, spec.width)
    layers = [_draw_fractal] * int(rng.integers(1, 4)) + [_draw_shapes]
    for k in rng.permutation(len(layers)):
        layers[k](rng, img)
    img = _augment(rng, img)
    # contrast: stretch to a random sub-range of 0..255, as photos rarely fill it exactly
    # saturation: photos are far less colourful than random RGB
    gray = img.mean(axis=2, keepdims=True)
    img = gray + rng.uniform(0.25, 1.0) * (img - gray)
    lo, hi = np.percentile(img[::4, ::4], 1), np.percentile(img[::4, ::4], 99)
    a, b = rng.uniform(0, 40), rng.uniform(215, 255)
    img = (img - lo) * ((b - a) / max(hi - lo, 1.0)) + a
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if spec.channels == 1:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    return out


# -- the cache -----------------------------------------------------------------------------------

def default_cache_dir(spec: SyntheticSpec) -> Path:
    """Where generated images go when ``engine.data_source`` is not given:
    ``$XDG_CACHE_HOME/pot/data_free/<H>x<W>x<C>`` (``~/.cache`` by default)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "pot" / "data_free" / f"{spec.height}x{spec.width}x{spec.channels}"


def read_manifest(folder: Path) -> dict | None:
    """The cache manifest of ``folder``, or None (absent or unreadable)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == "pot data_free" else None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _fits(manifest: dict | None, spec: SyntheticSpec, count: int, folder: Path) -> bool:
    if manifest is None:
        return False
    same = all(manifest.get(k) == v for k, v in (("version", GENERATOR_VERSION), ("seed", spec.seed),
                                                ("height", spec.height), ("width", spec.width),
                                                ("channels", spec.channels)))
    return (same and int(manifest.get("count", 0)) >= count
            and all((folder / image_name(i)).is_file() for i in range(count)))


def write_dataset(folder: Path, spec: SyntheticSpec, count: int, key: str = "engine.data_source") -> float:
    """Generate ``count`` images of ``spec`` into ``folder`` (made or replaced whole).

    Written into a hidden sibling folder, then renamed into place; on any failure or Ctrl-C the
    sibling is removed and ``folder`` is as it was.

    :return: seconds spent.
    :raises OutputError: the folder cannot be written (message names it).
    """
    folder = Path(folder)
    t = time.perf_counter()
    tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        for i in range(count):
            path = tmp / image_name(i)
            if not cv2.imwrite(str(path), generate_image(spec, i), params):
                raise OutputError(f"{key} {folder}: cannot write the generated image {path.name}")
        (tmp / MANIFEST).write_text(json.dumps(spec.manifest(count)))
        if folder.exists():
            os.rename(folder, old)
        os.rename(tmp, folder)
    except OSError as e:
        raise OutputError(f"{key} {folder}: cannot write the generated images: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists():
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:  # the swap failed half-way: put the old folder back
                os.rename(old, folder)
    return time.perf_counter() - t


def ensure_dataset(folder: Path, spec: SyntheticSpec, count: int, generate: bool = True,
                   key: str = "engine.data_source") -> Path:
    """Make sure ``folder`` holds calibration images for ``spec``; generate them if needed.

    - ``folder`` holds our images of this size, seed and generator version, at least ``count``:
      reused as they are;
    - it holds our images of another size/version, or too few: regenerated (``generate``), else
      used as they are with a warning;
    - it holds other images (no manifest): used as they are (the original's behaviour);
    - it is missing or holds no image: generated (``generate``), else an error.

    :param folder: the cache folder (``engine.data_source``).
    :param spec: size, channels and seed of the images.
    :param count: how many images calibration needs (the largest ``stat_subset_size``).
    :param generate: ``engine.generate_data``.
    :param key: the config key of ``folder``, for messages.
    :return: ``folder``.
    :raises ConfigError: ``folder`` is a file, or holds files but no image.
    :raises DatasetError: no image there and ``generate`` is False.
    :raises OutputError: the images cannot be written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key} {folder}: not a folder; expected a folder for the data_free engine's "
                          "generated images")
    images = _images_in(folder) if folder.is_dir() else []
    manifest = read_manifest(folder) if folder.is_dir() else None
    if images:
        if _fits(manifest, spec, count, folder):
            log.info("data_free: using %d synthetic %dx%d images cached in %s", count, spec.height, spec.width, folder)
            return folder
        if manifest is None:
            log.info("data_free: %s already holds %d images (not generated by pot); calibrating on them",
                     folder, len(images))
            return folder
        if not generate:
            log.warning("%s %s: its synthetic images were made for %sx%sx%s (%s of them), not %dx%dx%d (%d); "
                        "using them as they are (engine.generate_data is false)", key, folder,
                        manifest.get("height"), manifest.get("width"), manifest.get("channels"),
                        manifest.get("count"), spec.height, spec.width, spec.channels, count)
            return folder
        owned = {image_name(i) for i in range(int(manifest.get("count", 0)))} | {MANIFEST}
        foreign = [p.name for p in folder.iterdir() if p.name not in owned]
        if foreign:
            log.warning("%s %s: its synthetic images do not fit (%sx%sx%s, %s images) but the folder also holds "
                        "other files (%s); using the images as they are", key, folder, manifest.get("height"),
                        manifest.get("width"), manifest.get("channels"), manifest.get("count"),
                        ", ".join(sorted(foreign)[:3]))
            return folder
        log.info("data_free: regenerating the synthetic images cached in %s (%dx%dx%d, %d images)", folder,
                 spec.height, spec.width, spec.channels, count)
    else:
        if folder.is_dir() and any(p.name != MANIFEST for p in folder.iterdir()):
            raise ConfigError(f"{key} {folder}: holds files but no image; expected an empty or missing folder "
                              "for the generated images, or a folder of images")
        if not generate:
            raise DatasetError(f"{key} {folder}: no images there and engine.generate_data is false; expected a "
                               "folder of images, or generate_data: true")
        log.info("data_free: generating %d synthetic %dx%d images (%d channel%s) into %s", count, spec.height,
                 spec.width, spec.channels, "" if spec.channels == 1 else "s", folder)
    seconds = write_dataset(folder, spec, count, key)
    log.info("data_free: %d images generated in %.1f s", count, seconds)
    return folder


def subset_size(algorithms) -> int:
    """How many images to generate: the largest ``stat_subset_size`` of the algorithms (the
    original's ``subset_size``), 300 when none sets it."""
    sizes = [getattr(a.params, "stat_subset_size", None) for a in algorithms]
    sizes = [int(s) for s in sizes if s]
    return max(sizes) if sizes else DEFAULT_SUBSET_SIZE


def image_spec(model, layout=None, shape=None) -> tuple[SyntheticSpec, str]:
    """The synthetic image size and channels for ``model``'s single image input.

    :param model: ``openvino.Model``.
    :param layout: ``engine.layout`` (None: the IR's, else inferred from the shape).
    :param shape: ``engine.shape`` (needed when the input's H or W is dynamic).
    :return: the spec and a description of the input for messages.
    :raises ConfigError: several inputs, a non-image input, or a dynamic H/W without ``shape``.
    :raises DatasetError: the layout cannot be told from the IR or the shape.
    """
    from pot_cli.engines.data_source import _image_capable, _read_inputs, _resolve_image_input

    inputs = _read_inputs(model, layout, shape)
    if len(inputs) != 1:
        raise ConfigError(f"engine.type data_free: the model has {len(inputs)} inputs "
                          f"({', '.join(i.name for i in inputs)}); expected one image input (data_free generates "
                          "images only)")
    inp = inputs[0]
    what = f"input '{inp.name}' {inp.shape}"
    if not _image_capable(inp):
        raise ConfigError(f"engine.type data_free: {what} is not an image input; expected rank 3 or 4 with a "
                          "float or u8 element type (data_free generates images only)")
    _resolve_image_input(inp)
    spec = inp.image
    if spec.height is None or spec.width is None:
        example = {"NCHW": "[1,3,224,224]", "NHWC": "[1,224,224,3]", "CHW": "[3,224,224]",
                   "HWC": "[224,224,3]"}.get(spec.layout, "[1,3,224,224]")
        raise ConfigError(f"engine.shape: {what} has a dynamic height or width; the data_free engine needs "
                          f"engine.shape (--shape), for example {example}")
    channels = 1 if spec.channels == 1 else 3
    return SyntheticSpec(int(spec.height), int(spec.width), channels), what

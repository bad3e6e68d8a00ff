"""Make a small text-segmentation set whose ground truth is known by construction.

Renders English words with OpenCV (``cv2.putText``: several Hershey fonts, sizes and colours,
horizontal, anti-aliased) onto 640x640 crops of the photos in ``../shared/data/images`` and writes,
for each image, the label mask of the rendered words (0 background, 1 text). The label of a word
is its text box: the tight box of the rendered strokes, shrunk towards its centre as the DB text
detector's training target is, by the DB paper's rule (see ``SHRINK_RATIO``). Nothing here looks at a model.

Output (a Pascal VOC segmentation devkit, read by the ``voc_segmentation`` converter)::

    OUT_DIR/JPEGImages/text_000.jpg ...          640x640 BGR JPEG (quality 95)
    OUT_DIR/SegmentationClass/text_000.png ...   640x640 uint8 grey PNG, 0 background / 1 text
    OUT_DIR/ImageSets/Segmentation/val.txt       one id per line (text_000 ...)
    OUT_DIR/labelmap.txt                         Datumaro label map: background, text
    OUT_DIR/words.json                           per image: each word, font, scale, colour, box

Usage::

    python examples/segmentation/make_text_dataset.py OUT_DIR [--count 60] [--seed 2024]
        [--images ../shared/data/images]

Deterministic: the same arguments give the same files (NumPy ``default_rng([seed, index])``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

SIZE = 640
#: photos without text of their own (the others in ../shared/data/images show printed or
#: handwritten text, licence plates or checkerboards in front of written-on boards)
PHOTOS = (
    "opencv_Blender_Suzanne1.jpg", "opencv_Blender_Suzanne2.jpg", "opencv_WindowsLogo.jpg", "opencv_aero1.jpg",
    "opencv_aero3.jpg", "opencv_apple.jpg", "opencv_baboon.jpg", "opencv_blox.jpg", "opencv_building.jpg",
    "opencv_butterfly.jpg", "opencv_ela_original.jpg", "opencv_leuvenB.jpg", "opencv_orange.jpg",
    "opencv_squirrel_cls.jpg", "skimage_camera.jpg", "skimage_chelsea.jpg", "skimage_coffee.jpg",
    "skimage_coins.jpg", "skimage_colorwheel.jpg", "skimage_horse.jpg", "skimage_immunohistochemistry.jpg",
    "skimage_retina.jpg", "sklearn_0.jpg")
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
         cv2.FONT_HERSHEY_COMPLEX_SMALL)
FONT_NAMES = {cv2.FONT_HERSHEY_SIMPLEX: "simplex", cv2.FONT_HERSHEY_DUPLEX: "duplex",
              cv2.FONT_HERSHEY_COMPLEX: "complex", cv2.FONT_HERSHEY_TRIPLEX: "triplex",
              cv2.FONT_HERSHEY_COMPLEX_SMALL: "complex_small"}
WORDS = (
    "open", "model", "quantize", "river", "station", "coffee", "garden", "north", "market", "silver", "window",
    "paper", "light", "summer", "orange", "street", "bridge", "museum", "hotel", "exit", "school", "music",
    "planet", "forest", "harbor", "winter", "yellow", "bakery", "library", "ticket", "airport", "pharmacy",
    "Welcome", "Parking", "Sale", "Menu", "Taxi", "Open Daily", "City Hall", "Bus Stop", "Room 42", "No. 17",
    "2024", "OPEN", "STOP", "EXIT", "SALE", "INFO", "NEWS", "Gate B7", "Platform 3", "Line 12", "Zone A",
    "Hello", "Vision", "Detect", "Signal", "Delta", "Alpha", "Omega")
#: DB's shrink ratio r (Liao et al., "Real-time Scene Text Detection with Differentiable
#: Binarization", AAAI 2020, section 3.4): a text polygon of area A and perimeter L is shrunk by
#: D = A * (1 - r**2) / L to make the probability-map target; the paper and PP-OCR use r = 0.4.
SHRINK_RATIO = 0.4
MIN_HEIGHT, MAX_HEIGHT = 20, 60  # rendered text height (cap height + descent), pixels


def crop_photo(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (half to all of the shorter side, aspect 3:4 to 4:3) resized to 640x640."""
    h, w = photo.shape[:2]
    side = rng.uniform(0.5, 1.0) * min(h, w)
    aspect = rng.uniform(0.75, 1.33)
    ch, cw = int(min(h, side * aspect)), int(min(w, side / aspect))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return cv2.resize(photo[y:y + ch, x:x + cw], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def luminance(bgr) -> float:
    b, g, r = (float(v) for v in bgr)
    return 0.114 * b + 0.587 * g + 0.299 * r


def text_colour(background: np.ndarray, rng: np.random.Generator) -> tuple[tuple[int, int, int], bool]:
    """A text colour contrasting with the mean of ``background`` (dark on light, light on dark);
    True when the contrast is too low and the word needs a plate behind it."""
    mean = background.reshape(-1, 3).mean(axis=0)
    lum = luminance(mean)
    if lum > 128:
        colour = tuple(int(v) for v in rng.integers(0, 70, 3))
    else:
        colour = tuple(int(v) for v in rng.integers(190, 256, 3))
    spread = background.reshape(-1, 3).astype(np.float32).std(axis=0).mean()
    return colour, abs(luminance(colour) - lum) < 110 or spread > 45


def place_words(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Renders 3 to 7 non-overlapping words on ``image`` (in place).

    :returns: the image, the uint8 (640, 640) stroke coverage (0..255) of all words, and one
        record per word (text, font, scale, thickness, colour, plate, ``box`` = tight stroke box
        ``[x0, y0, x1, y1]``, end exclusive).
    """
    strokes = np.zeros((SIZE, SIZE), np.uint8)
    occupied = np.zeros((SIZE, SIZE), bool)
    words = []
    for _ in range(int(rng.integers(3, 8))):
        text = str(WORDS[int(rng.integers(len(WORDS)))])
        font = FONTS[int(rng.integers(len(FONTS)))]
        (w1, h1), base1 = cv2.getTextSize(text, font, 1.0, 1)
        scale = float(rng.uniform(MIN_HEIGHT, MAX_HEIGHT)) / (h1 + base1)
        thickness = int(np.clip(round(scale * rng.uniform(1.0, 2.2)), 1, 5))
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
        if tw + 2 * 16 >= SIZE:
            continue
        for _attempt in range(40):
            x = int(rng.integers(16, SIZE - tw - 16))
            y = int(rng.integers(16 + th, SIZE - base - 16))
            x0, y0, x1, y1 = x - 12, y - th - 12, x + tw + 12, y + base + 12
            if not occupied[max(y0, 0):y1, max(x0, 0):x1].any():
                break
        else:
            continue
        layer = np.zeros((SIZE, SIZE), np.uint8)
        cv2.putText(layer, text, (x, y), font, scale, 255, thickness, cv2.LINE_AA)
        ys, xs = np.nonzero(layer)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        colour, plate = text_colour(image[box[1]:box[3], box[0]:box[2]], rng)
        if plate:  # a sign behind the word, in the opposite tone of the text
            light = luminance(colour) < 128
            plate_colour = tuple(int(v) for v in (rng.integers(200, 256, 3) if light else rng.integers(0, 50, 3)))
            pad = max(4, (box[3] - box[1]) // 3)
            cv2.rectangle(image, (box[0] - pad, box[1] - pad), (box[2] + pad, box[3] + pad), plate_colour, -1)
        alpha = layer.astype(np.float32)[:, :, None] / 255.0
        image[:] = (image * (1 - alpha) + np.asarray(colour, np.float32) * alpha + 0.5).astype(np.uint8)
        strokes = np.maximum(strokes, layer)
        occupied[max(y0, 0):y1, max(x0, 0):x1] = True
        words.append({"text": text, "font": FONT_NAMES[font], "scale": round(scale, 3), "thickness": thickness,
                      "colour_bgr": list(colour), "plate": bool(plate), "box": box,
                      "text_box": [x, y - th, x + tw, y + base]})
    return image, strokes, words


def label_mask(words: list[dict], ratio: float = SHRINK_RATIO) -> np.ndarray:
    """The uint8 (640, 640) label map: 1 inside each word's box shrunk by DB's rule (offset
    ``D = w * h * (1 - ratio**2) / (2 * (w + h))`` pixels on every side, at least one pixel row and
    column kept), 0 elsewhere. The box is the tight box of the word's rendered strokes."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for word in words:
        x0, y0, x1, y1 = word["box"]
        w, h = x1 - x0, y1 - y0
        d = int(round(w * h * (1.0 - ratio * ratio) / (2.0 * (w + h))))
        d = min(d, (h - 1) // 2, (w - 1) // 2)
        mask[y0 + d:y1 - d, x0 + d:x1 - d] = 1
    return mask


def make_sample(photo: np.ndarray, seed: int, index: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The image (640, 640, 3) uint8 BGR, its stroke coverage and its word records."""
    rng = np.random.default_rng([seed, index])
    image = crop_photo(photo, rng)
    return place_words(image, rng)


def main(argv: list[str] | None = None) -> int:
    default_images = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "images"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="output folder (created)")
    parser.add_argument("--count", type=int, default=60, help="number of images (default 60)")
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default 2024)")
    parser.add_argument("--images", type=Path, default=default_images, help=f"photo folder (default {default_images})")
    args = parser.parse_args(argv)
    photos = []
    for name in PHOTOS:
        photo = cv2.imread(str(args.images / name), cv2.IMREAD_COLOR)
        if photo is None:
            parser.error(f"{args.images / name}: cannot read the photo; expected ../shared/data/images "
                         f"(or --images) to hold it")
        photos.append(photo)
    out = args.out_dir
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ids, records = [], {}
    for i in range(args.count):
        name = f"text_{i:03d}"
        photo_name = PHOTOS[i % len(PHOTOS)]
        image, _, words = make_sample(photos[i % len(PHOTOS)], args.seed, i)
        cv2.imwrite(str(out / "JPEGImages" / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(out / "SegmentationClass" / f"{name}.png"), label_mask(words))
        ids.append(name)
        records[name] = {"photo": photo_name, "words": words}
    (out / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    (out / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ntext:255,255,255::\n")
    (out / "words.json").write_text(json.dumps({"seed": args.seed, "shrink_ratio": SHRINK_RATIO, "images": records},
                                               indent=1) + "\n")
    n_words = sum(len(r["words"]) for r in records.values())
    print(f"{out}: {len(ids)} images, {n_words} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())

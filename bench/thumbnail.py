"""Variants of a 12 MP photo: ``processing.imaging`` against a full decode, and pyvips.

Data: bench/data/photo-12mp.jpg, 4000x3000 stored, EXIF orientation 6 (a phone held upright, so
it displays 3000x4000) and a GPS position; ``python -m bench.thumbnail --make-data`` makes it
again (smooth gradients, shapes, fine lines and per-channel noise, JPEG quality 88).

Timed in this process, interleaved (case order reversed every other round), after warm-up:

* full decode: ``Image.open(path).load()``, the baseline every ratio is against;
* thumbnail: ``render_variant(path, <thumbnail recipe>, BytesIO())``, 256x256 cover, WebP q80;
* facts: ``image_facts(path)`` (BlurHash, dominant colour, LQIP);
* presets: ``render_variants(path, DEFAULT_RECIPES, ...)``, all four variants from one decode;
* presets one by one: four ``render_variant`` calls, each decoding the file again;
* pyvips thumbnail: ``pyvips.Image.thumbnail(path, 256).webpsave_buffer(Q=80)``, as asked: fits
  the width in 256 px (256x341 for this portrait photo), so it makes a third more pixels than
  our square thumbnail; pyvips cover: the same with ``height=256, crop="centre"`` (256x256).
  libvips runs its own thread pool (both cores); our code is single-threaded.

Peak memory: each case runs once in a fresh subprocess (``--peak CASE``). It imports everything
and warms up on a small JPEG (so plugin imports and encoder set-up are not counted), then resets
the kernel's peak-RSS counter (``5`` into /proc/self/clear_refs), reads VmRSS as the baseline,
runs the case, and reports VmHWM - baseline: every byte Pillow or libvips allocated, which
tracemalloc would miss. 5 subprocesses per case, median and max.

Targets: thumbnail/full decode <= 0.7; thumbnail peak RSS growth <= 16 MiB.

Run: ``python -m bench.thumbnail`` (~1 min; needs only the virtualenv)
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench._common import (
    REPO,
    STAT_HEADERS,
    exit_on_sigterm,
    flat,
    package_versions,
    print_machine,
    print_table,
    round_ratios,
    run_interleaved,
    stat_cells,
    summarize,
    verdict,
)

PHOTO = REPO / "bench" / "data" / "photo-12mp.jpg"
ROUNDS = 8
PER_ROUND = 2
WARMUP_ROUNDS = 2
PEAK_RUNS = 3
BASELINE = "full decode"
TARGET_RATIO = 0.7
TARGET_PEAK_MIB = 16.0


# -- the cases ------------------------------------------------------------------------------------


def full_decode(path: Path) -> object:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.size


def thumbnail(path: Path) -> object:
    from services.media.processing.imaging import DEFAULT_RECIPES, render_variant

    return render_variant(path, DEFAULT_RECIPES[0], io.BytesIO())


def facts(path: Path) -> object:
    from services.media.processing.imaging import image_facts

    return image_facts(path)


def presets(path: Path) -> object:
    from services.media.processing.imaging import DEFAULT_RECIPES, render_variants

    return render_variants(path, DEFAULT_RECIPES, {r.name: io.BytesIO() for r in DEFAULT_RECIPES})


def presets_one_by_one(path: Path) -> object:
    from services.media.processing.imaging import DEFAULT_RECIPES, render_variant

    return [render_variant(path, recipe, io.BytesIO()) for recipe in DEFAULT_RECIPES]


def vips_thumbnail(path: Path) -> object:
    import pyvips

    return len(pyvips.Image.thumbnail(str(path), 256).webpsave_buffer(Q=80))


def vips_cover(path: Path) -> object:
    import pyvips

    image = pyvips.Image.thumbnail(str(path), 256, height=256, crop="centre")
    return len(image.webpsave_buffer(Q=80))


CASES: dict[str, Callable[[Path], object]] = {
    BASELINE: full_decode,
    "thumbnail (render_variant)": thumbnail,
    "facts (image_facts)": facts,
    "presets (render_variants)": presets,
    "presets one by one": presets_one_by_one,
    "pyvips thumbnail(path, 256)": vips_thumbnail,
    "pyvips cover 256x256": vips_cover,
}
VIPS_CASES = ("pyvips thumbnail(path, 256)", "pyvips cover 256x256")


def have_pyvips() -> str | None:
    """libvips' version, or None when pyvips (or its library) cannot be loaded."""
    try:
        import pyvips
    except (ImportError, OSError):
        return None
    return ".".join(str(pyvips.version(i)) for i in range(3))


# -- peak memory in a subprocess ------------------------------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def measure_peak(case: str) -> None:
    """Run in a fresh process: print the peak RSS growth of one call of ``case``, in KiB."""
    from PIL import Image

    import services.media.processing.imaging  # noqa: F401 - imported before the baseline

    with tempfile.TemporaryDirectory(prefix="bench-thumbnail-") as scratch:
        small = Path(scratch) / "warm-up.jpg"
        Image.new("RGB", (64, 48), "gray").save(small, "JPEG")
        CASES[case](small)  # plugin imports, encoder and library set-up
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    baseline = _status_kib("VmRSS")
    CASES[case](PHOTO)
    print(json.dumps({"growth_kib": _status_kib("VmHWM") - baseline, "baseline_kib": baseline}))


def peaks(case: str) -> list[dict[str, int]]:
    results = []
    for _ in range(PEAK_RUNS):
        done = subprocess.run(
            [sys.executable, "-m", "bench.thumbnail", "--peak", case],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"--peak {case!r} failed:\n{done.stdout}{done.stderr}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


# -- the test photo -------------------------------------------------------------------------------


def make_photo(path: Path = PHOTO, seed: int = 12) -> None:
    """A photo-like 4000x3000 JPEG with orientation 6 and GPS EXIF, the same on every run."""
    from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageFilter

    rng = random.Random(seed)
    width, height = 3000, 4000  # the scene as displayed
    # Sky over ground: a coarse colour field scaled up smoothly.
    field = Image.new("RGB", (8, 6))
    for y in range(6):
        for x in range(8):
            base = (
                (70 + 20 * y, 120 + 15 * y, 200 - 10 * y)
                if y < 3
                else (60 + 10 * x, 110 - 8 * y + 5 * x, 40 + 4 * x)
            )
            field.putpixel((x, y), tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in base))
    image = field.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(60):  # rocks, trees, people: soft shapes
        x, y, r = rng.randrange(width), rng.randrange(height // 3, height), rng.randrange(20, 260)
        draw.ellipse(
            (x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(30, 220) for _ in "rgb")
        )
    image = image.filter(ImageFilter.GaussianBlur(3))
    draw = ImageDraw.Draw(image)
    for _ in range(400):  # sharp detail: twigs, wires, edges
        x, y = rng.randrange(width), rng.randrange(height)
        end = (x + rng.randrange(-80, 80), y + rng.randrange(-80, 80))
        draw.line((x, y, *end), fill=tuple(rng.randrange(256) for _ in "rgb"), width=2)
    # Sensor noise, independent per channel, about +-16 levels.
    noise = Image.merge(
        "RGB",
        [
            Image.frombytes("L", (width, height), rng.randbytes(width * height)).point(
                lambda v: v * (32 / 255) + 112
            )
            for _ in "rgb"
        ],
    )
    image = ImageChops.add(image, noise, scale=1, offset=-128)
    # Stored landscape, shown portrait: the way phones write photos taken upright. Orientation
    # 6 rotates 90 degrees clockwise for display, so store the scene turned the other way.
    stored = image.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "BenchCam"
    exif[ExifTags.Base.Model] = "Synthetic 12MP"
    exif[ExifTags.Base.DateTime] = "2026:11:21 10:00:00"
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (60.0, 10.0, 12.5),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (24.0, 56.0, 30.0),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, "JPEG", quality=88, exif=exif)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    exit_on_sigterm()
    from PIL import Image

    from services.media.processing.imaging import DEFAULT_RECIPES, image_facts, render_variants

    vips = have_pyvips()
    with Image.open(PHOTO) as photo:
        described = (
            f"{PHOTO.relative_to(REPO)}, {photo.size[0]}x{photo.size[1]} stored, "
            f"{PHOTO.stat().st_size} bytes, EXIF orientation {photo.getexif().get(274)}"
        )
    print_machine(
        "bench.thumbnail: variants of a 12 MP JPEG vs a full decode, and pyvips",
        {
            "photo": described,
            "pyvips": f"{package_versions(('pyvips',))['pyvips']}, libvips {vips}"
            if vips
            else "not installed: the pyvips cases are skipped",
        },
    )
    cases = {name: (lambda call=call: call(PHOTO)) for name, call in CASES.items()}
    if vips is None:
        for name in VIPS_CASES:
            del cases[name]

    outs = {recipe.name: io.BytesIO() for recipe in DEFAULT_RECIPES}
    made = render_variants(PHOTO, DEFAULT_RECIPES, outs)
    print("variants: " + ", ".join(f"{n} {v.width}x{v.height} {v.size} B" for n, v in made.items()))
    facts = image_facts(PHOTO)
    print(
        f"facts:    {facts.width}x{facts.height}, blurhash {facts.blurhash}, "
        f"lqip {len(facts.lqip)} chars"
    )
    print()

    run_interleaved(cases, rounds=WARMUP_ROUNDS, per_round=1)
    samples = run_interleaved(cases, rounds=ROUNDS, per_round=PER_ROUND)
    base_median = statistics.median(flat(samples[BASELINE]))
    rows = []
    for name in cases:
        ratio = statistics.median(flat(samples[name])) / base_median
        if name == BASELINE:
            spread = "-"
        else:
            per_round = round_ratios(samples, name, BASELINE)
            spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
        rows.append([name, *stat_cells(summarize(flat(samples[name]))), f"{ratio:.2f}", spread])
    print(f"{ROUNDS} rounds x {PER_ROUND} calls per case, after {WARMUP_ROUNDS} warm-up rounds")
    print_table(["case", *STAT_HEADERS, "/full", "per-round"], rows)

    memory_rows = []
    growth = {}
    for name in cases:
        runs = peaks(name)
        values = [run["growth_kib"] / 1024 for run in runs]
        growth[name] = statistics.median(values)
        memory_rows.append(
            [
                name,
                f"{statistics.median(run['baseline_kib'] for run in runs) / 1024:.1f}",
                f"{growth[name]:.1f}",
                f"{max(values):.1f}",
            ]
        )
    print(f"peak RSS growth over the process baseline, {PEAK_RUNS} fresh subprocesses per case")
    print_table(["case", "baseline MiB", "growth p50 MiB", "growth max MiB"], memory_rows)

    thumb = "thumbnail (render_variant)"
    ratio = statistics.median(flat(samples[thumb])) / base_median
    print(f"thumbnail/full decode: {ratio:.2f} {verdict(ratio, TARGET_RATIO)}")
    print(
        f"thumbnail peak growth: {growth[thumb]:.1f} MiB {verdict(growth[thumb], TARGET_PEAK_MIB)}"
    )
    presets_ratio = statistics.median(flat(samples["presets (render_variants)"])) / base_median
    print(f"presets/full decode:   {presets_ratio:.2f} (reported, no target)")
    if vips is not None:
        for name in VIPS_CASES:
            ours_vs_vips = statistics.median(flat(samples[thumb])) / statistics.median(
                flat(samples[name])
            )
            print(f"thumbnail/{name}: {ours_vs_vips:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--make-data", action="store_true", help="write bench/data/photo-12mp.jpg")
    parser.add_argument("--peak", metavar="CASE", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.make_data:
        make_photo()
    elif arguments.peak:
        measure_peak(arguments.peak)
    else:
        main()

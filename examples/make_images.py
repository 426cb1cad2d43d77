"""Write the example images (examples/images/*.png): small generated pictures, a few KB each.

    python examples/make_images.py        # rewrites them; the same pixels every time

``house-1.png`` … ``house-3.png`` are edgejudge's generated demo picture (a house with a red roof, a tree,
a sun over green hills) at three seeds; ``blank.png`` is a plain grey square.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from edgejudge.images import synthetic_image

HERE = Path(__file__).resolve().parent / "images"
SIZE = 96


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for seed in (1, 2, 3):
        synthetic_image(SIZE, seed=seed).save(HERE / f"house-{seed}.png", optimize=True)
    Image.new("RGB", (SIZE, SIZE), (128, 128, 128)).save(HERE / "blank.png", optimize=True)
    for path in sorted(HERE.glob("*.png")):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()

"""Reference values for `data::image::resize_bicubic`, computed by PIL (Pillow).

Prints the Rust constants pasted into `tests/data_sources.rs` (`PIL_BICUBIC_F`,
`PIL_BICUBIC_L`). Run with Pillow 12 (`pip install 'pillow>=12,<13'`; the constants in the test
came from 12.3.0); the tests themselves need no Python. Pillow 13 runs the vertical pass first
when it shrinks the height and not the width as much: some float results then differ in the
last bit (the 3x17 case here).

The input is a 7×9 plane with values `((y * 9 + x) * 37 % 101) / 100`, which the test rebuilds.

- Mode "F" (32-bit float): PIL resizes with double-precision coefficients and accumulators,
  horizontal pass then vertical, storing float32 between and after: our arithmetic, so the
  test compares bit patterns.
- Mode "L" (8-bit): the same plane scaled to 0..255 and rounded; PIL uses fixed-point
  coefficients and clamps (and rounds) each pass to 0..255. The test checks that our clamped
  float result (`resize_bicubic_clamped`, times 255, rounded) is within 1 of PIL's.
"""

import struct

from PIL import Image

H, W = 7, 9
SIZES = [(4, 5), (13, 20), (7, 4), (16, 9), (3, 17), (2, 2)]  # (height, width)


def plane():
    return [((y * W + x) * 37 % 101) / 100 for y in range(H) for x in range(W)]


def f32_bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def main():
    values = plane()
    img_f = Image.new("F", (W, H))
    img_f.putdata(values)
    # Round the float32 storage exactly as Rust does: (v as f32).
    img_l = Image.new("L", (W, H))
    img_l.putdata([round(v * 255) for v in values])
    print(f"// Pillow {Image.__version__}: Image.resize(BICUBIC) of the 7x9 test plane")
    print("const PIL_BICUBIC_F: &[((usize, usize), &[u32])] = &[")
    for h, w in SIZES:
        out = img_f.resize((w, h), Image.BICUBIC)
        bits = ", ".join(f"0x{f32_bits(v):08x}" for v in out.getdata())
        print(f"    (({h}, {w}), &[{bits}]),")
    print("];")
    print("const PIL_BICUBIC_L: &[((usize, usize), &[u8])] = &[")
    for h, w in SIZES:
        out = img_l.resize((w, h), Image.BICUBIC)
        vals = ", ".join(str(v) for v in out.getdata())
        print(f"    (({h}, {w}), &[{vals}]),")
    print("];")


if __name__ == "__main__":
    main()

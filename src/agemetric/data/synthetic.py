"""Procedural, deterministic synthetic faces: the embedded default dataset.

Every image is drawn from scratch with vectorised numpy (coordinate grids,
soft-edged masks, distance-field strokes, gaussian blobs), so no download is
needed and any image can be rebuilt alone from ``(seed, index)``.

Age cues (each continuous in age, each with per-person noise, so the network
has to combine several of them):
    * Face shape: children have round faces (height/width ~1.04 rising to
      ~1.30 by 21), big eyes set low on the head (large forehead), a small
      nose and rosy cheeks; adults have longer faces and a shaded, more
      defined jaw line.
    * Wrinkles: forehead lines and crow's feet appear from ~30-40 and grow
      in number, length and depth with age.
    * Hair: greying (streaky mix toward silver) from ~35-45 onward; the
      hairline recedes with age, much more for males (down to baldness);
      babies have thin hair.
    * Skin: blotchy texture and brown age spots increase after ~40; sagging
      shows as under-eye bags, nasolabial folds, wider jowls, thinner lips.
    * Body: head size in the frame grows slightly with maturity (heavily
      jittered); shoulders are narrow relative to the head in children.
Gender cues (independent of the age cues): long hair (most females, few
males), narrow tapered jaw vs wide square jaw, thin vs thick eyebrows,
saturated vs skin-coloured lips, stubble or beard for some males past ~16.
Nuisance (independent of age and gender): skin tone, hair base colour, iris
colour, shirt colour, fringe, pose (rotation, shift, scale), lighting
(direction gradient, brightness, colour cast), background colour, gradient and
texture, gaze, eye opening and smile, gaussian pixel noise and occasional blur.
"""

from __future__ import annotations

import math

import numpy as np

AGE_RANGE = (1, 80)  # inclusive; ages are integers

_F = np.float32
# Colours are (3, 1, 1) so they broadcast over channel-first (3, H, W) images.
_SKIN = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.92, 0.72, 0.58],
        [0.82, 0.62, 0.47],
        [0.68, 0.47, 0.33],
        [0.50, 0.34, 0.23],
        [0.37, 0.25, 0.17],
    ],
    _F,
)[..., None, None]
_HAIR = np.array(
    [
        [0.08, 0.07, 0.07],
        [0.20, 0.13, 0.09],
        [0.36, 0.24, 0.14],
        [0.54, 0.39, 0.24],
        [0.84, 0.71, 0.45],
        [0.58, 0.24, 0.10],
    ],
    _F,
)[..., None, None]
_GREY = np.array([0.85, 0.85, 0.87], _F)[:, None, None]
_LIP = np.array([0.78, 0.16, 0.22], _F)[:, None, None]


def _rgb(rng_values) -> np.ndarray:
    """Three values as a broadcastable (3, 1, 1) float32 colour."""
    return np.asarray(rng_values, _F).reshape(3, 1, 1)


def _smooth(x: float, a: float, b: float) -> float:
    """Smoothstep of ``x`` from 0 at ``a`` to 1 at ``b``."""
    t = min(max((x - a) / (b - a), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def _pow(a: np.ndarray, p: float) -> np.ndarray:
    """a ** p for a >= 0 (exp/log is several times faster than float32 ``**``)."""
    return np.exp(np.log(np.maximum(a, 1e-12)) * p)


def _noise(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    """Smooth low-frequency noise (unit-ish std): a k x k grid upsampled."""
    pos = (np.arange(size) + 0.5) * ((k - 1) / size)
    i0 = np.minimum(pos.astype(int), k - 2)
    f = pos - i0
    f = f * f * (3 - 2 * f)
    m = np.zeros((size, k), _F)
    m[np.arange(size), i0], m[np.arange(size), i0 + 1] = 1 - f, f
    return m @ rng.standard_normal((k, k), dtype=_F) @ m.T


class _Canvas:
    """Pixel grid mapped into the head frame by the pose (rotate, scale, shift).

    Head-frame units: the un-posed image spans [-1, 1]; the face centre is 0.
    """

    def __init__(self, size: int, angle: float, scale: float, tx: float, ty: float):
        q = (np.arange(size, dtype=_F) + 0.5) * _F(2.0 / size) - 1
        self.qx, self.qy = q[None, :], q[:, None]
        self.size, self.s, self.t = size, scale, (tx, ty)
        self.c, self.sn = math.cos(angle), math.sin(angle)
        dx, dy = self.qx - tx, self.qy - ty
        self.x = ((self.c * dx + self.sn * dy) / scale).astype(_F)
        self.y = ((-self.sn * dx + self.c * dy) / scale).astype(_F)
        self.pix = 2.0 / (size * scale)  # one pixel in head-frame units

    def win(self, cx: float, cy: float, r: float):
        """Slices of the pixels covering the head-frame disc ((cx, cy), r)."""
        k = self.size / 2
        col = (self.s * (self.c * cx - self.sn * cy) + self.t[0] + 1) * k
        row = (self.s * (self.sn * cx + self.c * cy) + self.t[1] + 1) * k
        rad = r * self.s * k + 2
        sl = (
            slice(min(max(int(row - rad), 0), self.size), min(max(int(row + rad) + 1, 0), self.size)),
            slice(min(max(int(col - rad), 0), self.size), min(max(int(col + rad) + 1, 0), self.size)),
        )
        return sl, self.x[sl], self.y[sl]


def _ellipse(x, y, cx, cy, rx, ry, pix, soft=1.0):
    """Anti-aliased filled ellipse alpha."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip(0.5 - (r - 1) * (min(rx, ry) / (pix * soft)), 0, 1)


def _stroke(cv: _Canvas, cx, cy, half, bend, angle, width):
    """Tapered curved line (parabola through its centre) as (slices, alpha)."""
    sl, x, y = cv.win(cx, cy, half + abs(bend) + width)
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    t2 = ((dx * ca + dy * sa) / half) ** 2
    inside = t2 < 1
    t2 = np.minimum(t2, 1)
    d = np.abs(-dx * sa + dy * ca - bend * (1 - t2))
    return sl, np.clip(0.5 + (width * np.sqrt(1 - t2) - d) / cv.pix, 0, 1) * inside


def _paint(img: np.ndarray, sl, alpha: np.ndarray, col) -> None:
    """Alpha-composite colour ``col`` ((3, 1, 1) or (3, H, W)) onto img[:, sl] in place."""
    v = img[(slice(None),) + sl]
    v += (col - v) * alpha


def render_face(age: float, gender: int, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Draw one synthetic RGB face.

    Args:
        age: Age in years, clipped to ``AGE_RANGE``; fractional ages are fine.
        gender: 0 = male, 1 = female.
        rng: Source of every random choice (nuisance and per-person noise).
        size: Output height and width in pixels.

    Returns:
        uint8 array of shape (size, size, 3).
    """
    age = float(min(max(age, AGE_RANGE[0]), AGE_RANGE[1]))
    male = int(gender) == 0
    u, n = rng.uniform, rng.normal
    mat = min((age - 1.0) / 20.0, 1.0)  # physical maturity: 0 (baby) .. 1 (adult, 21+)
    old = max(age - 30.0, 0.0) / 50.0
    # Per-person age cue levels: each noisy so that no cue alone is exact.
    wr = float(np.clip((age - 30 + n(0, 5)) / 42 * math.exp(n(0, 0.3)), 0, 1.2))
    sag = float(np.clip((age - 36 + n(0, 6)) / 40 * math.exp(n(0, 0.3)), 0, 1.2))
    grey = float(np.clip((age - 40 + n(0, 6)) / (32 * math.exp(n(0, 0.3))), 0, 1))
    rec = float(np.clip((age - 22 + n(0, 8)) / 48 * u(0.1, 1.5) * (1 if male else 0.25), 0, 1))
    # Geometry (head frame): half-width W, half-height H, feature heights.
    W = 0.5 * math.exp(n(0, 0.04))
    H = W * (1.04 + 0.26 * mat + n(0, 0.03))
    taper = 0.10 + mat * (0.10 if male else 0.26) + n(0, 0.03) - 0.07 * sag
    pw = 2.0 + mat * (0.8 if male else 0.15) + n(0, 0.08)
    eye_y = (0.13 - 0.18 * mat + n(0, 0.02)) * H
    es = (0.18 - 0.055 * mat + n(0, 0.01)) * W  # eye half-width
    eye_x = (0.37 + n(0, 0.02)) * W
    nose_y = eye_y + (0.25 + 0.11 * mat + n(0, 0.02)) * H
    mouth_y = nose_y + (0.22 + 0.05 * mat + n(0, 0.015)) * H
    cv = _Canvas(size, n(0, 0.08), u(0.84, 1.02) * (0.93 + 0.07 * mat), n(0, 0.05), n(0.06, 0.04))
    X, Y, pix = cv.x, cv.y, cv.pix
    full = (slice(None), slice(None))
    # Nuisance colours.
    skin = _SKIN[rng.integers(6)] * _rgb(np.exp(n(0, 0.05, 3)))
    hbase = np.clip(_HAIR[rng.integers(6)] * _rgb(np.exp(n(0, 0.12, 3))), 0, 1)
    # Background: colour + linear colour gradient + smooth texture.
    a = u(0, 2 * math.pi)
    grad = math.cos(a) * cv.qx + math.sin(a) * cv.qy
    img = (
        _rgb(u(0.1, 0.9, 3))
        + grad * _rgb(u(-0.25, 0.25, 3))
        + _noise(rng, size, int(rng.integers(3, 9))) * _rgb(u(0, 0.1, 3))
    )
    # Hair colour map: streaky greying plus strand texture.
    st = np.sin(X * _F(u(40, 70)) + 3 * _noise(rng, size, 8))
    gm = np.clip(grey * (1 + 0.3 * st), 0, 1)
    hcol = (hbase * (1 - gm) + _GREY * gm) * (1 + 0.08 * st)
    thick = 0.45 + 0.55 * _smooth(age, 1, 5)  # babies have thin hair
    # Long hair hangs behind the head (drawn first, face covers it).
    if rng.random() < (0.08 if male else 0.85) * (0.3 + 0.7 * _smooth(age, 1, 6)):
        top, bot = -1.15 * H, H * u(0.9, 1.9)
        xs, ys = np.abs(X / (1.22 * W * u(0.95, 1.1))), np.abs(Y - (top + bot) / 2) / ((bot - top) / 2)
        r = _pow(_pow(xs, 3) + _pow(ys, 3), 1 / 3)
        _paint(img, full, np.clip(0.5 - (r - 1) * W / pix, 0, 1) * thick, hcol)
    # Neck and shirt; shoulders are narrow (relative to the head) in children.
    nw = W * (0.40 if male else 0.34) * (0.8 + 0.2 * mat)
    _paint(img, full, np.clip(0.5 - (np.abs(X) - nw) / pix, 0, 1) * (Y > 0), skin * 0.8)
    _paint(img, full, _ellipse(X, Y, 0, H + 0.5, W * (1.0 + 0.6 * mat) * u(0.9, 1.15), 0.45, pix), _rgb(u(0, 1, 3)))
    # Ears.
    for side in (-1, 1):
        sl, x, y = cv.win(side * W, eye_y + 0.05 * H, 0.3 * W)
        _paint(img, sl, _ellipse(x, y, side * 0.97 * W, eye_y + 0.05 * H, 0.13 * W, 0.24 * W, pix), skin * 0.9)
    # Head window: face, skin ink, beard and front hair are drawn only here.
    hs, X, Y = cv.win(0, -0.05 * H, 1.25 * H + 0.05)
    sub, st = (slice(None),) + hs, st[hs]
    # Face: round top, superellipse lower half with jaw taper.
    Xn, Yn = X / W, Y / H
    Yp = np.clip(Yn, 0, 1.4)
    low = _pow(_pow(np.abs(Xn) / (1 - taper * Yp * Yp), pw) + _pow(Yp, pw), 1 / pw)
    r = np.where(Yn > 0, low, np.sqrt(Xn * Xn + Yn * Yn))
    fa = np.clip(0.5 - (r - 1) * W / pix, 0, 1)
    rr = np.minimum(r, 1)
    jaw = np.clip((rr - 0.85) / 0.15, 0, 1) * np.clip((Yn - 0.2) * 3, 0, 1)
    shade = (
        1
        - 0.15 * (rr * rr) ** 2
        - mat * (0.22 if male else 0.14) * u(0.7, 1.2) * jaw
        - (0.03 + 0.09 * old * u(0.5, 1.5)) * np.abs(_noise(rng, size, 14)[hs])
    )
    _paint(img, hs, fa, skin * shade)
    for side in (-1, 1):  # cheeks: rosy for children
        sl, x, y = cv.win(side * 0.5 * W, nose_y, 0.5 * W)
        d2 = (x - side * 0.5 * W) ** 2 + (y - nose_y) ** 2
        blush = np.exp(d2 * (-1 / (2 * (0.18 * W) ** 2))) * ((1 - mat) * u(0.25, 0.5) + u(0, 0.1))
        _paint(img, sl, blush, _rgb((0.9, 0.35, 0.35)))
    # Skin ink: wrinkles, folds, bags and spots darken the skin.
    ink = np.zeros((size, size), _F)
    brow_y = eye_y - (0.21 + n(0, 0.015)) * H
    for k in range(int(np.clip(round(wr * 4.5 + n(0, 0.6)), 0, 5))):
        sl, al = _stroke(
            cv,
            n(0, 0.03) * W,
            brow_y - (0.11 + 0.08 * k) * H,
            W * u(0.32, 0.5),
            n(-0.01, 0.01),
            n(0, 0.04),
            0.005 + 0.006 * wr,
        )
        ink[sl] += (0.25 + 0.25 * wr) * al
    for side in (-1, 1):
        cx, cy = side * (eye_x + es + 0.05 * W), eye_y
        for k in range(int(np.clip(round(wr * 3.5 + n(0, 0.5)), 0, 4))):
            ang = (-0.45 + 0.3 * k + n(0, 0.08)) * side
            hl = W * u(0.05, 0.08) * (0.7 + 0.5 * wr)
            sl, al = _stroke(
                cv, cx + side * hl * math.cos(ang), cy + side * hl * math.sin(ang), hl, 0.0, ang, 0.007 + 0.01 * wr
            )
            ink[sl] += (0.25 + 0.3 * wr) * al
        if sag > 0.05:  # under-eye bags and nasolabial folds
            sl, al = _stroke(
                cv,
                side * eye_x,
                eye_y + es * 0.55 + 0.05 * W * (1 + sag),
                es * 0.85,
                0.03 * W,
                0.0,
                0.009 + 0.007 * sag,
            )
            ink[sl] += 0.35 * sag * al
            x0, y0, x1, y1 = side * 0.2 * W, nose_y - 0.02 * H, side * 0.34 * W, mouth_y + 0.06 * H
            sl, al = _stroke(
                cv,
                (x0 + x1) / 2,
                (y0 + y1) / 2,
                math.hypot(x1 - x0, y1 - y0) / 2,
                side * 0.02 * W,
                math.atan2(y1 - y0, x1 - x0),
                0.008 + 0.008 * sag,
            )
            ink[sl] += 0.4 * sag * al
    for _ in range(min(rng.poisson(max(age - 42, 0) / 5 * math.exp(n(0, 0.3))), 14)):
        cx, cy, s = u(-0.7, 0.7) * W, u(-0.8, 0.6) * H, u(0.012, 0.025)
        sl, x, y = cv.win(cx, cy, 3 * s)
        ink[sl] += u(0.15, 0.35) * np.exp(((x - cx) ** 2 + (y - cy) ** 2) * (-1 / (2 * s * s)))
    img[sub] *= 1 - np.minimum(ink[hs], 0.75) * fa
    # Beard or stubble for some adult males, greying like the hair.
    if male and rng.random() < 0.55 * _smooth(age, 16, 26):
        edge = nose_y + 0.05 * H - 0.35 * H * np.abs(Xn) ** 2
        dens = u(0.85, 1.0) if rng.random() < 0.4 else u(0.25, 0.5) * (rng.random(fa.shape) > 0.4)
        gb = min(1.0, grey * 1.15)
        _paint(
            img,
            hs,
            fa * np.clip((Y - edge) / (0.05 * H), 0, 1) * dens,
            (hbase * (1 - gb) + _GREY * gb) * (1 + 0.1 * st),
        )
    # Front hair: cap above the (receding) hairline plus side hair.
    th = u(0.05, 0.13) * thick
    fringe = rng.random() < 0.2
    hl = (u(-0.40, -0.25) if fringe else n(-0.55, 0.04) - 0.42 * rec) + 0.15 * Xn * Xn
    hl = hl - (0.35 * rec if male else 0) * np.exp(-(((np.abs(Xn) - 0.5) / 0.2) ** 2)) + 0.03 * st
    outline = _ellipse(X, Y, 0, -0.05 * H, W * (1.04 + th), H * (1.0 + th * (1 - 0.9 * rec)), pix)
    below = np.clip(0.5 + (Yn - hl) * H / (1.5 * pix), 0, 1)
    side_lim = np.clip(0.5 + ((eye_y - 0.05 * H) - Y) / pix, 0, 1)
    _paint(img, hs, outline * side_lim * (1 - fa * below) * thick, hcol[sub])
    # Eyebrows: thick for males, thin for females; greying a little.
    bcol = (hbase * (1 - 0.6 * grey) + _GREY * 0.6 * grey) * 0.85
    bw = u(0.022, 0.032) if male else u(0.010, 0.016)
    for side in (-1, 1):
        sl, al = _stroke(cv, side * eye_x, brow_y, es * 1.3, -0.03 * W, side * n(0.08, 0.06), bw)
        _paint(img, sl, al, bcol)
    # Eyes: sclera, iris, pupil, upper lid; gaze and opening are expression noise.
    ery, gx = es * u(0.45, 0.7), n(0, 0.2) * es
    iris = np.clip(_HAIR[rng.integers(6)] + _rgb(u(-0.1, 0.3, 3)), 0, 1)
    for side in (-1, 1):
        cx = side * eye_x
        sl, x, y = cv.win(cx, eye_y, es * 1.3)
        sa = _ellipse(x, y, cx, eye_y, es, ery, pix)
        _paint(img, sl, sa, _rgb((0.95, 0.94, 0.92)))
        _paint(img, sl, sa * _ellipse(x, y, cx + gx, eye_y, ery * 0.9, ery * 0.9, pix), iris)
        _paint(img, sl, sa * _ellipse(x, y, cx + gx, eye_y, ery * 0.4, ery * 0.4, pix), _rgb((0.03, 0.03, 0.03)))
        sl, al = _stroke(cv, cx, eye_y - ery * 0.8, es * 1.05, -ery * 0.3, 0.0, 0.008 + (0 if male else 0.006))
        _paint(img, sl, al, _rgb((0.1, 0.08, 0.07)))
    # Nose: nostrils and a soft side shadow; small in children.
    ns = 0.6 + 0.4 * mat
    for side in (-1, 1):
        sl, x, y = cv.win(side * 0.09 * W * ns, nose_y, 0.1 * W)
        _paint(
            img, sl, _ellipse(x, y, side * 0.09 * W * ns, nose_y, 0.04 * W * ns, 0.025 * W * ns, pix, 1.5), skin * 0.45
        )
    sl, al = _stroke(cv, 0.06 * W, (nose_y + eye_y) / 2 + 0.02 * H, (nose_y - eye_y) / 2, 0.0, math.pi / 2, 0.01)
    _paint(img, sl, al * 0.3, skin * 0.6)
    # Mouth: lip colour saturated for females; lips thin with age; smile noise.
    ls = u(0.1, 0.3) if male else u(0.55, 0.9)
    lcol = skin * (1 - ls) + _LIP * ls
    mw, mh = W * (0.24 + 0.06 * mat + n(0, 0.02)), W * (0.075 - 0.03 * old + n(0, 0.008))
    sl, x, y = cv.win(0, mouth_y, mw * 1.2)
    _paint(img, sl, _ellipse(x, y, 0, mouth_y, mw, max(mh, 0.02 * W), pix), lcol * 0.85)
    sl, al = _stroke(cv, 0, mouth_y - 0.01 * W, mw, u(-0.01, 0.05) * W, 0.0, 0.008)
    _paint(img, sl, al, lcol * 0.35)
    # Lighting (direction gradient, brightness, colour cast), blur, noise.
    a = u(0, 2 * math.pi)
    light = u(0.65, 1.2) * (1 + u(0, 0.3) * (math.cos(a) * cv.qx + math.sin(a) * cv.qy))
    img *= light * _rgb(np.exp(n(0, 0.05, 3)))
    if rng.random() < 0.3:
        for ax in (1, 2):
            img = 0.5 * img + 0.25 * (np.roll(img, 1, ax) + np.roll(img, -1, ax))
    noise = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape)
    img += (noise - _F(127.5)) * _F(u(0.02, 0.14) / 256)  # uniform, std .006-.04
    return np.ascontiguousarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0))


def sample_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` (age, gender) labels deterministically from ``seed``.

    Ages are integers, uniform over ``AGE_RANGE`` for 80% of draws and uniform
    over 18..60 for the rest (slightly more adults); genders are 0/1 with
    probability 1/2 each.

    Args:
        n: Number of labels.
        seed: Seed of the dataset.

    Returns:
        (ages, genders), both int64 arrays of shape (n,).
    """
    rng = np.random.default_rng(int(seed))
    lo, hi = AGE_RANGE
    adult = rng.random(n) < 0.2
    ages = np.where(adult, rng.integers(18, 61, n), rng.integers(lo, hi + 1, n))
    return ages.astype(np.int64), rng.integers(0, 2, n).astype(np.int64)


def render(index: int, age: float, gender: int, seed: int, size: int = 128) -> np.ndarray:
    """Render image number ``index`` of the dataset seeded ``seed``.

    Uses its own ``np.random.default_rng((seed, index))``, so any image can be
    made alone, in any order, identically.

    Args:
        index: Image index within the dataset (non-negative).
        age: Age in years.
        gender: 0 = male, 1 = female.
        seed: Seed of the dataset (non-negative).
        size: Output height and width in pixels.

    Returns:
        uint8 array of shape (size, size, 3).
    """
    return render_face(age, gender, np.random.default_rng((int(seed), int(index))), size)

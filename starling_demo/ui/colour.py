"""Colours the page computes itself, and their WCAG contrast: token values, the win matrix, readable text."""
from __future__ import annotations

Colour = tuple[int, int, int]
# The win matrix's diverging scale (Tailwind orange-700, gray-200, blue-700): the column's reply preferred, even odds,
# the row's reply preferred.
WIN_LOW, WIN_EVEN, WIN_HIGH = "#c2410c", "#e5e7eb", "#1d4ed8"


def value_colour(value: float, scale: float) -> str:
    """Green for positive values, red for negative, stronger the larger |value| is relative to `scale`."""
    strength = min(abs(value) / scale, 1.0) if scale else 0.0
    hue = 140 if value >= 0 else 0
    return f"hsla({hue}, 70%, 45%, {0.08 + 0.6 * strength:.2f})"


def rgb(colour: str | Colour) -> Colour:
    """An sRGB colour as an (r, g, b) tuple of 0-255 ints, from "#rrggbb" or such a tuple.

    >>> rgb("#1d4ed8"), rgb((1, 2, 3))
    ((29, 78, 216), (1, 2, 3))
    """
    if isinstance(colour, str):
        digits = colour.lstrip("#")
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    r, g, b = colour
    return r, g, b


def hex_colour(colour: tuple[float, float, float]) -> str:
    """"#rrggbb" of an (r, g, b) tuple, each channel rounded and clipped to 0-255.

    >>> hex_colour((29, 78.4, 300))
    '#1d4eff'
    """
    return "#" + "".join(f"{max(0, min(255, round(c))):02x}" for c in colour)


def mix(a: str | Colour, b: str | Colour, t: float) -> tuple[float, float, float]:
    """The colour a fraction t of the way from a to b, linear in sRGB.

    >>> mix("#000000", "#ffffff", 0.5)
    (127.5, 127.5, 127.5)
    """
    return tuple(x + t * (y - x) for x, y in zip(rgb(a), rgb(b)))


def relative_luminance(colour: str | Colour) -> float:
    """WCAG 2.x relative luminance of an opaque sRGB colour: 0 for black, 1 for white.

    >>> relative_luminance("#ffffff"), relative_luminance((0, 0, 0)), round(relative_luminance("#808080"), 4)
    (1.0, 0.0, 0.2159)
    """
    def linear(channel: int) -> float:
        c = channel / 255
        # sRGB's threshold; WCAG's 0.03928 (from a draft of sRGB) gives the same values for 8-bit channels.
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str | Colour, b: str | Colour) -> float:
    """WCAG 2.x contrast ratio of two opaque colours, from 1 (the same) to 21 (black on white), in either order.

    >>> round(contrast_ratio("#000000", "#ffffff"), 6), round(contrast_ratio("#777777", "#ffffff"), 2)
    (21.0, 4.48)
    """
    lighter, darker = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def readable_text(bg: str | Colour) -> str:
    """Black or white text, whichever contrasts more with the opaque background bg.

    The two ratios multiply to 21, so the better one is at least sqrt(21) ≈ 4.58: WCAG AA for normal text.

    >>> readable_text("#1d4ed8"), readable_text("#e5e7eb")
    ('#ffffff', '#000000')
    """
    return "#000000" if contrast_ratio(bg, "#000000") >= contrast_ratio(bg, "#ffffff") else "#ffffff"


def win_colour(p: float) -> str:
    """The colour of P(row beats column) = p: orange towards 0, neutral grey at 0.5, blue towards 1.

    Linear in sRGB from the grey to either end, so 0.44 and 0.56 already lean to different hues.

    >>> win_colour(0.0), win_colour(0.5), win_colour(1.0)
    ('#c2410c', '#e5e7eb', '#1d4ed8')
    """
    return hex_colour(mix(WIN_EVEN, WIN_HIGH if p >= 0.5 else WIN_LOW, abs(2 * p - 1)))

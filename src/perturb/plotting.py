"""The book's one figure style: readable at the width of a page, the same colours for the same roles."""
from __future__ import annotations

import matplotlib

# Colours by role, so that "the paper's method" and "the baseline" look the same in every chapter.
METHOD = "#1b6ca8"
BASELINE = "#d1495b"
REFERENCE = "#2e2e2e"
EXTRA = ("#edae49", "#66a182", "#8d5fa8", "#00798c")
PALETTE = (METHOD, BASELINE, *EXTRA, REFERENCE)

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
    "axes.prop_cycle": matplotlib.cycler(color=list(PALETTE)),
    # Stored outputs must not change when nothing changed: no creation dates or random ids in images.
    "svg.hashsalt": "perturb",
    "figure.autolayout": True,
}


def use_style() -> None:
    """Apply the book's style to every figure made afterwards (call once, in a chapter's setup cell)."""
    matplotlib.rcParams.update(STYLE)


def digit_row(images, count: int = 8, side: int = 8):
    """The first ``count`` flattened ``side`` x ``side`` images laid side by side as one ``(side, count*side)``
    array, for ``imshow``. Used by: dpm-solver-pp, dpm-solver-v3, momentum-diffusion-sampling, bdia-exact-inversion.
    """
    images = images[:count]
    count = images.shape[0]
    return images.reshape(count, side, side).permute(1, 0, 2).reshape(side, count * side).detach().cpu().numpy()

"""Figures of the gallery page, drawn at build time by the matplotlib plot directive.

Every number plotted here is computed by softmaxc.
"""

import matplotlib.pyplot as plt
import numpy as np

import softmaxc

# The logits of both figures.
LOGITS = np.array([2.0, 1.0, 0.5, -0.5, -2.0])


def softmax_against_beta():
    """softmax(beta * x) of LOGITS for beta from -3 to 6, one curve per entry."""
    betas = np.linspace(-3.0, 6.0, 361)
    probs = np.array([softmaxc.softmax(LOGITS, beta=beta) for beta in betas])
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for i, x_i in enumerate(LOGITS):
        ax.plot(betas, probs[:, i], label=f"$x_{i + 1} = {x_i:g}$")
    ax.axvline(0.0, color="0.6", lw=0.8, ls="--")
    ax.annotate("uniform at $\\beta = 0$", (0.0, 1 / LOGITS.size), (0.6, 0.45),
                arrowprops={"arrowstyle": "->", "color": "0.4"})
    ax.set_xlabel("inverse temperature $\\beta$")
    ax.set_ylabel("$p_i = \\mathrm{softmax}(\\beta x)_i$")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(betas[0], betas[-1])
    ax.legend(loc="center right", frameon=False)
    ax.grid(alpha=0.3)


def jacobian_heat_map():
    """The Jacobian d p_i / d x_j of softmax at LOGITS, beta = 1, with its entries."""
    jacobian = softmaxc.softmax_jacobian(LOGITS)
    limit = np.abs(jacobian).max()
    n = LOGITS.size
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    image = ax.imshow(jacobian, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{jacobian[i, j]:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(jacobian[i, j]) > 0.6 * limit else "black")
    ticks = [f"{k + 1}" for k in range(n)]
    ax.set_xticks(range(n), ticks)
    ax.set_yticks(range(n), ticks)
    ax.set_xlabel("$j$ (logit $x_j$)")
    ax.set_ylabel("$i$ (probability $p_i$)")
    ax.set_title("$J_{ij} = \\partial p_i / \\partial x_j = p_i(\\delta_{ij} - p_j)$")
    fig.colorbar(image, ax=ax, shrink=0.85)

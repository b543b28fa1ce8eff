"""Learning-curve figures (PNG): evaluation return against environment steps."""

from typing import Mapping, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

Curve = Tuple[Sequence[float], Sequence[float]]  # (env steps, mean eval return)
Band = Tuple[Sequence[float], Sequence[float], Sequence[float]]  # (env steps, low, high)


def plot_learning_curves(curves: Mapping[str, Curve], path: str, title: str, reference: Mapping[str, float] = (),
                         bands: Mapping[str, Band] = ()) -> None:
    """One line per label; `bands` shades a label's spread (across seeds) in its colour; `reference`
    draws labelled horizontal lines (published figures, baselines)."""
    bands = dict(bands)
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, (env_steps, returns) in curves.items():
        [line] = axes.plot(env_steps, returns, marker="o" if label not in bands else None, markersize=2.5,
                           linewidth=1.5, label=label)
        if label in bands:
            axes.fill_between(*bands[label], color=line.get_color(), alpha=0.2, linewidth=0)
    for index, (label, value) in enumerate(sorted(dict(reference).items(), key=lambda item: item[1])):
        axes.axhline(value, linestyle="--", linewidth=1.0, color="grey")
        # Lines close together get their labels at alternate ends.
        right = index % 2 == 1
        axes.annotate(label, (1.0 if right else 0.0, value), xycoords=("axes fraction", "data"), fontsize=7,
                      color="grey", xytext=(-3 if right else 3, 2), textcoords="offset points",
                      ha="right" if right else "left")
    axes.set_xlabel("environment steps")
    axes.set_ylabel("evaluation return (greedy policy)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if curves:
        axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)

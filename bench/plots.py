"""The pictures `make bench` draws (PNG, matplotlib): what the table says, for people who would rather look."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a build machine

import matplotlib.pyplot as plt  # after the backend is chosen


@dataclass
class Collected:
    """Samples the figures keep for the pictures, by run label ("no added latency", "50 ms AWS latency")."""

    # Seconds, rule gone - approved end, one a grant; and the seconds from the first approved end to the last.
    deadline: dict[str, list[float]] = field(default_factory=dict)
    deadline_spread: dict[str, float] = field(default_factory=dict)
    # Per run: per kind, seconds after the command at which each object was seen gone; and how many there were.
    lockdown: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        if self.deadline:
            written.append(self._deadline(directory / "bench-deadline.png"))
        if self.lockdown:
            written.append(self._lockdown(directory / "bench-lockdown.png"))
        return written

    def _deadline(self, path: Path) -> Path:
        figure, axes = plt.subplots(len(self.deadline), 1, figsize=(8, 2.6 * len(self.deadline)), sharex=True)
        axes = [axes] if len(self.deadline) == 1 else list(axes)
        low = min(min(values, default=0.0) for values in self.deadline.values())
        high = max(max(values, default=0.0) for values in self.deadline.values())
        bins = [low + (max(high, 0.5) - low) * step / 40 for step in range(41)]
        for ax, (label, values) in zip(axes, self.deadline.items(), strict=True):
            late = sum(1 for value in values if value > 0)
            ax.hist(values, bins=bins, color="#3b7dd8", edgecolor="white")
            ax.axvline(0, color="#c0392b", linewidth=1.5)
            spread = self.deadline_spread.get(label)
            ends = f" ending within {spread + 1:.0f} whole seconds" if spread is not None else ""
            ax.set_title(f"{label}: {len(values)} grants{ends}, {late} gone after their end", fontsize=10)
            ax.set_ylabel("grants")
        axes[-1].set_xlabel("access gone - approved end (s); left of the red line: gone in time")
        count = max(len(values) for values in self.deadline.values())
        figure.suptitle(f"Revoke against the deadline: {count} grants ending close together, 3 workers", fontsize=11)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path

    def _lockdown(self, path: Path) -> Path:
        figure, axes = plt.subplots(1, len(self.lockdown), figsize=(5 * len(self.lockdown), 3.4), sharey=True)
        axes = [axes] if len(self.lockdown) == 1 else list(axes)
        for ax, (label, kinds) in zip(axes, self.lockdown.items(), strict=True):
            for kind, gone in kinds.items():
                times = sorted(gone)
                xs = [0.0, *times]
                ys = [len(times) - index for index in range(len(times) + 1)]
                ax.step(xs, ys, where="post", label=kind)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("seconds after /jit lockdown on")
            ax.axvline(3.0, color="#c0392b", linewidth=1, linestyle="--")
            ax.legend(fontsize=8)
        axes[0].set_ylabel("objects remaining")
        count = max(sum(len(gone) for gone in kinds.values()) for kinds in self.lockdown.values())
        figure.suptitle(f"Lockdown of {count:,} grants: objects remaining at the load balancers (goal: none by 3 s)")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path

"""The goals `make bench` is measured against, each printed with what was measured and whether it was met."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Goal:
    """One goal, the figure measured for it in words, and whether it was met."""

    name: str
    measured: str
    met: bool


@dataclass
class Goals:
    """Goals in the order they were measured."""

    goals: list[Goal] = field(default_factory=list)

    def add(self, name: str, measured: str, met: bool) -> None:
        self.goals.append(Goal(name, measured, met))

    def render(self) -> str:
        width = max((len(goal.name) for goal in self.goals), default=0)
        lines = ["Goals (issue 19)", ""]
        for goal in self.goals:
            lines.append(f"{'met ' if goal.met else 'MISS'}  {goal.name.ljust(width)}  {goal.measured}")
        return "\n".join(lines)

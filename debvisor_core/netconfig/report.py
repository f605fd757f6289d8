"""Validation findings with file and line, shared by every checker (network-config, seeds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Issue:
    level: str  # "error" | "warning"
    file: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "file": self.file, "line": self.line, "message": self.message}


@dataclass
class Report:
    """Everything the checkers found; ``strict`` turns strictness warnings into errors."""

    strict: bool = False
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self, file: str, message: str, line: int | None = None) -> None:
        self.issues.append(Issue("error", file, message, line))

    def warning(self, file: str, message: str, line: int | None = None) -> None:
        self.issues.append(Issue("warning", file, message, line))

    def stricter(self, file: str, message: str, line: int | None = None) -> None:
        """A rule cloud-init itself does not enforce: a warning, an error with --strict."""
        if self.strict:
            self.error(file, message + " (--strict)", line)
        else:
            self.warning(file, message + " (an error with --strict)", line)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "warning"]

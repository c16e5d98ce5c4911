"""A finished job's student files, as its row's ``artifacts`` holds them: ``Artifacts``.

``student`` maps each format to the file a client gets by default (a sweep's chosen
candidate); ``candidates`` lists a sweep's every candidate, by index, the same way. The
chosen candidate's entries are the student's own (one stored file, two names). Rows written
before migration 0008 held ``{format: artifact, "candidates": [...]}``; the migration
rewrites them and ``Artifacts`` still reads that shape (a worker of the previous release may
finish a job during a rolling upgrade).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Artifact(BaseModel):
    """One stored file: its ``StoredFile`` row, where it lies, and how it is downloaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file_id: str | None = Field(default=None, description="None: no StoredFile row of its own")
    key: str
    sha256: str
    size_bytes: int = Field(ge=0)
    filename: str


class Artifacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student: dict[str, Artifact] = Field(default_factory=dict)
    candidates: list[dict[str, Artifact]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _before_0008(cls, data: Any) -> Any:
        if isinstance(data, dict) and data and "student" not in data:
            student = {k: v for k, v in data.items() if k != "candidates"}
            return {"student": student, "candidates": data.get("candidates", [])}
        return data

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> Artifacts:
        """A row's ``artifacts`` column (empty for a job that has none)."""
        return cls.model_validate(stored or {})

    def formats(self) -> list[str]:
        return sorted(self.student)

    def every(self) -> list[Artifact]:
        """Each stored file once (the chosen candidate's files are listed twice)."""
        found: dict[str, Artifact] = {}
        for by_format in [self.student, *self.candidates]:
            for artifact in by_format.values():
                found.setdefault(artifact.key, artifact)
        return list(found.values())

    def find(self, fmt: str, candidate: int | None) -> Artifact | None:
        """The file of ``fmt`` for ``candidate`` (None: the default student). A job without
        a sweep has one candidate, 0: its student."""
        if candidate is None:
            return self.student.get(fmt)
        if self.candidates:
            listed = self.candidates
            return listed[candidate].get(fmt) if 0 <= candidate < len(listed) else None
        return self.student.get(fmt) if candidate == 0 else None

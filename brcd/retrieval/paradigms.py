"""Search paradigms (SPEC §6): which model's codes form the query side and the database side.

A registry keyed by the names configs use (``paradigms: [sym, asym]``; the
teacher's own row is ``teacher``): the evaluation stage, the config check and
the report resolve a paradigm here.
"""
from __future__ import annotations

from dataclasses import dataclass

from brcd.registry import Registry


@dataclass(frozen=True)
class Paradigm:
    """Which model's code file supplies the query side and the database side,
    and which of a student's two heads (selected on validation mAP in the
    symmetric or the asymmetric paradigm) its code file must come from."""

    query: str  # "teacher" | "student"
    database: str
    student_head: str | None = None

    @property
    def needs_student(self) -> bool:
        return "student" in (self.query, self.database)


PARADIGMS: Registry[Paradigm] = Registry("paradigm", config_key="paradigms")
PARADIGMS.register("sym")(Paradigm(query="student", database="student", student_head="sym"))
PARADIGMS.register("asym")(Paradigm(query="student", database="teacher", student_head="asym"))
PARADIGMS.register("teacher")(Paradigm(query="teacher", database="teacher"))

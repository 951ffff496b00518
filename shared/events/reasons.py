"""Why a job request is refused, in one wording for ``POST /v1/jobs`` and the intake.

Each problem names the field path (``document``, ``features2``, ``callback_url``) and says what
is wrong in plain words; it never quotes the value sent (it may be a features string, which is
biometric data, or a reference naming a customer). The HTTP API answers a 422 whose ``detail``
lists the problems' messages; the intake writes the same messages, joined by ``"; "``, as the
``reason`` of its reject. Both come from :func:`problems_of`, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_REASON_CHARS = 300

# Plain words for the fields whose form is a pattern (pydantic would print the regex).
PATTERN_WORDS = {
    "job_id": "must be 1 to 128 letters, digits or . _ : -, starting with a letter or digit",
    "tenant": "must be 1 to 64 letters, digits or . _ -, starting with a letter or digit",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: the field path, what is wrong, and its kind of error.

    ``type`` is a short machine-readable word (``missing``, ``extra``, ``type``, ``length``,
    ``form``, ``invalid``, ``not_allowed``), the ``type`` of the 422 entry.
    """

    field: str
    what: str
    type: str = "invalid"

    @property
    def message(self) -> str:
        """``field: what``: the 422 entry's ``msg`` and one part of the intake's reason."""
        return f"{self.field}: {self.what}"

    def http(self) -> dict[str, Any]:
        """The entry of a 422's ``detail``: where, what, which kind."""
        return {"loc": ["body", *self.field.split(".")], "msg": self.message, "type": self.type}


def joined(problems: Iterable[Problem]) -> str:
    """The intake's reject reason: every problem's message, ``"; "``-joined, capped in length."""
    return "; ".join(p.message for p in problems)[:MAX_REASON_CHARS]


def refused(field: str, message: str, type_: str = "not_allowed") -> Problem:
    """A problem from one of our own errors about ``field`` (their messages never quote values);
    a message that already starts with the field name keeps it once."""
    what = message.removeprefix(f"{field}: ").removeprefix(f"{field} ")
    return Problem(field, what, type_)


def _words(error: Mapping[str, Any], field: str, kind: str | None, kinds: Sequence[str]) -> tuple[str, str]:
    """What is wrong, in plain words, and its kind, for one pydantic error."""
    kind_of_error = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind_of_error == "missing":
        return "required", "missing"
    if kind_of_error == "extra_forbidden":
        return (f"not a field of a {kind} request" if kind else "not a field of this request"), "extra"
    if kind_of_error in ("string_type", "str_type"):
        return "must be a string", "type"
    if kind_of_error == "string_too_short":
        return "must not be empty", "length"
    if kind_of_error == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters", "length"
    if kind_of_error == "string_pattern_mismatch":
        return PATTERN_WORDS.get(field, "is not in the allowed form"), "form"
    if kind_of_error == "union_tag_not_found":
        return "required", "missing"
    if kind_of_error in ("union_tag_invalid", "literal_error"):
        return f"must be one of {', '.join(kinds)}", "invalid"
    if kind_of_error in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a JSON object", "type"
    if kind_of_error == "json_invalid":
        return "is not JSON", "type"
    if kind_of_error == "value_error" and "error" in ctx:
        # Our own validators' messages (shared.jobs.inputs): they never quote the value.
        return refused(field, str(ctx["error"])).what, "invalid"
    return "is not valid", "invalid"


def problems_of(errors: Iterable[Mapping[str, Any]], kinds: Sequence[str]) -> list[Problem]:
    """The problems of pydantic validation errors of a request body, in plain words.

    Args:
        errors: ``ValidationError.errors()`` of the request union (FastAPI's prefix their
            ``loc`` with ``"body"``); a field's ``loc`` is ``(kind, field)``.
        kinds: the job kinds, for the reason of an unknown ``kind``.
    """
    found: list[Problem] = []
    for error in errors:
        loc = [part for part in error.get("loc", ()) if part != "body"]
        kind: str | None = None
        if loc and isinstance(loc[0], str) and loc[0] in kinds:
            kind, loc = loc[0], loc[1:]
        type_ = str(error.get("type", ""))
        if type_.startswith("union_tag") or type_ == "literal_error":
            field = "kind"
        elif type_ == "json_invalid" or not loc:
            field = "request"
        else:
            field = ".".join(str(part) for part in loc)
        what, word = _words(error, field, kind, kinds)
        problem = Problem(field, what, word)
        if problem not in found:
            found.append(problem)
    return found

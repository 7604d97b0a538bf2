"""Error types. Each carries the context a plant engineer needs to fix the cause."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class EtlError(Exception):
    """Base of every error the pipeline raises on purpose."""

    #: Transient errors (a database went away) are worth a retry; the others are not.
    retryable: bool = False


def display_path(path: Path) -> str:
    """A path as a user should see it in a message: relative to the working directory if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in one configuration file, located by its key path."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(EtlError):
    """The YAML or CSV under mappings/ is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class CrosswalkNotLoaded(EtlError):
    """A lookup crosswalk was used before its pairs were read from its database."""


class SchemaDriftError(EtlError):
    """A mapped column or table does not exist in the database (renamed or dropped upstream)."""


class ConnectionNotFound(EtlError):
    """A flow names a connection id that no environment variable or connections file defines."""


class FlowBusy(EtlError):
    """Another run of the same flow holds the flow's lock."""

    retryable = True


class PipelineTablesBusy(EtlError):
    """Another run is creating the pipeline's own tables on the same target at this moment."""

    retryable = True


class NotCopyable(EtlError):
    """Source text that PostgreSQL's COPY cannot carry (a NUL character): the batch is
    transformed in Python instead, which quarantines the row that holds it."""


class SourceUnavailable(EtlError):
    """The source or target database refused or dropped the connection."""

    retryable = True


class StepFailed(EtlError):
    """A run failed at a named step; wraps the cause with flow, step and run id."""

    def __init__(self, flow: str, step: str, run_id: str, cause: BaseException):
        self.flow = flow
        self.step = step
        self.run_id = run_id
        self.cause = cause
        self.retryable = getattr(cause, "retryable", False)
        super().__init__(f"flow {flow!r} failed at step {step!r} (run {run_id}): {cause}")


class ValidationFailed(EtlError):
    """A critical expectation of the flow's suite failed: the batch was not loaded."""


class ReconciliationFailed(EtlError):
    """A run's counts or the target's key checksum disagree with the source: nothing was committed."""


@dataclass(frozen=True)
class ParameterProblem:
    """One bad run parameter: its name, what was given and the form it accepts."""

    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


class TriggerParametersInvalid(EtlError):
    """A run was triggered with parameters the flow does not take (an unknown key, a bad value).
    Holds every problem, not just the first; nothing was read or written."""

    def __init__(self, flow: str, problems: list[ParameterProblem]):
        self.flow = flow
        self.problems = problems
        super().__init__(f"flow {flow!r}: bad trigger parameters: " + "; ".join(str(p) for p in problems))

"""Named domain errors. Messages carry identifiers and codes only, never personal data."""

from __future__ import annotations

from uuid import UUID


class DomainError(Exception):
    """A command was refused by a business rule. Nothing was recorded."""

    title = "Command refused"


class InvalidCode(DomainError):
    title = "Invalid code"

    def __init__(self, kind: str, code: str) -> None:
        # The refused value is not echoed: it may be a name typed where a code belongs.
        rule = (
            "an account identifier without spaces or '@'"
            if kind == "user"
            else "1-32 lowercase letters, digits, '-' or '_'"
        )
        super().__init__(f"invalid {kind} code: use {rule}")


class InvalidCommand(DomainError):
    """The command's own values do not fit together (e.g. a subtype of another type)."""

    title = "Invalid command"


class EarlierThanLastStep(InvalidCommand):
    """A command's time is before the aggregate's last recorded step: a history must not run
    backwards. Between two writers of one aggregate it means the other one was first."""

    title = "Earlier than the last recorded step"

    def __init__(self, message: str, *, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


class ImplausibleTime(InvalidCommand):
    """A date, instant or duration outside the bounds the network's policy sets: a complaint
    received centuries ago, an incident after its report, a deadline of a million days.
    Refused at the door, because every read model turns these values into structure (a due
    date, a month column) and an event, once recorded, stays in the log for good."""

    title = "Implausible time"

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field} {rule}")
        self.field = field


class ActionNotPermitted(DomainError):
    title = "Action not permitted"


class CaseClosed(DomainError):
    """Nothing happens on a closed case but reopening."""

    title = "Case is closed"

    def __init__(self, case_id: UUID) -> None:
        super().__init__(f"case {case_id} is closed; only reopening is possible")


class CaseNotClosed(DomainError):
    title = "Case is not closed"


class NotAssessed(DomainError):
    title = "Case not assessed"


class NotAnAllegation(DomainError):
    """No investigation referral before the case is assessed as an SEA allegation."""

    title = "Not assessed as an SEA allegation"


class AssessmentLocked(DomainError):
    title = "Assessment can no longer change"


class WrongInvestigatingEntity(DomainError):
    """The referral must go to the implicated agency's investigating entity."""

    title = "Wrong investigating entity"


class AlreadyReferredForInvestigation(DomainError):
    title = "Already referred for investigation"


class NotReferredForInvestigation(DomainError):
    title = "Not referred for investigation"


class AlreadyAcknowledged(DomainError):
    title = "Already acknowledged"


class OutcomeAlreadyRecorded(DomainError):
    title = "Outcome already recorded"


class AssistanceNotConsented(DomainError):
    """No assistance referral without the survivor's assistance consent."""

    title = "No consent to assistance referral"


class IdentityDisclosureNotConsented(DomainError):
    """Identity goes to investigators (or another agency) only with disclosure consent."""

    title = "No consent to identity disclosure"


class ContactNotConsented(DomainError):
    title = "No consent to be contacted"


class ConsentNotGiven(DomainError):
    title = "No such consent to withdraw"


class OutcomeRequiredForClosure(DomainError):
    """An SEA case closes only with an investigation outcome or a recorded reason."""

    title = "Outcome or reason required to close"


class FeedbackRequiredForClosure(DomainError):
    """An SEA case closes only with feedback given or a recorded reason why not."""

    title = "Feedback or reason required to close"


class InvalidDuplicate(DomainError):
    title = "Invalid duplicate link"


class SameAgency(DomainError):
    title = "Transfer to the same agency"


class UnknownAgency(DomainError):
    title = "Unknown agency"

    def __init__(self, agency: str) -> None:
        super().__init__(f"agency {agency!r} is not registered in the network")


class AgencyAlreadyRegistered(DomainError):
    title = "Agency already registered"


class MalformedShareKey(InvalidCommand):
    """An agency's share key must be an X25519 public key: standard base64 of 32 bytes, not
    a point of small order (the secret of a box sealed to it would be predictable, and
    libsodium refuses to seal to one)."""

    title = "Malformed share key"


class UnknownServiceProvider(DomainError):
    title = "Unknown service provider"


class ServiceProviderAlreadyRegistered(DomainError):
    title = "Service provider already registered"


class ServiceNotOffered(DomainError):
    title = "Service not offered by provider"


class NoInvestigatingEntity(DomainError):
    title = "Agency has no investigating entity"


class NotAFocalPoint(DomainError):
    title = "Not a focal point of the agency"


class InvalidReferralTransition(DomainError):
    title = "Referral status cannot change this way"


class ResponseRequired(DomainError):
    title = "Feedback needs a response first"


class FeedbackLoopClosed(DomainError):
    title = "Feedback loop already closed"


class RetentionNotDue(DomainError):
    """Network policy keeps this record's personal data longer."""

    title = "Retention period not over"


class NotFound(DomainError):
    """No such case, referral or feedback item (or not visible to the caller)."""

    title = "Not found"


class VersionConflict(DomainError):
    """The aggregate changed since the caller read it: nothing was recorded."""

    title = "Version conflict"

    def __init__(self, aggregate_id: UUID, expected: int, current: int) -> None:
        super().__init__(
            f"{aggregate_id} is at version {current}, not the expected version {expected}; "
            "reload it and decide again"
        )
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.current = current


class AlreadyOpen(DomainError):
    """A record that exists once (the work plan of a year) is opened a second time."""

    title = "Already open"

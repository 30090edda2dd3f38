"""The prevention work's commands (issue #22): trainings, awareness, focal-point readiness,
risk assessments, the work plan and the prevention policy.

A mixin of ``ComplaintMechanism``: the same store, the same transaction rules. Most commands
are declarations (``services.application.commands``); opening a record, and the readiness
record an agency gets on first use, are written out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING

from domain.actors import Actor
from domain.errors import NotFound
from domain.network import Network
from domain.prevention import (
    PREVENTION_POLICY_ID,
    AwarenessActivity,
    FocalPointReadiness,
    PreventionPolicy,
    PreventionSettings,
    RiskAssessment,
    TrainingSession,
    TrainingTarget,
    WorkPlan,
    readiness_id,
    work_plan_id,
)
from domain.vocabulary import (
    Sector,
)
from services.application.commands import (
    DecisionConsulting,
    NetworkOpening,
    Target,
    Written,
    expecting,
)
from services.application.store import StoredApplication

if TYPE_CHECKING:
    from services.application.mechanism import ComplaintMechanism


def _network(app: ComplaintMechanism, _: object) -> Network:
    return app.network()


class PreventionWork(StoredApplication):
    """The prevention commands of ``ComplaintMechanism``."""

    def network(self) -> Network:
        """The network's policy and registry (``ComplaintMechanism`` keeps it cached)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ policy

    def prevention_policy(self) -> PreventionPolicy | None:
        """The prevention policy as set, or None while the defaults apply."""
        try:
            return self._load(PreventionPolicy, PREVENTION_POLICY_ID)
        except NotFound:
            return None

    def prevention_settings(self) -> PreventionSettings:
        return PreventionSettings.of(self.prevention_policy())

    def set_prevention_policy(
        self,
        *,
        actor: Actor,
        refresher_every_days: int,
        risk_factors: tuple[str, ...],
        training_targets: tuple[TrainingTarget, ...],
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        """Set (or replace) the network's prevention policy."""
        current = self.prevention_policy()
        if current is None:
            return self._commit(
                PreventionPolicy.set(
                    self.network(),
                    actor=actor,
                    refresher_every_days=refresher_every_days,
                    risk_factors=risk_factors,
                    training_targets=training_targets,
                    at=at,
                )
            )
        target = expecting(PREVENTION_POLICY_ID, expected_version)
        network = self.network()
        return self.decide_on(
            PreventionPolicy,
            target,
            lambda policy: policy.change(
                network,
                actor=actor,
                refresher_every_days=refresher_every_days,
                risk_factors=risk_factors,
                training_targets=training_targets,
                at=at,
            ),
        )

    # ------------------------------------------------------------------ trainings

    record_training = NetworkOpening(TrainingSession.record)
    withdraw_training = DecisionConsulting(
        TrainingSession, TrainingSession.withdraw, consults=_network
    )

    # ------------------------------------------------------------------ awareness

    record_awareness = NetworkOpening(AwarenessActivity.record)
    withdraw_awareness = DecisionConsulting(
        AwarenessActivity, AwarenessActivity.withdraw, consults=_network
    )

    # ------------------------------------------------------------------ readiness

    def _on_readiness(
        self,
        agency: str,
        actor: Actor,
        at: datetime,
        decide: Callable[[FocalPointReadiness, Network], object],
    ) -> Written:
        """``decide`` on ``agency``'s readiness record, opened in the same transaction the
        first time."""
        network = self.network()
        try:
            readiness = self._load(FocalPointReadiness, readiness_id(agency))
        except NotFound:
            readiness = FocalPointReadiness.open(network, actor=actor, agency=agency, at=at)
        decide(readiness, network)
        return self._commit(readiness)

    def appoint_alternate(self, *, actor: Actor, agency: str, user: str, at: datetime) -> Written:
        return self._on_readiness(
            agency,
            actor,
            at,
            lambda r, n: r.appoint_alternate(n, actor=actor, user=user, at=at),
        )

    def withdraw_alternate(self, *, actor: Actor, agency: str, user: str, at: datetime) -> Written:
        return self._on_readiness(
            agency,
            actor,
            at,
            lambda r, n: r.withdraw_alternate(n, actor=actor, user=user, at=at),
        )

    def record_focal_point_training(
        self,
        *,
        actor: Actor,
        agency: str,
        user: str,
        completed_on: date,
        at: datetime,
    ) -> Written:
        return self._on_readiness(
            agency,
            actor,
            at,
            lambda r, n: r.record_training(
                n, actor=actor, user=user, completed_on=completed_on, at=at
            ),
        )

    # ------------------------------------------------------------------ risk

    def assess_risk(
        self,
        *,
        actor: Actor,
        agency: str,
        area: str,
        sector: Sector,
        assessed_on: date,
        ratings: Mapping[str, int],
        at: datetime,
    ) -> Written:
        return self._commit(
            RiskAssessment.assess(
                self.network(),
                PreventionWork.prevention_settings(self),
                actor=actor,
                agency=agency,
                area=area,
                sector=sector,
                assessed_on=assessed_on,
                ratings=ratings,
                at=at,
            )
        )

    def reassess_risk(
        self,
        target: Target,
        /,
        *,
        actor: Actor,
        assessed_on: date,
        ratings: Mapping[str, int],
        at: datetime,
    ) -> Written:
        network = self.network()
        settings = PreventionWork.prevention_settings(self)
        return self.decide_on(
            RiskAssessment,
            target,
            lambda assessment: assessment.reassess(
                network, settings, actor=actor, assessed_on=assessed_on, ratings=ratings, at=at
            ),
        )

    agree_mitigation = DecisionConsulting(
        RiskAssessment, RiskAssessment.agree_mitigation, consults=_network
    )
    report_mitigation = DecisionConsulting(
        RiskAssessment, RiskAssessment.report_mitigation, consults=_network
    )

    # ------------------------------------------------------------------ work plan

    def open_work_plan(self, *, actor: Actor, year: int, at: datetime) -> Written:
        exists = self._current_version(work_plan_id(year)) > 0
        return self._commit(WorkPlan.open(actor=actor, year=year, at=at, exists=exists))

    plan_activity = DecisionConsulting(WorkPlan, WorkPlan.plan_activity, consults=_network)
    report_work_plan_progress = DecisionConsulting(
        WorkPlan, WorkPlan.report_progress, consults=_network
    )

    def work_plan(self, year: int) -> WorkPlan:
        return self._load(WorkPlan, work_plan_id(year))

"""The prevention read model (issue #22): training compliance, focal points' refreshers,
awareness coverage, risk by area and sector, and the work plan, folded from contract
messages. See ``projections.prevention.view``."""

from projections.prevention.view import PreventionView

__all__ = ["PreventionView"]

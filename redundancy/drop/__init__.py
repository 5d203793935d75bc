"""Drop selection (plans, iterative orders) and dropped checkpoints that load anywhere."""
from ._iterative import iterative_order
from ._materialize import check_plan, checkpoint_config, load_any, load_dropped, materialize
from ._plan import PLAN_KINDS, DropPlan, PlanKind

__all__ = ["iterative_order", "DropPlan", "materialize", "check_plan", "checkpoint_config", "load_dropped",
           "load_any", "PLAN_KINDS", "PlanKind"]

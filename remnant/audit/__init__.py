"""The audit: every stage on every audited model, a verdict per model, results.json and the
HTML report (`audit`); the demo on an embedded model (`demo`); configs (`load_config`)."""

from remnant.audit.config import AuditConfig, ConfigError, load_config
from remnant.audit.demo import demo
from remnant.audit.run import RESULTS_FILE, audit, load_results, render_report
from remnant.audit.stages import STAGES
from remnant.audit.verdict import RULES, verdicts

__all__ = [
    "RESULTS_FILE",
    "RULES",
    "STAGES",
    "AuditConfig",
    "ConfigError",
    "audit",
    "demo",
    "load_config",
    "load_results",
    "render_report",
    "verdicts",
]

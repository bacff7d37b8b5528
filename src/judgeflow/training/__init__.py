"""Training: DPO (TRL under accelerate), its diagnostics, and the evaluation of trained policies."""

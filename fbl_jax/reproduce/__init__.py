"""fbl-reproduce: the paper's tables from one command (plan, stages, report, packed data)."""

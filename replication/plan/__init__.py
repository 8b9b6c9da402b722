"""Planning the study: the resolved config, its schema, the variants, the job grid, the budget ledger, costs."""

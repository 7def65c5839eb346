"""Budget allocation over channels with OR-Tools, and the budget workflow's activities."""

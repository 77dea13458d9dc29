"""compress sweep: many recipe runs over a parameter space, on Ray, and their Pareto set."""

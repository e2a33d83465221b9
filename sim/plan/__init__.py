"""The planner: a plan file's candidate space, the closed-form screen, simulation of the survivors, the law applied to each, and the ranked decision."""

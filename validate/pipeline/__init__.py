"""The real asynchronous pipeline on Ray (coordinator, engines, learner), its logs, and its replay in the simulator."""

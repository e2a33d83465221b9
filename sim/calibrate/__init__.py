"""Calibration of a scenario from measurements: the shared timing tables (``timings``) and a trainer's per-step logs (``logs``, read by ``trainer_logs``)."""

"""Generic pipeline stages: prepare → upload → submit → poll, or → train; → finalize → evaluate.

Each stage loads the job, returns quietly when the job is no longer in the stage it serves (a
duplicate delivery, or a cancel), asks the job's backend for whatever differs between backends,
and hands the next task's name back to its caller. No stage asks which provider a job has.
"""

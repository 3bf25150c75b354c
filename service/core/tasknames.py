"""Celery task names, the one list both the enqueuing core and the registering workers use."""

PREPARE_FILE = "tuneline.datasets.prepare_file"
PREPARE_SCAN = "tuneline.datasets.scan"  # the preparation watchdog: files whose task was lost
JOB_PREPARE = "tuneline.jobs.prepare"
JOB_UPLOAD = "tuneline.provider.upload"
JOB_SUBMIT = "tuneline.provider.create_job"
JOB_POLL = "tuneline.provider.poll"
JOB_POLL_BATCH = "tuneline.provider.poll_batch"  # due jobs, many at once (one account list)
JOB_FINALIZE = "tuneline.provider.finalize"
JOB_CANCEL = "tuneline.provider.cancel"
JOB_EVALUATE = "tuneline.jobs.evaluate"
POLL_SCAN = "tuneline.poll.scan"
WEBHOOK_DELIVER = "tuneline.webhooks.deliver"
WEBHOOK_SCAN = "tuneline.webhooks.scan"
SWEEP = "tuneline.maintenance.sweep"
TRAIN_RUN = "tuneline.train.run"
TRAIN_REAP = "tuneline.train.reap"
INFER_COMPLETE = "tuneline.infer.complete"
INFER_SCORE = "tuneline.infer.score"  # log-probabilities of given replies (preference evaluation)
IMPORT_RUN = "tuneline.imports.run"
IMPORT_DISTILL = "tuneline.imports.distill"
INFER_EXPORT = "tuneline.infer.export"

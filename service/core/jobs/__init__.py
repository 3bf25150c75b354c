"""Fine-tuning jobs: the record, the state machine, and the use cases of the pipeline."""

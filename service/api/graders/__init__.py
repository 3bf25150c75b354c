"""``/v1/fine_tuning/alpha/graders``: OpenAI's routes to check a grader and try it on one sample."""

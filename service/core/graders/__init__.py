"""OpenAI's graders (string_check, text_similarity, multi, python, score_model, label_model), run locally.

``spec.parse`` reads and checks a grader's JSON; ``run.grade`` scores one sample with it (the
reward a trainer uses); ``run.run`` answers OpenAI's ``graders/run`` route.
"""

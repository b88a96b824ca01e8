"""The course's logic: progress and grading, the learner's sandbox, predict then observe."""

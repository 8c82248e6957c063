"""A conversation the fine-tuning data tests share (unit and integration tiers): two
answered questions after a system turn."""

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "Six, of course."},
]

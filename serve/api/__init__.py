"""The OpenAI-compatible API of a replica, with no Ray import (tests/unit/test_layout.py):
request and response shapes (protocol.py, responses.py), a serving class per endpoint
(serving_completion.py, serving_chat.py, serving_tokenizer.py, over serving_engine.py and
generation.py), admission, and the thin FastAPI router (router.py) with its error contract
(errors.py). The Serve deployment that mounts it is serve/deployment.py."""

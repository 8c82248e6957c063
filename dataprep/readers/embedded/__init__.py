"""The embedded sets of the translation and summarization recipes (conf/sft/): pairs read
from files that ship with Python or with a pinned package, nothing downloaded."""

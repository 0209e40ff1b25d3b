"""lowres: few-shot cross-lingual transfer with soft prompts, injection and alignment."""

__version__ = "0.1.0"

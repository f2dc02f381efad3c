"""Task adapters: observations -> prompt (via magma.prompts), model text -> typed actions
(via magma.codecs / ActionTokenizer). Parse failures are returned as typed errors."""
